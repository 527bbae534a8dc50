"""A finished probe run's heads and familiarity bank as numpy arrays (RUN/probe.npz), and the run scored
with them by ONNX Runtime and numpy alone: `pasture predict RUN` on a probe run never imports torch.

Why: after its backbones ran by ONNX Runtime (classify.backbones), `pasture predict RUN` on 100 photos still
took 1.50x the time of the same model exported to ONNX (issue 42): torch's import (about 1.8 s) and
reading checkpoint.pt and familiarity.pt with it, for a head of a few thousand weights and a k-NN over a
few hundred rows that numpy does in a millisecond. The file is written beside the checkpoint by
train_probe (and so by `adapt`); it names the backbone's cached, parity-checked ONNX graph and the
checkpoint's digest. Any run without it, whose checkpoint changed since, whose graph is not in the cache,
with test-time augmentation, on a GPU, or without ONNX Runtime, is scored by classify.trained as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from pasture.core.defaults import cache_enabled, cache_root
from pasture.core.paths import atomic_write_bytes

PROBE_FILE = "probe.npz"
FORMAT = 1
RUNTIME_VARIABLE = "PASTURE_BACKBONE_RUNTIME"  # "torch": never ONNX Runtime, here or in classify.backbones
ORT_BATCH = 8  # photos a backbone graph runs at once. A cold `pasture train` on cowhorse-dev (2 cores): batch
# 32 peaked at 2.84 GB in 14.6 s, 16 at 2.32 GB in 15.7-16.7 s, 8 at 2.06 GB in 16.3 s: ONNX Runtime's
# arena grows with the batch, the time hardly does.


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (33 MB of the default's checkpoint: about 30 ms)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_probe_file(
    run: str | os.PathLike,
    weights: np.ndarray,
    biases: np.ndarray,
    familiarity: dict,
    graph: Path,
) -> None:
    """RUN/probe.npz, written after RUN/checkpoint.pt: each member's head (`weights` members x classes x
    D, `biases` members x classes), the familiarity bank (`familiarity`: bank float16 N x D normalised,
    k, held_out sorted, threshold) and the backbone's graph file in the cache."""
    run = Path(run)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        format=np.array(FORMAT),
        weights=weights.astype(np.float32),
        biases=biases.astype(np.float32),
        bank=familiarity["bank"].astype(np.float16),
        k=np.array(int(familiarity["k"])),
        held_out=familiarity["held_out"].astype(np.float32),
        threshold=np.array(float(familiarity["threshold"])),
        graph=np.array(graph.name),
        checkpoint=np.array(file_digest(run / "checkpoint.pt")),
    )
    atomic_write_bytes(run / PROBE_FILE, buffer.getvalue())


def _gpu_for_auto() -> bool:
    """Whether `--device auto` could pick a GPU (torch is not imported to ask): CUDA or ROCm device
    files, or a Mac (MPS)."""
    return sys.platform == "darwin" or any(Path(name).exists() for name in ("/dev/nvidiactl", "/dev/kfd"))


class ProbeRunScorer:
    """A finished probe run scored without torch, with what predict needs of a model (as the exported
    models' runners have it): `.classes`, `.image_size`, `.threshold`, probabilities() and scores()."""

    def __init__(self, config: dict, stored, session):
        self.session = session
        self.classes: list[str] = config["classes"]
        self.image_size: int = config["image_size"]
        self.weights, self.biases = stored["weights"], stored["biases"]
        self.bank = stored["bank"].astype(np.float32)
        self.k = max(1, min(int(stored["k"]), len(self.bank)))
        self.held_out = stored["held_out"]
        self.threshold = float(stored["threshold"])

    def features(self, images_uint8: np.ndarray) -> np.ndarray:
        chunks = [
            self.session.run(None, {"images": np.ascontiguousarray(images_uint8[start : start + ORT_BATCH])})[0]
            for start in range(0, len(images_uint8), ORT_BATCH)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.bank.shape[1]), np.float32)

    # Both products are np.einsum's own loops, not BLAS: after a BLAS call numpy's OpenBLAS threads spin
    # for a while and took the cores from ONNX Runtime's next batch (its backbone time 2.5 -> 3.4 s on
    # 100 photos, 2 cores); the products themselves are a few million multiply-adds.
    def _head(self, features: np.ndarray) -> np.ndarray:
        """The mean over members of each head's softmax (as Ensemble averages them)."""
        logits = np.einsum("nd,mcd->mnc", features, self.weights) + self.biases[:, None, :]
        logits -= logits.max(axis=2, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=2, keepdims=True)).mean(0).astype(np.float32)

    def _familiar(self, features: np.ndarray) -> list[tuple[float, bool]]:
        """(familiarity, familiar) per row, as classify.familiarity.Familiarity.score computes them."""
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        similarities = np.einsum("nd,bd->nb", features / np.maximum(norms, 1e-12), self.bank)
        kth = -np.partition(-similarities, self.k - 1, axis=1)[:, self.k - 1]
        distances = (1.0 - kth).astype(np.float32)
        farther = len(self.held_out) - np.searchsorted(self.held_out, distances, side="left")
        shares = farther / max(1, len(self.held_out))
        return [(float(share), bool(d <= self.threshold)) for share, d in zip(shares, distances)]

    def probabilities(self, images_uint8: np.ndarray) -> np.ndarray:
        return self._head(self.features(images_uint8))

    def scores(self, images_uint8: np.ndarray) -> tuple[np.ndarray, list[tuple[float, bool]]]:
        features = self.features(images_uint8)
        return self._head(features), self._familiar(features)


def onnx_runtime():
    """onnxruntime, or None where torch must serve (not installed, or PASTURE_BACKBONE_RUNTIME=torch)."""
    if os.environ.get(RUNTIME_VARIABLE) == "torch":
        return None
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def probe_run_scorer(run: str | os.PathLike, device: str | None = "auto") -> ProbeRunScorer | None:
    """The run scored by ONNX Runtime and numpy, or None where classify.trained must serve (see the
    module's docstring: no probe.npz, a changed checkpoint, no cached graph, TTA, a GPU, no ONNX Runtime)."""
    run = Path(run)
    device = (device or "auto").strip().lower()
    if device not in ("auto", "cpu") or (device == "auto" and _gpu_for_auto()):
        return None
    ort = onnx_runtime()
    if ort is None or not cache_enabled() or not (run / PROBE_FILE).is_file():
        return None
    try:
        config = json.loads((run / "config.json").read_text())
        if config["recipe"].get("tta") or not (run / "metrics.json").is_file():
            return None
        with np.load(run / PROBE_FILE, allow_pickle=False) as loaded:
            stored = {name: loaded[name] for name in loaded.files}
        graph = cache_root() / "backbones" / str(stored["graph"])
        if int(stored["format"]) != FORMAT or not graph.is_file():
            return None
        if str(stored["checkpoint"]) != file_digest(run / "checkpoint.pt"):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # anything unexpected: the torch path reads the run and says what is wrong
    options = ort.SessionOptions()
    try:
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception:  # a damaged cache file: the torch path builds it again
        return None
    return ProbeRunScorer(config, stored, session)
