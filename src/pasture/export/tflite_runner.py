"""Run a TFLite export (pasture export --format tflite) with the LiteRT interpreter alone (ai-edge-litert:
no torch, no pasture run folder). The same contract as an ONNX export: uint8 N x 3 x S x S in,
probabilities out, and pasture's metadata (classes, size, the run's accuracy with its interval) in the
file's own metadata table under the name "pasture", where any TFLite reader finds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pasture.classify.predictions import in_batches, missing_export
from pasture.core.errors import UserError
from pasture.core.extras import optional_import

METADATA_NAME = "pasture"


def litert_module(what: str = "predict MODEL.tflite"):
    return optional_import("ai_edge_litert.interpreter", what, "tflite", package="ai-edge-litert")


def read_metadata(data: bytes) -> dict | None:
    """pasture's metadata in the TFLite file `data`, or None."""
    schema = optional_import("ai_edge_litert.schema_py_generated", "reading a .tflite file", "tflite", "ai-edge-litert")
    model = schema.Model.GetRootAs(data, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() is not None and entry.Name().decode() == METADATA_NAME:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode())
    return None


def with_metadata(data: bytes, metadata: dict) -> bytes:
    """The TFLite file `data` with `metadata` as JSON in a buffer named by its metadata table."""
    schema = optional_import("ai_edge_litert.schema_py_generated", "export --format tflite", "tflite", "ai-edge-litert")
    import flatbuffers  # ai-edge-litert's own dependency

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class TfliteClassifier:
    """An exported .tflite file: `.classes`, `.image_size`, `.metadata`, probabilities(), as
    pasture.export.onnx_runner.OnnxClassifier. The file takes one image at a time (batch 1, as a phone
    or a Raspberry Pi runs it)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise missing_export(path)
        litert = litert_module()
        data = path.read_bytes()
        try:
            self.metadata = read_metadata(data) or {}  # none: the KeyError below says so
            self.classes = json.loads(self.metadata["classes"])
            self.image_size = int(self.metadata["image_size"])
        except (TypeError, KeyError, ValueError):
            raise UserError(
                f"{path}: a TFLite model without pasture's metadata; export it with `pasture export --format tflite`"
            ) from None
        self.interpreter = litert.Interpreter(model_content=data, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.threshold = None  # TFLite files carry probabilities only

    def _one(self, image: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(image))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()

    def probabilities(self, images_uint8: np.ndarray, batch_size: int = 1) -> np.ndarray:
        """Class probabilities (N x classes, float32) of uint8 images N x 3 x S x S, one image a call."""
        return in_batches(self._one, images_uint8, 1, len(self.classes))

    def scores(self, images_uint8: np.ndarray, batch_size: int = 1) -> tuple[np.ndarray, None]:
        """(probabilities, None): as OnnxClassifier.scores for a file without familiarity outputs."""
        return self.probabilities(images_uint8), None
