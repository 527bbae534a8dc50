"""Things computed once and shared by every process that needs them (a study's GANs and teachers, the
distillation banks): read what is stored, else build it under the folder's lock, and while another
process holds that lock (it is building the same thing), wait for it and read its result instead of
computing everything twice. The GAN store did this alone; the distillation bank cache had no lock, and
two --jobs workers that reached one bank together both built it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pasture.core.errors import FolderBusy, UserError
from pasture.core.locks import folder_lock

T = TypeVar("T")
POLL_SECONDS = 0.5


def build_once(
    folder: Path, read: Callable[[], T | None], build: Callable[[], T], what: str, poll: float = POLL_SECONDS
) -> T:
    """`read()` when it finds the thing stored in `folder`; else `build()` (which stores it) under the
    folder's lock, or, while another process holds that lock, wait and `read()` again. An unwritable
    store only costs time: the thing is built without a lock."""
    while True:
        found = read()
        if found is not None:
            return found
        with contextlib.ExitStack() as held:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                held.enter_context(folder_lock(folder, what))
            except FolderBusy:
                time.sleep(poll)
                continue
            except (OSError, UserError):  # an unwritable store: no lock to take, nothing to share
                return build()
            found = read()  # finished by the process that held the lock
            return found if found is not None else build()
