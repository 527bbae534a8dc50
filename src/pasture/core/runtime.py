"""What every training loop shares about the process: seeding, progress bars and malloc.

Seeding: `seed_everything(seed)` seeds Python, NumPy and torch's global RNG and returns a separate
generator for data order and augmentation, whose state a checkpoint saves on its own.

Malloc: process-level settings that make small-model CPU training faster without changing any number.

glibc's malloc serves large blocks (above its mmap threshold, 128 KiB at start and raised as blocks
are freed) with fresh pages from the kernel, and gives memory freed at the top of its heap back to
the kernel above its trim threshold. A training step of a small CNN allocates and frees the same
MiB-sized tensors every step (the FC weight gradient, max-pool gradients, augmented batches), so by
default the kernel maps and zero-fills them again, step after step: for paper-cnn at 64 px, batch
16, that was 270 to 1,500 page faults per step and 5-15% of the epoch (the FC weight-gradient
matmul alone took 1.1 ms instead of 0.35 ms). `keep_freed_memory()` fixes both thresholds once,
which brings it to about 10 faults per step. Peak memory is still what the live tensors need; only
memory already freed is kept for reuse instead of returned.

Opt out with the environment variable PASTURE_MALLOC_TUNING=0. Elsewhere than glibc (macOS,
Windows, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import random
import sys
import threading

import numpy as np
import torch
from tqdm import tqdm

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's own ceiling for its dynamic threshold (64-bit)
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024  # freed memory kept at the heap top before returning it

_applied: bool | None = None  # None: not tried yet; then whether the settings are in effect


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds for this process (once); True when they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("PASTURE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    return _applied


def malloc_tuning_applied() -> bool:
    """Whether keep_freed_memory() has put the settings in effect in this process."""
    return bool(_applied)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity (a container's or taskset's share), not the
    machine's count. The one count behind --jobs auto and the threads each run gets (before, one used
    torch's thread count and the other os.cpu_count(), and runs oversubscribed in containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def seed_everything(seed: int):
    """Seed Python, NumPy and torch's global RNG (dropout, init); return a torch.Generator for data
    order and augmentation, kept separate so its state can be saved and restored on its own."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress_bar(total: int, initial: int, quiet: bool, desc: str = "train", unit: str = "epoch"):
    """A tqdm bar on stderr (hidden with `quiet`) that starts at `initial` (resumed work)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


class StopRequested(KeyboardInterrupt):
    """Another thread asked this one to stop (the app's Cancel button). A KeyboardInterrupt on purpose:
    the training loops already handle Ctrl-C anywhere (the last finished epoch's checkpoint stays and
    `resume` continues from it), so a cancel takes that one tested path instead of a second one."""


_stop_request = threading.local()  # the Event that stops the training running in this thread, if any


@contextlib.contextmanager
def stoppable(event: threading.Event):
    """Within this block, `stop_point()` in this thread raises StopRequested once `event` is set."""
    previous = getattr(_stop_request, "event", None)
    _stop_request.event = event
    try:
        yield
    finally:
        _stop_request.event = previous


def stop_point() -> None:
    """Where a training loop may stop (once per step): raises StopRequested if this thread was asked to."""
    event = getattr(_stop_request, "event", None)
    if event is not None and event.is_set():
        raise StopRequested
