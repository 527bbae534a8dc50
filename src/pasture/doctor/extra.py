"""The doctor's optional libraries (the extra .[doctor]): checked once, with one message if missing."""

from __future__ import annotations

import importlib.util

from pasture.core.errors import UserError

# module name -> PyPI name
NEEDED = {"imagehash": "imagehash", "sklearn": "scikit-learn", "cleanlab": "cleanlab"}


def require_extra() -> None:
    missing = [package for module, package in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(f"pasture doctor needs {', '.join(missing)}: pip install -e \".[doctor]\"")
