"""Run folders: config, history, metrics, atomic checkpoints, resume.

One place for every write of a run's files, so each of them is atomic (write a temporary file in the
same folder, then rename over the target: a crash leaves the old file or the new one, never half).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from pasture import __version__
from pasture.core.errors import Interrupted, UserError
from pasture.core.locks import LOCK_NAME, lock_holder, locked_folder
from pasture.core.paths import TEMP_NAME, TEMP_SUFFIX, atomic_write_bytes, new_file_mode  # noqa: F401  (re-exported)

# Files pasture itself writes into a run or GAN folder (glob patterns); --force removes only these,
# never a user's own files.
RUN_FILES = (
    "config.json",
    "history.jsonl",
    "metrics.json",
    "checkpoint.pt",
    "curves.png",
    "confusion.png",
    "top_losses.png",
    "MODEL_CARD.md",
    "model.onnx",
    "familiarity.pt",
    "probe.npz",
    "gan_log.jsonl",
    "gan_losses.png",
    "samples_*.png",
    "summary.json",
    "score.json",
)
DONE_MARKERS = ("metrics.json", "summary.json")  # written last by a finished classifier / GAN run


def remove_own_files(folder: Path, patterns: tuple[str, ...] = RUN_FILES) -> None:
    """pasture's own files in `folder` (glob `patterns`, by default a run's), never a user's."""
    for pattern in patterns:
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_option_json(path: str | os.PathLike, option: str, what: str):
    """A JSON file a user names with `option` (--recipe FILE.json, --space SPACE.json): missing or
    unreadable is one UserError naming the option and the file."""
    try:
        return read_json(path)
    except FileNotFoundError:
        raise UserError(f"{option} {path}: no such {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{option} {path}: not a readable {what} ({error})") from None


def read_checked_json(path: str | os.PathLike, check=None, what: str = "pasture file") -> dict:
    """The one loader of a JSON file pasture wrote and reads back (config, metrics, summaries, results):
    it must be a JSON object, and `check(data)` (the file kind's schema: returns a problem in words, or
    None) must pass. Anything else is a UserError naming the file, never a KeyError deep inside."""
    path = Path(path)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise UserError(f"{path}: missing; is this a {what}?") from None
    except (UnicodeDecodeError, ValueError):
        raise UserError(f"{path}: not valid JSON; the {what} is damaged (re-create it)") from None
    problem = "is not a JSON object" if not isinstance(data, dict) else (check(data) if check else None)
    if problem:
        raise UserError(f"{path}: {problem}; the {what} is damaged or was edited (re-create it)")
    return data


def stored_settings(config: dict, key: str, settings_type, validate):
    """(the settings dataclass a config stores under `key`, checked by `validate`, None), or (None, the
    problem in words): a Recipe or GanPreset read back from an untrusted folder."""
    if not isinstance(config.get(key), dict):
        return None, f"{key}: missing"
    try:
        settings = settings_type(**config[key])
        validate(settings)
    except (TypeError, ValueError, UserError) as error:  # unknown fields, wrong types, impossible values
        return None, f"{key}: {error}"
    return settings, None


def is_whole_number(value, low: int, high: int) -> bool:
    """An int (not a bool, not a string) within [low, high]: the bound check of sizes read back."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def remove_orphan_temp_files(folder: Path, recursive: bool = False) -> int:
    """Delete the temporary files of atomic writes that a killed process left in `folder` (only names
    of the form ".<name>.<random>.tmp"); returns how many. Called whenever pasture opens a folder.
    A folder whose lock a live process holds is left alone: its temp files are that process's writes
    in progress (deleting one killed a live run that a refused second command had only looked at)."""
    removed = 0
    pattern = "**/.*" + TEMP_SUFFIX if recursive else ".*" + TEMP_SUFFIX
    held: dict[Path, bool] = {}
    for path in Path(folder).glob(pattern):
        if path.is_file() and TEMP_NAME.match(path.name):
            if held.setdefault(path.parent, lock_holder(path.parent) not in (None, os.getpid())):
                continue
            path.unlink(missing_ok=True)
            removed += 1
    lock = Path(folder) / LOCK_NAME
    if lock.is_file() and lock_holder(folder) is None:
        lock.unlink(missing_ok=True)  # left by a process that ended; harmless, but it would make the folder look used
        removed += 1
    return removed


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint with weights_only=True: plain tensors and containers, never pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint here; is this a finished pasture run folder?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated, or holds objects weights_only refuses
        raise UserError(f"{path}: cannot be loaded as a pasture checkpoint ({type(error).__name__})") from None


def versions() -> dict:
    """Versions of everything that can change a number."""

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "pasture": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": installed("torchvision"),
        "numpy": installed("numpy"),
        "pillow": installed("pillow"),
        "timm": installed("timm"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }


def check_writable(folder: Path, hint: str = "choose another --out") -> None:
    """Create `folder` if needed and prove a file can be written there, before any work is done."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".pasture-write-test.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{folder}: cannot write here ({error.strerror}); {hint}") from None


def differing_keys(old: dict, new: dict) -> list[str]:
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def check_output_folder(out: Path, marker: str | None, what: str) -> bool:
    """The one "is this folder ours" guard for every folder pasture writes (runs, GANs, experiments,
    synthetic sets). True when `out` holds pasture's `what` (its `marker` file exists); False when it
    is absent or empty. A file in the way, or a non-empty folder that is not ours, is a UserError, so
    a user's own folder is never written into. `marker=None` only checks that `out` can be a folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir():
        # What a process killed during its first write left: only pasture's temp files. The folder is
        # then as good as empty, and pasture continues instead of refusing its own leftovers.
        remove_orphan_temp_files(out)
    if marker is not None and (out / marker).is_file():
        return True
    if marker is not None and out.is_dir() and any(path.name != LOCK_NAME for path in out.iterdir()):
        raise UserError(f"{out}: folder is not empty and holds no pasture {what}; choose a new --out")
    return False


def prepare_run_dir(
    out: str | os.PathLike, identity: dict, resume: bool, force: bool, done_check=None, warn=None
) -> str:
    """Make `out` ready for a run whose settings are `identity`. Returns 'new', 'resume' or 'done'.

    - an existing run with other settings is never overwritten without --force;
    - --resume continues the same run from its last checkpoint ('done' if it had finished; a finished
      run whose result file fails `done_check` is resumed, which rewrites it from the checkpoint);
    - --force removes only pasture's own files from the folder;
    - temp files of writes a killed process left behind are removed.
    Raises UserError for every refusal, before anything is written.
    """
    out = Path(out)
    config_path = out / "config.json"
    if force:
        check_output_folder(out, None, "run")
        remove_own_files(out)
    elif check_output_folder(out, "config.json", "run"):
        try:
            old = read_checked_json(
                config_path,
                lambda data: None if isinstance(data.get("identity"), dict) else "has no run identity",
                what="run folder",
            )["identity"]
        except UserError as error:
            raise UserError(f"{error}; or use --force to overwrite this run") from None
        if not resume:
            raise UserError(
                f"{out}: already holds a run; use --resume to continue it, --force to overwrite it, "
                "or choose another --out"
            )
        changed = differing_keys(old, identity)
        if changed:
            raise UserError(
                f"{out}: holds a different run (differs in {', '.join(changed)}); --resume needs the "
                "same settings, or use --force to overwrite"
            )
        for marker in DONE_MARKERS:
            if (out / marker).is_file():
                try:
                    read_checked_json(out / marker, done_check, what="finished run")
                    return "done"
                except UserError as error:
                    if not (out / "checkpoint.pt").is_file():
                        raise
                    if warn is not None:
                        warn(f"{error}; scoring the run again from its checkpoint")
        if (out / "checkpoint.pt").is_file():
            check_writable(out)  # a read-only folder fails here, before any work, not after it
            return "resume"
    check_writable(out)
    return "new"


def open_run_dir(
    out: Path,
    identity: dict,
    config: dict,
    *,
    what: str,
    result_file: str,
    done_check,
    resume: bool,
    force: bool,
    command: list[str] | None,
    warn: Callable[[str], None],
) -> tuple[str, dict | None]:
    """Prepare a run folder (new, resume or done; see prepare_run_dir). A new run gets
    config.json: `config` plus the identity, versions, command and time. Returns (state, the finished
    run's `result_file` contents when state is "done", else None)."""
    state = prepare_run_dir(out, identity, resume=resume, force=force, done_check=done_check, warn=warn)
    if state == "done":
        warn(f"{out}: this {what} had already finished; nothing to resume")
        return state, read_checked_json(out / result_file, done_check, what=what)
    if state == "new":
        atomic_write_json(
            out / "config.json",
            {
                **config,
                "identity": identity,
                "versions": versions(),
                "command": command,  # None: called from Python
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            },
        )
    return state, None


@dataclass(frozen=True)
class FolderKind:
    """A kind of run folder to opened_run: what it is called in messages, its result file (written
    last: the folder is finished when it is there) and how that file is checked."""

    what: str
    result_file: str
    done_check: Callable


@dataclass(frozen=True)
class OpenedRun:
    """A run folder held and opened by opened_run: its state ("new", "resume" or "done") and, when done,
    its result file's contents (return them: there is nothing to do)."""

    folder: Path
    state: str
    finished: dict | None

    @property
    def resuming(self) -> bool:
        return self.state == "resume"


@contextlib.contextmanager
def opened_run(
    out: str | os.PathLike,
    identity: dict,
    config: dict,
    kind: FolderKind,
    *,
    resume: bool = False,
    force: bool = False,
    command: list[str] | None = None,
    warn: Callable[[str], None] = lambda message: None,
    on_interrupt: str = "run the same command again to start it over",
):
    """A run folder's life in one place, for train, gan train and adapt: its lock first (a second command
    on a live folder is refused before it touches anything), then open_run_dir (new, resume or done), then
    the caller's work; Ctrl-C during the work becomes Interrupted, saying `on_interrupt` (how to go on)."""
    folder = Path(out)
    with locked_folder(folder, kind.what):
        state, finished = open_run_dir(
            folder,
            identity,
            config,
            what=kind.what,
            result_file=kind.result_file,
            done_check=kind.done_check,
            resume=resume,
            force=force,
            command=command,
            warn=warn,
        )
        try:
            yield OpenedRun(folder, state, finished)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted; {on_interrupt}") from None
