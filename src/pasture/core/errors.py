"""The one exception type that means "the user asked for something we cannot do".

The CLI prints a UserError as a single line and exits with code 2; anything else is a bug and keeps
its traceback. Lives at the bottom of the import graph so every module may raise it.
"""

import errno


class UserError(Exception):
    """Bad input or options: the message names the file or option and says what to do."""


class FolderBusy(UserError):
    """Another live pasture process holds the folder's lock (a caller that can wait may catch this)."""


class Interrupted(Exception):
    """Work was stopped by the user (Ctrl-C) after its last checkpoint was saved."""


# The OS errors that are the machine's state, not a bug in pasture: a full disk or quota, a file over
# the size limit, a read-only file system, a permission. Every other OSError is a bug and shows itself.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


class WriteFailed(UserError):
    """A write failed for one of MACHINE_ERRNOS; the message names the user's file and the reason."""


def write_failed(error: OSError, path) -> WriteFailed | None:
    """A WriteFailed naming `path` (the user's file, not a temporary one) for an OSError of the machine's
    state, else None (a bug: raise the original)."""
    if error.errno not in MACHINE_ERRNOS:
        return None
    return WriteFailed(f"{path}: {error.strerror or error}")
