"""Optional libraries (the extras in pyproject.toml): imported only when a feature needs them, so a
plain install stays light, and missing ones are one line that names the pip command."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from pasture.core.errors import UserError


def install_command(extra: str) -> str:
    """The pip line that installs an extra; "" is the base install (a dependency gone missing)."""
    return f'pip install -e ".[{extra}]"' if extra else "pip install -e ."


def optional_import(module: str, needed_by: str, extra: str, package: str | None = None) -> ModuleType:
    """`import module`, or UserError("<needed_by> needs <package>, which is not installed: pip install ...")."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{needed_by} needs {package or module}, which is not installed: {install_command(extra)}"
        ) from None


def require_extra(extra: str, needed_by: str, packages: dict[str, str]) -> None:
    """One UserError naming every missing package of `packages` ({module: PyPI name}) and the pip line;
    nothing is imported (find_spec only)."""
    missing = [package for module, package in packages.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(
            f"{needed_by} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {install_command(extra)}"
        )
