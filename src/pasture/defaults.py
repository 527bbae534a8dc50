"""Defaults and the warning printer shared by the API and the CLI.

Torch-free on purpose: the CLI reads these to build its --help, which must start without torch.
"""

from __future__ import annotations

import sys
from typing import Callable

DEFAULT_MIN_IMAGE_SIZE = 16  # px; smaller files are skipped as unusable (or an error with --strict)
DEFAULT_TEST_FRACTION = 0.5  # the report's 41 train / 41 test
DEFAULT_RECIPE = "default"

Warn = Callable[[str], None]


def cache_root():
    """Where pasture keeps caches (decoded images, backbone features): $PASTURE_CACHE_DIR, else
    ~/.cache/pasture. Everything there is keyed by content and can be deleted at any time."""
    import os
    from pathlib import Path

    return Path(os.environ.get("PASTURE_CACHE_DIR") or Path.home() / ".cache" / "pasture")


def cache_enabled() -> bool:
    import os

    return os.environ.get("PASTURE_NO_CACHE", "") in ("", "0")


def warn_to_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
