"""Run an exported model (pasture export) with ONNX Runtime alone: no torch, no pasture run folder; and
a finished probe run folder the same way (its probe.npz: classify.probe_file).

The file takes uint8 RGB images N x 3 x S x S (S, the classes and the run's honest test accuracy are in
its metadata) and returns class probabilities; pasture.core.imagefile decodes files exactly as
training did (EXIF orientation, RGB, shorter side resized to S, centre crop).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pasture.classify.predictions import (  # noqa: F401  (EXPORTED_SUFFIXES: imported from here by api and cli)
    EXPORTED_SUFFIXES,
    exported_outputs,
    exported_scores,
    familiarity_threshold,
    in_batches,
    missing_export,
    prediction_rows,
    write_predictions_csv,
)
from pasture.classify.probe_file import ProbeRunScorer, probe_run_scorer
from pasture.core.errors import UserError
from pasture.core.extras import optional_import
from pasture.core.imagefile import BadImage, decode_array, image_files_in

if TYPE_CHECKING:  # the runners of other formats import their runtime only when used
    from pasture.export.openvino_runner import OpenVinoClassifier
    from pasture.export.tflite_runner import TfliteClassifier


def onnxruntime_module():
    return optional_import("onnxruntime", "running an exported model", "export")


class OnnxClassifier:
    """An exported pasture model: `.classes`, `.image_size`, `.metadata`, `.threshold` (the familiarity
    threshold, None for a file without familiarity outputs), probabilities() and scores()."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        """`threads`: ONNX Runtime's intra-op threads (None: its default, every core)."""
        path = Path(path)
        if not path.is_file():
            raise missing_export(path)
        ort = onnxruntime_module()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
            self.classes = json.loads(self.metadata["classes"])
            self.image_size = int(self.metadata["image_size"])
        except (KeyError, ValueError, TypeError):
            raise UserError(
                f"{path}: an ONNX file without pasture's metadata (classes, image_size); export it "
                "with `pasture export`"
            ) from None
        except Exception as error:  # onnxruntime's own errors: not an ONNX model, or a damaged one
            raise UserError(f"{path}: ONNX Runtime cannot load it ({type(error).__name__})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.threshold = familiarity_threshold(self.metadata) if len(self.session.get_outputs()) == 3 else None

    def _outputs(self, batch: np.ndarray) -> list:
        return self.session.run(None, {self.input_name: batch})

    def probabilities(self, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N x classes, float32) of uint8 images N x 3 x S x S."""
        return in_batches(lambda batch: self._outputs(batch)[0], images_uint8, batch_size, len(self.classes))

    def scores(self, images_uint8: np.ndarray, batch_size: int = 64):
        """(probabilities, [(familiarity, familiar)] per image, or None for a file without them)."""
        return exported_scores(self._outputs, images_uint8, batch_size, len(self.classes), self.threshold)

    def outputs(self, images_uint8: np.ndarray, batch_size: int = 64) -> list[np.ndarray]:
        """Every output (probabilities, and familiarity and distance where it has them), in one pass."""
        return exported_outputs(self._outputs, images_uint8, batch_size)


def decode_for(
    model: OnnxClassifier | OpenVinoClassifier | TfliteClassifier | ProbeRunScorer, files: list[Path]
) -> np.ndarray:
    """uint8 N x 3 x S x S at the model's input size; a file that is not a usable image is a UserError."""
    arrays = []
    for path in files:
        try:
            arrays.append(decode_array(path, model.image_size)[0])
        except BadImage as error:
            raise UserError(error.line(path)) from None
    return np.stack(arrays)


def predict_onnx(
    file: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    csv: str | os.PathLike | None = None,
    quiet: bool = True,
    unknown: bool = False,
) -> list[dict] | dict:
    """The rows of `pasture predict` (file, label, probability, probabilities, and familiarity and familiar
    for a file that outputs them) from an exported model (FILE.onnx, an OpenVINO model.xml, or a .tflite
    file); with `unknown`, an unfamiliar photo is labelled "unknown"; with `csv`, streamed to that file
    instead (pasture.classify.predictions.write_predictions_csv)."""
    if str(file).endswith(".xml"):  # an OpenVINO export (its runner imports openvino only then)
        from pasture.export.openvino_runner import OpenVinoClassifier

        model: OnnxClassifier | OpenVinoClassifier | TfliteClassifier = OpenVinoClassifier(file)
    elif str(file).endswith(".tflite"):  # a TFLite export, run by the LiteRT interpreter
        from pasture.export.tflite_runner import TfliteClassifier

        model = TfliteClassifier(file)
    else:
        model = OnnxClassifier(file)
    if unknown and model.threshold is None:
        raise UserError(NO_FAMILIARITY.format(file=file))
    return predict_with(model, paths, csv, quiet, unknown)


def predict_probe_run(
    run: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    csv: str | os.PathLike | None,
    quiet: bool,
    unknown: bool,
    device: str | None = "auto",
) -> list[dict] | dict | None:
    """predict_onnx's rows for a finished probe run folder, by ONNX Runtime and numpy (classify.probe_file),
    or None where the run must be read by torch (classify.trained)."""
    scorer = probe_run_scorer(run, device)
    return None if scorer is None else predict_with(scorer, paths, csv, quiet, unknown)


def predict_with(
    model: OnnxClassifier | OpenVinoClassifier | TfliteClassifier | ProbeRunScorer,
    paths: Sequence[str | os.PathLike],
    csv: str | os.PathLike | None,
    quiet: bool,
    unknown: bool,
) -> list[dict] | dict:
    """predict_onnx's rows (or with `csv`, the counts of the CSV written) from a model already loaded:
    an exported file's runner, or a probe run scored without torch (classify.probe_file)."""
    files = image_files_in(paths)
    if not files:
        raise UserError("predict: give at least one image file or folder")
    familiar = model.threshold is not None
    if csv is not None:
        scores = model.scores if familiar else model.probabilities
        return write_predictions_csv(files, model.classes, model.image_size, scores, csv, quiet, familiar, unknown)
    probabilities, columns = model.scores(decode_for(model, files))
    return prediction_rows(files, probabilities.tolist(), model.classes, columns, unknown)


NO_FAMILIARITY = (
    "--unknown: {file} says nothing of familiarity (from a run without training features, an older export, "
    "or an int8, TFLite or Core ML file); export the run again with `pasture export`, or predict with the "
    "run folder"
)
