"""Run folders: config, history, metrics, atomic checkpoints, resume.

One place for every write of a run's files, so each of them is atomic (write a temporary file in the
same folder, then rename over the target: a crash leaves the old file or the new one, never half).
"""

from __future__ import annotations

import io
import json
import os
import platform
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from pasture import __version__
from pasture.core.errors import UserError

# Files pasture itself writes into a run or GAN folder (glob patterns); --force removes only these,
# never a user's own files.
RUN_FILES = (
    "config.json", "history.jsonl", "metrics.json", "checkpoint.pt", "curves.png", "confusion.png",
    "gan_log.jsonl", "gan_losses.png", "samples_*.png", "summary.json", "score.json",
)
DONE_MARKERS = ("metrics.json", "summary.json")  # written last by a finished classifier / GAN run


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


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


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".pasture-write-test.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{folder}: cannot write here ({error.strerror}); choose another --out") from None


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
    if marker is not None and (out / marker).is_file():
        return True
    if marker is not None and out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out}: folder is not empty and holds no pasture {what}; choose a new --out")
    return False


def prepare_run_dir(out: str | os.PathLike, identity: dict, resume: bool, force: bool) -> str:
    """Make `out` ready for a run whose settings are `identity`. Returns 'new', 'resume' or 'done'.

    - an existing run with other settings is never overwritten without --force;
    - --resume continues the same run from its last checkpoint ('done' if it had finished);
    - --force removes only pasture's own files from the folder.
    Raises UserError for every refusal, before anything is written.
    """
    out = Path(out)
    config_path = out / "config.json"
    if force:
        check_output_folder(out, None, "run")
        for pattern in RUN_FILES:
            for path in out.glob(pattern):
                path.unlink(missing_ok=True)
    elif check_output_folder(out, "config.json", "run"):
        try:
            old = read_json(config_path).get("identity", {})
        except (OSError, ValueError, AttributeError):  # not JSON, or JSON that is not an object
            raise UserError(f"{config_path}: unreadable; use --force to overwrite this run") from None
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
        if any((out / marker).is_file() for marker in DONE_MARKERS):
            return "done"
        if (out / "checkpoint.pt").is_file():
            return "resume"
    _check_writable(out)
    return "new"
