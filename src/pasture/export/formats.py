"""The export formats as data (a registry, as timm's models are): the exporter, where it writes inside a
run folder, and the modules it needs, so the CLI, the API and the app's download buttons read one table
and the app offers only what this machine can write."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pasture.classify.trained import finished_run_config
from pasture.core.errors import UserError
from pasture.core.locks import folder_lock
from pasture.core.paths import check_outside
from pasture.export.coreml_export import export_coreml
from pasture.export.int8 import export_onnx_int8
from pasture.export.onnx_export import export_onnx
from pasture.export.openvino_export import export_openvino
from pasture.export.tflite_export import export_tflite


@dataclass(frozen=True)
class ExportFormat:
    name: str
    export: Callable[[str | os.PathLike, str | os.PathLike | None], dict]
    output: str  # where it writes inside the run folder by default: a file, or a folder ending in /
    needs: tuple[str, ...]  # the modules its converter and its check import
    title: str  # as the app's download button names it

    def installed(self) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in self.needs)


EXPORT_FORMATS = {
    entry.name: entry
    for entry in (
        ExportFormat("onnx", export_onnx, "model.onnx", ("onnx", "onnxruntime"), "ONNX"),
        ExportFormat("onnx-int8", export_onnx_int8, "model.int8.onnx", ("onnx", "onnxruntime"), "ONNX int8"),
        ExportFormat("openvino", export_openvino, "openvino/", ("onnx", "openvino"), "OpenVINO"),
        ExportFormat("coreml", export_coreml, "model.mlpackage/", ("coremltools",), "Core ML"),
        ExportFormat("tflite", export_tflite, "model.tflite", ("litert_torch", "ai_edge_litert"), "TFLite"),
    )
}


def export_format(name: str) -> ExportFormat:
    if name not in EXPORT_FORMATS:
        raise UserError(f"--format {name}: choose one of {', '.join(EXPORT_FORMATS)}")
    return EXPORT_FORMATS[name]


def export_run(run: str | os.PathLike, out: str | os.PathLike | None, format_name: str) -> dict:
    """Export RUN in `format_name` (pasture.api.export). `out` may not lie inside the run's data folder
    (the next train would read pasture's files there as a class), and the run is held with a reader's lock
    meanwhile: a train --force or a delete of it (another process, or the app) is refused while it exports,
    and an export waits for no training (issue 40)."""
    exporter = export_format(format_name)
    data = finished_run_config(Path(run)).get("identity", {}).get("data")
    if data:
        check_outside(out, [data])
    with folder_lock(Path(run), "run", shared=True):
        return exporter.export(run, out)
