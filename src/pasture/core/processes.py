"""Whether a process is alive: what tells pasture's own leftovers (a killed process's staging folders
and temporary files, named with its pid) from a live process's work in progress. Torch-free."""

from __future__ import annotations

import os


def process_alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
