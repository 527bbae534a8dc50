"""The one exception type that means "the user asked for something we cannot do".

The CLI prints a UserError as a single line and exits with code 2; anything else is a bug and keeps
its traceback. Lives at the bottom of the import graph so every module may raise it.
"""


class UserError(Exception):
    """Bad input or options: the message names the file or option and says what to do."""


class FolderBusy(UserError):
    """Another live pasture process holds the folder's lock (a caller that can wait may catch this)."""


class Interrupted(Exception):
    """Work was stopped by the user (Ctrl-C) after its last checkpoint was saved."""
