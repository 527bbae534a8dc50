"""TFLite export for phones and small boards (Android, iOS, a Raspberry Pi; LiteRT is TFLite's new
name): the run's model converted by litert-torch, Google's PyTorch-to-LiteRT converter, and checked with
the LiteRT interpreter against the run (the same 1e-4 parity as the other formats).

Why its own environment: litert-torch 0.10 installs beside torch 2.14.1, but it brings about 1 GB (jax,
jaxlib, transformers, torchao) and its xdsl pins typing-extensions below 4.13, which coremltools' cattrs
refuses (>= 4.14). So the `tflite` extra is not in `dev`; `.ci/run` tests it in a separate virtual
environment that sees the main one's packages (README: Install).

Ensembles are refused: litert-torch 0.10 converts a 2-member ensemble of paper-cnns wrongly at random
(in 5 of 8 conversions of the same run, in fresh and reused processes alike, the file's probabilities
were 0.9-1.8e-2 away from the run's, with LiteRT's reference kernels too, while each member alone
converted to within 1e-7 every time): it seems to mix up the members' look-alike weights. The parity
check would catch it, but a format that fails half the time is not one to offer.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pasture.classify.trained import finished_run_config, load_run
from pasture.core.errors import UserError
from pasture.core.extras import optional_import
from pasture.core.paths import check_output_file, staging_folder
from pasture.core.runs import atomic_write_bytes
from pasture.export.onnx_export import ExportGraph, checked_parity, run_metadata
from pasture.export.tflite_runner import TfliteClassifier, litert_module, with_metadata


def export_tflite(run: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """Write RUN's model as a .tflite file (default RUN/model.tflite): uint8 1 x 3 x S x S in,
    probabilities out, pasture's metadata inside; checked with the LiteRT interpreter on the run's test
    images. A difference above PARITY_LIMIT is a UserError and nothing is written."""
    converter = optional_import("litert_torch", "export --format tflite", "tflite", package="litert-torch")
    litert_module("export --format tflite")
    run = Path(run)
    finished_run_config(run)  # a folder that is not a finished run is said before --out
    path = Path(out) if out is not None else run / "model.tflite"
    if path.suffix != ".tflite":
        raise UserError(f"--out {path}: name the file *.tflite")
    check_output_file(path, "--out")
    model, config = load_run(run)
    if int(config["recipe"].get("ensemble", 1)) > 1:
        raise UserError(
            f"{run}: an ensemble of {config['recipe']['ensemble']} models; litert-torch converts ensembles wrongly at "
            "random, so TFLite takes one model: export --format onnx, or train with --ensemble 1"
        )
    tta = bool(config["recipe"].get("tta", False))
    size = config["image_size"]
    graph = ExportGraph(model, tta).eval()
    with staging_folder(path.parent, "tflite") as staging:
        staged = staging / "model.tflite"
        converter.convert(graph, (torch.zeros(1, 3, size, size, dtype=torch.uint8),)).export(str(staged))
        metadata = {**run_metadata(run, config, tta), "format": "tflite", "batch": "1"}
        data = with_metadata(staged.read_bytes(), metadata)
        staged.write_bytes(data)
        runner = TfliteClassifier(staged, threads=1)
        parity, _, where, checked = checked_parity(
            run, config, model, tta, lambda images: [runner.probabilities(images)], "LiteRT", path
        )
    atomic_write_bytes(path, data)
    return {
        "file": str(path),
        "format": "tflite",
        "bytes": len(data),
        "parity_max_abs": parity,
        "checked_on": where,
        "n_checked": checked,
        "opset": f"litert-torch {getattr(converter, '__version__', '')}".strip(),
        "runtime": "ai-edge-litert",
        "metadata": metadata,
    }
