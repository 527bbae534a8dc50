"""Names from outside (folders, config files, uploads) turned into paths and printed text, safely.

Run folders and GAN folders travel between people, so a class name read from one is untrusted: it
must never steer a write outside the output folder, and a file name must never break a line of output.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pasture.core.errors import UserError, write_failed
from pasture.core.processes import process_alive


def display_name(path: str | os.PathLike) -> str:
    """A file name safe to write as UTF-8: bytes that are not valid UTF-8 (names from old disks and
    USB sticks) appear as backslash escapes (\\xff) instead of raising UnicodeEncodeError."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def printable_name(path: str | os.PathLike) -> str:
    """display_name with control characters escaped too (a newline in a file name would split a line
    of text output in two): one name, one line."""
    text = display_name(path)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def path_part_problem(name: object) -> str | None:
    """Why `name` cannot be one part of a path (a folder or file name), or None when it can."""
    if not isinstance(name, str) or not name:
        return "is empty or not text"
    if "\0" in name:
        return "holds a NUL character"
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        return "holds a path separator"
    if set(name) == {"."}:
        return "is only dots"
    if not name.isprintable():
        return "holds a control character"
    if display_name(name) != name:
        return "is not valid UTF-8"
    return None


def safe_path_part(name: object, what: str) -> str:
    """`name` when it can be used as one path part under an output folder; else a UserError that
    starts with `what` (e.g. "GAN_DIR/config.json: class name '../x'")."""
    problem = path_part_problem(name)
    if problem is not None:
        raise UserError(f"{what} '{printable_name(str(name))}' {problem}; it cannot name a folder or file")
    return str(name)


def ensure_under(path: Path, root: Path) -> Path:
    """`path`, after checking that it lands inside `root` (symbolic links and '..' resolved)."""
    resolved, top = Path(path).resolve(), Path(root).resolve()
    if resolved != top and top not in resolved.parents:
        raise UserError(f"{printable_name(path)}: would be written outside {printable_name(root)}; refused")
    return path


def check_outside(out: str | os.PathLike | None, inputs, option: str = "--out") -> None:
    """Refuse an output folder or file inside an input folder (resolved paths, so links and '..' count):
    pasture's own files there (PNG figures, runs) would be read as photos by the next command on that data
    (`train cf --out cf/myrun`, then `train cf` trained a third class, "myrun", from pasture's figures)."""
    if out is None:
        return
    target = Path(out).resolve()
    for given in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        folder = Path(given).resolve()
        if folder.is_dir() and (target == folder or folder in target.parents):
            raise UserError(
                f"{option} {printable_name(out)}: inside the data folder {printable_name(given)}, where "
                "pasture's own files would be read as photos next time; choose a place outside it"
            )


def check_output_file(out: str | os.PathLike, option: str) -> Path:
    """A file pasture will write with `option` (--csv, --out), checked before any work: not a folder,
    its folder exists and can be written. The errors name the user's path, never a temporary file."""
    out = Path(out)
    if out.is_dir():
        raise UserError(
            f"{option} {printable_name(out)}: is a folder; give a file name in it, such as "
            f"{printable_name(out / ('predictions.csv' if option == '--csv' else 'model.onnx'))}"
        )
    _check_parent(out, option, replaced_needs=os.W_OK)
    return out


def check_output_package(out: str | os.PathLike, option: str, made_of: frozenset[str], what: str) -> Path:
    """A folder pasture writes whole (an OpenVINO IR folder, a Core ML package), checked before any work
    as check_output_file checks a file: not a file, and its folder exists and can be written.

    An existing folder is replaced only when it is one pasture wrote: a real folder (not a symbolic link)
    holding nothing but `made_of` (what pasture puts in such a package). A folder of the user's files, a
    run folder, a link: a UserError, and nothing is touched (issue 40: `--out X.mlpackage` once deleted
    whatever folder stood at X)."""
    out = Path(out)
    if out.is_symlink():
        raise UserError(
            f"{option} {printable_name(out)}: is a symbolic link; pasture replaces only a {what} it wrote there. "
            "Give a new name"
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {printable_name(out)}: is a file; give a folder (a name without a file in it)")
    if out.is_dir():
        others = sorted(entry.name for entry in out.iterdir() if entry.name not in made_of)
        if others:
            shown = ", ".join(printable_name(name) for name in others[:3]) + (", ..." if len(others) > 3 else "")
            raise UserError(
                f"{option} {printable_name(out)}: a folder that is not a {what} pasture wrote (it holds {shown}); "
                "pasture replaces only its own. Give a new name"
            )
    _check_parent(out, option, replaced_needs=os.W_OK | os.X_OK)
    return out


def replace_package(staged: Path, target: Path, made_of: frozenset[str], what: str) -> None:
    """Move the finished folder `staged` to `target` (same file system), replacing an earlier one only
    when it is still one pasture wrote (checked again: it may have changed while the export ran)."""
    if not (target.exists() or target.is_symlink()):
        os.replace(staged, target)
        return
    check_output_package(target, "--out", made_of, what)
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staging_folder(parent: Path, kind: str):
    """A temporary folder in `parent` for work that moves into place when done, named
    .<kind>-<pid>-<random> and removed on the way out; folders of that kind left by a killed process
    (kill -9 skips every cleanup) are removed first, when their process is gone (issue 40)."""
    for leftover in parent.glob(f".{kind}-*-*"):
        pid = leftover.name[len(kind) + 2 :].split("-", 1)[0]
        if leftover.is_dir() and not leftover.is_symlink() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{kind}-{os.getpid()}-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# The files that mark a folder as pasture's output, and what wrote it: such a folder inside DATA is not a
# class of photos (issue 40: `explain --out DATA/why` made the next `train DATA` learn a class "why").
PASTURE_MADE = {
    "config.json": "a run, a GAN or a study",
    "explanations.json": "explanations from `pasture explain`",
    "evaluation.json": "an evaluation from `pasture evaluate --out`",
    "doctor.json": "a report from `pasture doctor`",
    "synth.json": "samples from `pasture gan sample`",
    "model.xml": "an OpenVINO export",
    "Manifest.json": "a Core ML export",
}


def pasture_made(folder: Path) -> str | None:
    """What pasture wrote `folder` as (PASTURE_MADE), or None when it holds none of pasture's marks."""
    for name, what in PASTURE_MADE.items():
        if (folder / name).is_file():
            return what
    return None


def _check_parent(out: Path, option: str, replaced_needs: int) -> None:
    """`out`'s folder exists and can be written, and `out` itself, where it exists, allows `replaced_needs`."""
    parent = out.parent
    if not parent.is_dir():
        raise UserError(
            f"{option} {printable_name(out)}: the folder {printable_name(parent)} does not exist; "
            "create it or choose another place"
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, replaced_needs)):
        raise UserError(f"{option} {printable_name(out)}: cannot write there (permission denied); choose another place")


# mkstemp's names for an atomic write: "." + target + "." + 8 random characters + ".tmp" (core.runs);
# a user's own hidden file is not one
TEMP_NAME = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$")


def class_names_problem(classes: object) -> str | None:
    """Why `classes` (read from a run, GAN or synthetic folder) cannot be a model's class list, or None.
    Class names become folder names (gan sample) and labels on screen, so each must be a safe path part."""
    if not isinstance(classes, list) or len(classes) < 2:
        return "classes: needs a list of at least two class names"
    for name in classes:
        problem = path_part_problem(name)
        if problem is not None:
            return f"class name '{printable_name(str(name))}' {problem}"
    if len(set(classes)) != len(classes):
        return "classes: a class is named twice"
    return None


def _umask() -> int:
    """The process's umask (read by setting and restoring it: there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """Permissions of a file the user creates: 0o666 less the umask (mkstemp alone gives 0o600, so
    reports and runs could not be shared)."""
    return 0o666 & ~_umask()


def new_folder_mode() -> int:
    return 0o777 & ~_umask()


TEMP_SUFFIX = ".tmp"  # atomic writes go through ".<name>.<random>.tmp" in the target's folder


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as temp:
            os.fchmod(temp.fileno(), new_file_mode())
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException as error:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        failed = write_failed(error, path) if isinstance(error, OSError) else None
        if failed is not None:  # a full disk, a read-only folder: said with the file it hit
            raise failed from None
        raise
