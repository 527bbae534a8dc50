"""Photos uploaded to the app, streamed to disk with a cap per file and per request.

Starlette's `request.form()` spools every file whole (to memory, then a temporary file) before the app
can look at its size, and the old app then read each one into memory: a 1.6 GB "photo" raised its memory
by 1.5 GB before the 20 MiB limit refused it. Here python-multipart's streaming parser writes each part
straight into the staging folder as it arrives; a file past `max_file_bytes` stops being written the
moment it crosses the limit, a request past `max_request_bytes` (its Content-Length, when given, is
checked before reading anything) stops being read. What has been read of a refused request is drained
to nowhere (up to the request cap), so the browser receives the one-line message instead of a reset
connection.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pasture.core.errors import UserError
from pasture.core.paths import path_part_problem

MAX_NAME_CHARACTERS = 100  # an uploaded file's name is shortened to this
# ...and to this many bytes in UTF-8: the disk allows 255 bytes a name, and the app's folders add prefixes
# (a staging folder's number, a run's name); 100 CJK characters are 300 bytes.
MAX_NAME_BYTES = 180


class TooLarge(UserError):
    """An upload over its cap: answered 413."""


@dataclass(frozen=True)
class Limits:
    file_bytes: int = 20 * 1024 * 1024  # per photo; a phone's photo is 2-8 MB
    request_bytes: int = 1024 * 1024 * 1024  # per request: about 200 phone photos; the disk, not memory, holds them
    files: int = 1000  # per request: the page sends a Teach's classes in one request
    fields: int = 50
    field_bytes: int = 64 * 1024  # a text field (class names, run name, numbers)


def megabytes(count: int) -> str:
    return f"{count / 2**20:.0f} MiB" if count >= 2**20 else f"{count / 2**10:.0f} KiB"


def upload_name(raw: str, index: int) -> str:
    """A safe, short file name for an upload: its last path part, shortened to MAX_NAME_CHARACTERS with
    the suffix kept; a name that cannot be a file name becomes upload_<index>.jpg."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    if path_part_problem(name) is not None or name.startswith("."):
        return f"upload_{index}.jpg"
    name = unicodedata.normalize("NFC", name)
    if len(name) > MAX_NAME_CHARACTERS or len(name.encode()) > MAX_NAME_BYTES:
        stem, dot, suffix = name.rpartition(".")
        suffix = f".{suffix[:10]}" if dot and stem else ""
        stem = (stem if dot and stem else name)[: MAX_NAME_CHARACTERS - len(suffix)]
        while len((stem + suffix).encode()) > MAX_NAME_BYTES:  # whole characters, never half a UTF-8 one
            stem = stem[:-1]
        name = stem + suffix
    return name


@dataclass
class _Part:
    headers: dict = field(default_factory=dict)
    name: str = ""
    data: bytearray | None = None  # a text field's bytes
    file: BinaryIO | None = None  # an open file for a file part
    path: Path | None = None
    size: int = 0


class _Receiver:
    """The parser's callbacks: fields kept in memory (bounded), files written under `staging`."""

    def __init__(self, staging: Path, limits: Limits):
        self.staging, self.limits = staging, limits
        self.fields: dict[str, str] = {}
        self.files: dict[str, list[Path]] = {}
        self.count_files = self.count_fields = 0
        self.part = _Part()
        self.header_field = self.header_value = b""

    def on_part_begin(self):
        self.part = _Part()

    def on_header_field(self, data, start, end):
        self.header_field += data[start:end]

    def on_header_value(self, data, start, end):
        self.header_value += data[start:end]

    def on_header_end(self):
        self.part.headers[self.header_field.lower()] = self.header_value
        self.header_field = self.header_value = b""

    def on_headers_finished(self):
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise UserError("a form part has no name; send the form as the page does")
        self.part.name = options[b"name"].decode("utf-8", "replace")[:MAX_NAME_CHARACTERS]
        if b"filename" not in options:
            self.count_fields += 1
            if self.count_fields > self.limits.fields:
                raise UserError(f"more than {self.limits.fields} form fields; send the form as the page does")
            self.part.data = bytearray()
            return
        self.count_files += 1
        if self.count_files > self.limits.files:
            raise TooLarge(f"more than {self.limits.files} photos in one request; send them in smaller groups")
        index = len(self.files.get(self.part.name, []))
        name = upload_name(options[b"filename"].decode("utf-8", "replace"), index)
        folder = self.staging / f"{self.count_files:05d}"  # one folder per file: names may repeat
        folder.mkdir()
        self.part.path = folder / name
        self.part.file = open(self.part.path, "wb")  # noqa: SIM115 (closed in on_part_end or close())

    def on_part_data(self, data, start, end):
        part = self.part
        part.size += end - start
        if part.data is not None:
            if part.size > self.limits.field_bytes:
                raise UserError(f"form field {part.name}: longer than {megabytes(self.limits.field_bytes)}")
            part.data += data[start:end]
            return
        assert part.file is not None and part.path is not None  # a file part: on_headers_finished opened it
        if part.size > self.limits.file_bytes:
            raise TooLarge(
                f"{part.path.name}: above the {megabytes(self.limits.file_bytes)} limit per photo; downscale it"
            )
        part.file.write(data[start:end])

    def on_part_end(self):
        part = self.part
        if part.data is not None:
            self.fields[part.name] = part.data.decode("utf-8", "replace")
        elif part.file is not None and part.path is not None:
            part.file.close()
            self.files.setdefault(part.name, []).append(part.path)

    def close(self):
        if self.part.file is not None:
            self.part.file.close()


async def receive_form(request: Request, staging: Path, limits: Limits) -> tuple[dict[str, str], dict[str, list[Path]]]:
    """(text fields, {field: saved files}) of a multipart/form-data request, streamed into `staging`
    (which the caller removes). Raises UserError (TooLarge past a cap) with a one-line message."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UserError("send the photos as multipart/form-data, as the page does")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.request_bytes:
        raise TooLarge(
            f"the upload is {megabytes(int(declared))}, above the {megabytes(limits.request_bytes)} "
            "limit per request; send fewer photos at a time"
        )
    receiver = _Receiver(staging, limits)
    callbacks: Any = {  # python-multipart's MultipartCallbacks (a TypedDict of these names)
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    received = 0
    stream = request.stream()
    try:
        parser = MultipartParser(options[b"boundary"], callbacks)
        async for chunk in stream:
            received += len(chunk)
            if received > limits.request_bytes:
                raise TooLarge(
                    f"the upload is above the {megabytes(limits.request_bytes)} limit per request; "
                    "send fewer photos at a time"
                )
            # parsed in a worker thread: a request of thousands of tiny parts froze every other request
            # for seconds when its callbacks ran on the event loop (issue 40)
            await run_in_threadpool(parser.write, chunk)
        await run_in_threadpool(parser.finalize)
    except (MultipartParseError, FormParserError) as error:
        receiver.close()
        raise UserError(
            f"the upload is not a well-formed form ({type(error).__name__}); send the photos as the page does"
        ) from None
    except UserError:
        receiver.close()
        if received <= limits.request_bytes:  # read the rest to nowhere, so the browser gets the message
            async for chunk in stream:
                received += len(chunk)
                if received > limits.request_bytes:
                    break
        raise
    finally:
        receiver.close()
    return receiver.fields, receiver.files
