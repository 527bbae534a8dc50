"""Run an OpenVINO export (pasture export --format openvino) with the OpenVINO runtime alone: no torch,
no pasture run folder. The same contract as an ONNX export (uint8 N x 3 x S x S in, probabilities out;
classes, size and the run's accuracy with its interval in the model's rt_info).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pasture.classify.predictions import (
    exported_outputs,
    exported_scores,
    familiarity_threshold,
    in_batches,
    missing_export,
)
from pasture.core.errors import UserError
from pasture.core.extras import optional_import

PRECISION = {"INFERENCE_PRECISION_HINT": "f32"}


def openvino_module():
    return optional_import("openvino", "export --format openvino / predict MODEL.xml", "openvino")


class OpenVinoClassifier:
    """An exported OpenVINO IR (model.xml beside model.bin): `.classes`, `.image_size`, `.metadata`,
    probabilities(), as pasture.export.onnx_runner.OnnxClassifier."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        path = Path(path)
        if not path.is_file() or not path.with_suffix(".bin").is_file():
            raise missing_export(path)
        ov = openvino_module()
        core = ov.Core()
        try:
            model = core.read_model(str(path))
            info = model.get_rt_info()
            self.metadata = {key: value.astype(str) for key, value in info["pasture"].items()}
            self.classes = json.loads(self.metadata["classes"])
            self.image_size = int(self.metadata["image_size"])
        except (KeyError, ValueError, TypeError, RuntimeError):
            raise UserError(
                f"{path}: an OpenVINO model without pasture's metadata; export it with "
                "`pasture export --format openvino`"
            ) from None
        config: dict[str, str | int] = dict(PRECISION)
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        self.threshold = familiarity_threshold(self.metadata) if len(model.outputs) == 3 else None

    def _outputs(self, batch: np.ndarray) -> list:
        results = self.compiled(batch)
        return [results[index] for index in range(len(self.compiled.outputs))]

    def probabilities(self, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N x classes, float32) of uint8 images N x 3 x S x S."""
        return in_batches(lambda batch: self.compiled(batch)[0], images_uint8, batch_size, len(self.classes))

    def scores(self, images_uint8: np.ndarray, batch_size: int = 64):
        """(probabilities, [(familiarity, familiar)] per image, or None), as OnnxClassifier.scores."""
        return exported_scores(self._outputs, images_uint8, batch_size, len(self.classes), self.threshold)

    def outputs(self, images_uint8: np.ndarray, batch_size: int = 64) -> list[np.ndarray]:
        """Every output (probabilities, and familiarity and distance where it has them), in one pass."""
        return exported_outputs(self._outputs, images_uint8, batch_size)
