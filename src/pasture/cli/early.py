"""The checks of paths a command can make before it imports torch: a typo answers in a fraction of a
second, not after the heavy imports (6 s quiet, 33-39 s on a loaded machine: issue 42). Each is the same
one line a later check would print; what needs torch or the photos' pixels is still checked later.

A table (command -> which of its arguments must be what), as the commands' flags are: data, not code.
"""

from __future__ import annotations

from pathlib import Path

from pasture.core.errors import UserError
from pasture.core.paths import printable_name

# What an argument must be: a folder of photos, a finished run folder (or an exported file for predict),
# a finished run folder only, photos (files or folders) to label.
FOLDER, RUN_OR_EXPORT, RUN, PHOTOS = "folder", "run or export", "run", "photos"


def exported_suffixes() -> tuple[str, ...]:
    """The exported files predict runs with their own runtime (imported here, not at start-up: numpy)."""
    from pasture.classify.predictions import EXPORTED_SUFFIXES

    return EXPORTED_SUFFIXES


CHECKS = {
    "train": {"data": FOLDER, "synthetic": FOLDER, "teacher": RUN, "unlabeled": FOLDER},
    "evaluate": {"run": RUN, "data": FOLDER, "others": FOLDER},
    "predict": {"run": RUN_OR_EXPORT, "paths": PHOTOS},
    "explain": {"run": RUN, "paths": PHOTOS},
    "export": {"run": RUN},
    "doctor": {"data": FOLDER},
    "adapt": {"run": RUN, "photos": FOLDER},
    "ask": {"run": RUN, "photos": FOLDER},
}


def _folder(path: Path, option: str) -> None:
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "no such folder"
        raise UserError(f"{option}{printable_name(path)}: {what}; give a folder of photos (DATA/<class>/*.jpg)")


def _run(path: Path, option: str) -> None:
    if not (path / "config.json").is_file():
        raise UserError(
            f"{option}{printable_name(path)}: not a pasture run folder (no config.json); give the --out of a `pasture train`"
        )
    if not (path / "metrics.json").is_file():
        raise UserError(
            f"{option}{printable_name(path)}: this run has not finished; continue it with `pasture train ... --resume`"
        )


def _photos(paths: list[str]) -> None:
    """Each given path exists, and a given file is an image Pillow can identify (its header only)."""
    from PIL import Image, UnidentifiedImageError

    for given in paths:
        path = Path(given)
        if path.is_dir():
            continue
        if not path.is_file():
            raise UserError(f"{printable_name(path)}: no such file or folder")
        try:
            with Image.open(path):
                pass
        except UnidentifiedImageError:
            raise UserError(f"{printable_name(path)}: is not an image Pillow can read; give image files only") from None
        except OSError as error:
            raise UserError(f"{printable_name(path)}: could not be read ({error.strerror or error})") from None


def check_early(args) -> None:
    """The path checks of `args.command` (CHECKS) that need no torch; a UserError on the first that fails."""
    for name, kind in CHECKS.get(args.command, {}).items():
        value = getattr(args, name, None)
        if value is None:
            continue
        option = "" if name in ("data", "run", "paths", "photos") else f"--{name} "
        if kind == FOLDER:
            _folder(Path(value), option)
        elif kind == RUN_OR_EXPORT and str(value).endswith(exported_suffixes()):
            if not Path(value).is_file():
                from pasture.classify.predictions import missing_export

                raise missing_export(value)
        elif kind in (RUN, RUN_OR_EXPORT):
            _run(Path(value), option)
        elif kind == PHOTOS:
            _photos(value)
