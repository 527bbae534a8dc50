"""Folder locks: one pasture process writes a folder at a time (an flock the kernel releases when its
process ends, killed too, so no stale lock), readers share one; and a folder created, locked and
removed again when the work fails before anything was written in it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pasture.core.errors import FolderBusy, UserError
from pasture.core.paths import new_file_mode

LOCK_NAME = ".pasture.lock"  # held (with the owner's pid) while a process writes into a folder


@contextlib.contextmanager
def folder_lock(folder: Path, what: str, shared: bool = False):
    """Hold `folder`/.pasture.lock while pasture writes into it, so a second process on the same folder
    stops with a message (FolderBusy) instead of computing everything twice or deleting the first one's
    files. The lock is an flock on the file, taken in one atomic step and released by the kernel when
    its process ends (killed too), so there is no stale lock to guess at; the file holds the owner's pid
    only to name it in messages. Two threads of one process exclude each other too.

    `shared`: a reader's lock (an export reads the run and adds a file beside it): any number of readers
    at once, none while a writer (train, delete) holds it, and no writer while one reads. A reader leaves
    the file in place (another reader may hold it) and does not write its pid."""
    lock = Path(folder) / LOCK_NAME
    while True:
        try:
            handle = os.open(lock, os.O_CREAT | os.O_RDWR, new_file_mode())
        except OSError as error:  # a read-only or vanished folder: said before any work
            raise UserError(f"{folder}: cannot write here ({error.strerror}); choose another --out") from None
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _pid_in(handle)
            os.close(handle)
            holder = f"another pasture process (pid {owner})" if owner else "another pasture process"
            doing = "writing" if shared or owner else "reading"  # a reader leaves no pid
            raise FolderBusy(
                f"{folder}: {holder} is {doing} this {what}; wait for it to finish, or stop it first"
            ) from None
        # The previous holder may have removed the file between our open and our flock: then we hold a
        # lock on a file nobody else can see, so open the path again.
        try:
            current = os.stat(lock).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(handle)
    try:
        if not shared:
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
        yield
    finally:
        if not shared:
            lock.unlink(missing_ok=True)  # while still held: a process that opened it meanwhile sees it gone
        os.close(handle)


@contextlib.contextmanager
def locked_folder(folder: Path, what: str):
    """Create `folder` if needed and hold its lock (folder_lock) for the block: every check and change
    of a folder pasture writes happens inside, so a second command on a folder a live process holds
    touches nothing (before, `--force` deleted the live run's files and only then found the lock). A
    folder this call created is removed again if the block fails while it is still empty."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; choose another --out")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{folder}: cannot write here ({error.strerror}); choose another --out") from None
    try:
        with folder_lock(folder, what):
            yield folder
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def lock_holder(folder: Path) -> int | None:
    """The pid of the live process that holds `folder`'s lock (0 when it holds it but its pid is not
    written yet), or None when nobody does."""
    try:
        handle = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(handle) or 0
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None
    finally:
        os.close(handle)


def _pid_in(handle: int) -> int | None:
    try:
        return int(os.pread(handle, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
