"""Core ML export: the run's model as an ML Program (RUN/model.mlpackage) for iPhones, iPads and Macs,
with an image input (RGB, S x S, pixel values 0-255: what an app's camera frame gives after resizing)
and class probabilities out; pasture's metadata (classes, size, the run's accuracy with its interval)
in the package's user-defined metadata.

Converted with coremltools from torch.export (its TorchScript path fails on timm's SAME-padding shape
arithmetic with torch 2.14). On Linux the package is checked as a specification: its input is an RGB
image of the run's size, its output is named probabilities, its metadata is pasture's. Only Core ML
itself can run it, and Core ML exists on Apple systems only: there the export is also checked against
the run's probabilities; elsewhere the result says that this check was not made, and why.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import warnings
from pathlib import Path

import numpy as np
import torch

from pasture.classify.trained import finished_run_config
from pasture.core.errors import UserError
from pasture.core.extras import optional_import
from pasture.core.paths import check_output_package, replace_package, staging_folder
from pasture.export.onnx_export import ExportGraph, checked_parity, fp32_export

OUTPUT = "probabilities"
PACKAGE_FILES = frozenset({"Manifest.json", "Data"})  # what coremltools writes into a .mlpackage


def coremltools_module():
    # Off Apple systems coremltools prints a line per missing native proxy, and a note on every torch
    # newer than it was tested with, at import: not for users (the conversion itself is checked).
    quiet = (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()))
    with quiet[0], quiet[1], warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optional_import("coremltools", "export --format coreml", "coreml")


def _converted(model, size: int, tta: bool):
    ct = coremltools_module()
    graph = ExportGraph(model, tta).eval()
    program = torch.export.export(graph, (torch.zeros(1, 3, size, size),)).run_decompositions({})
    converted = ct.convert(
        program,
        inputs=[ct.ImageType(name="image", shape=(1, 3, size, size), color_layout=ct.colorlayout.RGB, scale=1.0)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT32,  # the run's numbers; fp16 is a choice an app can make later
    )
    produced = converted.get_spec().description.output[0].name
    spec = converted.get_spec()
    ct.utils.rename_feature(spec, produced, OUTPUT)
    return ct.models.MLModel(spec, weights_dir=converted.weights_dir, skip_model_load=True)


def check_spec(package: Path, size: int, classes: list[str]) -> None:
    """The contract an app relies on, read back from the written package."""
    ct = coremltools_module()
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    image = spec.description.input[0]
    problems = []
    if image.type.WhichOneof("Type") != "imageType":
        problems.append("its input is not an image")
    elif (image.type.imageType.width, image.type.imageType.height) != (size, size):
        problems.append(f"its image is not {size} x {size}")
    if [output.name for output in spec.description.output] != [OUTPUT]:
        problems.append(f"its output is not named {OUTPUT}")
    if json.loads(dict(spec.description.metadata.userDefined).get("classes", "null")) != classes:
        problems.append("its metadata lacks the classes")
    if problems:
        raise UserError(f"{package}: the Core ML package is not what pasture wrote ({'; '.join(problems)})")


def export_coreml(run: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """Write RUN's model as a Core ML package (default RUN/model.mlpackage); see the module docstring."""
    ct = coremltools_module()
    run = Path(run)
    finished_run_config(run)  # a folder that is not a finished run is said before --out
    package = Path(out) if out is not None else run / "model.mlpackage"
    if package.suffix != ".mlpackage":
        raise UserError(f"--out {package}: name the package *.mlpackage")
    check_output_package(package, "--out", PACKAGE_FILES, "Core ML package")  # only pasture's own is replaced
    model, config, tta, _, metadata = fp32_export(run, familiar=False)  # Core ML: probabilities only
    size = config["image_size"]
    with staging_folder(package.parent, "coreml") as staging:
        staged = staging / package.name
        converted = _converted(model, size, tta)
        for key, value in {**metadata, "format": "coreml", "input": f"RGB image {size} x {size}, values 0-255"}.items():
            converted.user_defined_metadata[key] = value
        converted.short_description = f"pasture {config['recipe']['name']}: {', '.join(config['classes'])}"
        converted.save(str(staged))
        check_spec(staged, size, config["classes"])
        parity, checked = None, "not checked: Core ML runs only on Apple systems (the package's spec was checked)"
        if platform.system() == "Darwin":
            from PIL import Image

            loaded = ct.models.MLModel(str(staged))

            def probabilities(images: np.ndarray) -> np.ndarray:
                return np.stack(
                    [
                        loaded.predict({"image": Image.fromarray(image.transpose(1, 2, 0))})[OUTPUT][0]
                        for image in images
                    ]
                )

            parity, _, checked, _ = checked_parity(
                run, config, model, tta, lambda images: [probabilities(images)], "Core ML", package
            )
        replace_package(staged, package, PACKAGE_FILES, "Core ML package")
    size_bytes = sum(path.stat().st_size for path in package.rglob("*") if path.is_file())
    return {
        "file": str(package),
        "format": "coreml",
        "bytes": size_bytes,
        "parity_max_abs": parity,
        "checked_on": checked,
        "n_checked": 0 if parity is None else None,
        "opset": f"Core ML ML Program (iOS 16+), coremltools {ct.__version__}",
        "runtime": "coreml",
        "metadata": metadata,
    }
