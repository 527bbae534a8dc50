"""The doctor's optional libraries (the extra .[doctor]): checked once, with one message if missing."""

from __future__ import annotations

from pasture.core import extras

# module name -> PyPI name
NEEDED = {"imagehash": "imagehash", "sklearn": "scikit-learn", "cleanlab": "cleanlab"}


def require_extra() -> None:
    extras.require_extra("doctor", "pasture doctor", NEEDED)
