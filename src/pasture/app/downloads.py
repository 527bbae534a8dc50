"""The Runs page's downloads: one file per export format (export/formats.py), written into the run
folder on first request and served from there. A format that writes a folder (OpenVINO's model.xml and
model.bin, Core ML's .mlpackage) is served as one zip beside it, as a browser downloads one file."""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import quote

from pasture import api
from pasture.core.errors import UserError


def served_file(format_name: str) -> str:
    """The file of the run folder the app serves for a format: model.onnx, model.int8.onnx, openvino.zip,
    model.mlpackage.zip."""
    output = api.EXPORT_FORMATS[format_name].output
    return output.rstrip("/") + ".zip" if output.endswith("/") else output


def download_name(run_name: str, format_name: str) -> str:
    """A plain ASCII download name: quotes, '%' or '?' in a run name made Content-Disposition unreadable."""
    suffix = served_file(format_name).removeprefix("model")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_name) + (suffix if suffix.startswith(".") else "." + suffix)


def installed_formats() -> list[dict]:
    """[{name, title}] of the formats this machine can write, in the registry's order."""
    return [{"name": entry.name, "title": entry.title} for entry in api.EXPORT_FORMATS.values() if entry.installed()]


def _zip_folder(folder: Path, target: Path) -> None:
    """`folder` as the zip `target` (entries under the folder's name), written whole or not at all."""
    handle, staged = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(staged, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, Path(folder.name) / path.relative_to(folder))
        os.replace(staged, target)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


def export_for_download(folder: Path, format_name: str) -> dict:
    """Export the finished run `folder` in `format_name` unless a current export is there (newer than its
    metrics.json); returns the URL, size and download name of the file to fetch."""
    if format_name not in api.EXPORT_FORMATS:
        raise UserError(f"format {format_name[:20]!r}: choose one of {', '.join(api.EXPORT_FORMATS)}")
    entry = api.EXPORT_FORMATS[format_name]
    if not entry.installed():
        raise UserError(f"{entry.title} export needs {', '.join(entry.needs)}, which is not installed here")
    served = folder / served_file(format_name)
    finished = (folder / "metrics.json").stat().st_mtime_ns
    if not served.is_file() or served.stat().st_mtime_ns < finished:
        api.export(folder, format=format_name)
        if entry.output.endswith("/"):
            _zip_folder(folder / entry.output.rstrip("/"), served)
    return {
        "file": f"/api/runs/{quote(folder.name, safe='')}/files/{served.name}",
        "bytes": served.stat().st_size,
        "format": format_name,
        "name": download_name(folder.name, format_name),
    }
