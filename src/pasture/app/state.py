"""What the app's routes share: its state, the gate on requests of a kind, and how a request names a run
and its photos (each checked: a name that would leave RUNS, or a file that is no photo, is a message)."""

from __future__ import annotations

import tempfile
import threading
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi.responses import JSONResponse

from pasture.app.jobs import Jobs, staging_prefix
from pasture.app.live import LiveModel
from pasture.app.uploads import MAX_NAME_BYTES, MAX_NAME_CHARACTERS, Limits
from pasture.core.errors import UserError
from pasture.core.imagefile import BadImage, decode_array
from pasture.core.paths import ensure_under, printable_name, safe_path_part


class TooBusy(UserError):
    """Answered 429: more requests of a kind than the app takes at once."""


class Admission:
    """At most `limit` requests of one kind inside at once (threads and the event loop alike)."""

    def __init__(self, limit: int, what: str):
        self.limit, self.what, self.inside = limit, what, 0
        self._lock = threading.Lock()

    @contextmanager
    def entered(self):
        with self._lock:
            if self.inside >= self.limit:
                raise TooBusy(f"{self.inside} {self.what} are being worked on; try again when they finish")
            self.inside += 1
        try:
            yield
        finally:
            with self._lock:
                self.inside -= 1


def form_name(value: object, what: str) -> str:
    """A class or run name from a form: text, stripped, NFC-normalised (café typed on a Mac and on Linux is
    one name, not two that look alike), at most MAX_NAME_CHARACTERS and MAX_NAME_BYTES in UTF-8 (the disk
    counts bytes: 96 CJK characters were 288 bytes, "File name too long"), one safe path part that is not
    hidden (".data-x" would pass for the app's own folders)."""
    if not isinstance(value, str):
        raise UserError(f"{what}: give each as text (got {type(value).__name__}); send the form as the page does")
    name = unicodedata.normalize("NFC", value.strip())
    if len(name) > MAX_NAME_CHARACTERS or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UserError(
            f"{what} {printable_name(name[:40])}...: longer than {MAX_NAME_CHARACTERS} characters or "
            f"{MAX_NAME_BYTES} bytes; shorten it"
        )
    safe_path_part(name, what)
    if name.startswith("."):
        raise UserError(f"{what} '{printable_name(name)}': cannot start with a dot; rename it")
    return name


def run_folder(runs: Path, name: str) -> Path:
    """RUNS/<name>, refusing any name that would leave RUNS (separators, .., absolute, NUL) or be hidden."""
    return ensure_under(runs / form_name(name, "run name"), runs)


class NotFound(Exception):
    """Answered 404 with its message."""


def existing_run(runs: Path, name: str) -> Path:
    folder = run_folder(runs, name)
    if not (folder / "config.json").is_file():
        raise NotFound(f"{name}: no such run")
    return folder


def finished_run(runs: Path, name: str) -> Path:
    """RUNS/<name> of a finished run (what Test labels with), else NotFound."""
    folder = existing_run(runs, name)
    if not (folder / "metrics.json").is_file():
        raise NotFound(f"{name}: no finished run of that name")
    return folder


def check_images(files: list[Path]) -> None:
    for path in files:
        try:
            decode_array(path, 16)
        except BadImage as error:
            raise UserError(f"{path.name}: {error}; remove it and try again") from None


def staging(runs: Path, kind: str) -> tempfile.TemporaryDirectory:
    """A request's staging folder RUNS/.<kind><pid>-<random>, removed on every path out."""
    return tempfile.TemporaryDirectory(prefix=staging_prefix(kind), dir=runs, ignore_cleanup_errors=True)


@dataclass(frozen=True)
class AppState:
    """What every route of one app shares."""

    runs: Path  # the folder of run folders
    jobs: Jobs  # the training jobs (one at a time)
    explanations: Path  # the Test page's heatmaps
    limits: Limits  # what an upload may hold
    live: LiveModel  # the run the Test page's camera and photos use, kept loaded
    tests: Admission  # the Tests in progress
    improving: Admission  # the Improve pages reading a new camera's photos


def whole_number(fields: dict, key: str, bounds: tuple[int, int]) -> int | None:
    text = fields.get(key, "").strip()
    if not text:
        return None
    low, high = bounds
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):  # "²" is a digit to isdigit()
        raise UserError(f"{key} '{printable_name(text[:20])}': give a whole number from {low} to {high}")
    return int(text)


def problem(status: int, message: str) -> JSONResponse:
    """An answer the page shows as a message: {"error": message} with `status`."""
    return JSONResponse({"error": message}, status_code=status)
