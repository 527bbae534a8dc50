"""OpenVINO export: the run's fp32 ONNX graph converted to OpenVINO's IR (model.xml + model.bin, in one
folder), for Intel CPUs, GPUs and NPUs, checked against the run with the OpenVINO runtime, and run by it
(`pasture predict RUN/openvino/model.xml`) without torch.

Why through ONNX: the ONNX file is already the checked, self-contained graph (uint8 in, probabilities
out, TTA and ensembles inside); OpenVINO reads it directly, so both formats describe the same model.
The CPU plugin is told to compute in f32 (on CPUs with bf16 it would otherwise pick bf16 and drift from
the run). pasture's metadata (classes, size, accuracy with its interval) is in the IR's rt_info.
"""

from __future__ import annotations

import os
from pathlib import Path

from pasture.classify.trained import finished_run_config
from pasture.core.errors import UserError
from pasture.core.paths import check_output_package, replace_package, staging_folder
from pasture.export.onnx_export import checked_parity, fp32_export
from pasture.export.openvino_runner import OpenVinoClassifier, openvino_module

IR_FILES = frozenset({"model.xml", "model.bin"})


def export_openvino(run: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """Write RUN's model as OpenVINO IR into the folder `out` (default RUN/openvino/: model.xml and
    model.bin), checked against the run on its test images; a difference above PARITY_LIMIT is a
    UserError and nothing is left behind."""
    ov = openvino_module()
    run = Path(run)
    finished_run_config(run)  # a folder that is not a finished run is said before --out
    folder = Path(out) if out is not None else run / "openvino"
    if folder.suffix:
        raise UserError(f"--out {folder}: give a folder for model.xml and model.bin (no file name)")
    check_output_package(folder, "--out", IR_FILES, "OpenVINO folder")  # only pasture's own is replaced
    model, config, tta, exported, metadata = fp32_export(run)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(folder.parent, "openvino") as staging:
        staged = staging / folder.name
        staged.mkdir()
        (staged / "model.onnx").write_bytes(exported)
        converted = ov.convert_model(str(staged / "model.onnx"))
        for key, value in {**metadata, "format": "openvino"}.items():
            converted.set_rt_info(value, ["pasture", key])
        ov.save_model(converted, str(staged / "model.xml"), compress_to_fp16=False)
        (staged / "model.onnx").unlink()
        runner = OpenVinoClassifier(staged / "model.xml")
        parity, familiar_parity, where, checked = checked_parity(
            run, config, model, tta, runner.outputs, "OpenVINO", folder
        )
        replace_package(staged, folder, IR_FILES, "OpenVINO folder")
        size = sum((folder / name).stat().st_size for name in ("model.xml", "model.bin"))
    return {
        "file": str(folder / "model.xml"),
        "format": "openvino",
        "bytes": size,
        "parity_max_abs": parity,
        "familiarity_parity_max_abs": familiar_parity,
        "checked_on": where,
        "n_checked": checked,
        "opset": f"OpenVINO IR {ov.__version__.split('-')[0]}",
        "runtime": "openvino",
        "metadata": metadata,
    }
