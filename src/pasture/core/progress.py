"""Bars for the work a command does before its first line of results (reading photos, computing
features): minutes of silence on a loaded machine before (issue 42). Torch-free, so the CLI can turn
them on before any heavy import; it does unless --quiet. The app and notebooks calling the API see none
unless they ask (showing_progress). Jobs smaller than PROGRESS_FROM photos show none.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from contextvars import ContextVar

from tqdm import tqdm

PROGRESS_FROM = 32  # photos: 2 s of the default backbone on 2 cores (0.07 s a photo)
_SHOW_PROGRESS: ContextVar[bool] = ContextVar("pasture_show_progress", default=False)


@contextmanager
def showing_progress(on: bool = True):
    """Within the block, work_bar shows its bars (on stderr)."""
    token = _SHOW_PROGRESS.set(on)
    try:
        yield
    finally:
        _SHOW_PROGRESS.reset(token)


def work_bar(total: int, desc: str, unit: str = "photo") -> tqdm:
    """A tqdm bar on stderr for `total` items of work, shown inside showing_progress() when there are at
    least PROGRESS_FROM of them."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not (_SHOW_PROGRESS.get() and total >= PROGRESS_FROM),
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )
