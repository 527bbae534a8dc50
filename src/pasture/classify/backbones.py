"""Pooled features of a frozen pretrained backbone, computed by ONNX Runtime where it can, torch otherwise.

Why: the default's backbones (EfficientNet-Lite0 at 224 px + Lite2 at 260 px) are depthwise-conv networks
that eager PyTorch runs poorly on a CPU: `pasture predict RUN` on 100 photos took 34 s against 7.4 s for
the same model exported to ONNX (issue 42). So a frozen backbone (a probe's: its weights never change)
is exported once per machine, model, weights and input size to an ONNX graph (uint8 images in, pooled
features out) under cache_root()/backbones/, checked against torch on generated images, and run by ONNX
Runtime from then on; torch stays for everything that trains weights, for backbones that are not frozen,
and as the fallback (ONNX Runtime missing, a graph that fails its check, a GPU, PASTURE_BACKBONE_RUNTIME=torch).
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pasture.classify.evaluate import to_float
from pasture.classify.probe_file import ORT_BATCH, file_digest, onnx_runtime
from pasture.classify.recipes import Recipe
from pasture.core.defaults import cache_enabled, cache_root
from pasture.core.device import model_device
from pasture.core.progress import work_bar
from pasture.core.runs import atomic_write_bytes
from pasture.models import Classifier, timm_net
from pasture.models.pretrained import imagenet_identity

GRAPH_FORMAT = "v1"  # bump when the exported graph changes, so old cached graphs are not reused
PARITY_LIMIT = 1e-3  # max |feature_torch - feature_onnxruntime| (features of order 0.1-5) a graph may have
OPSET = 17

_sessions: dict[str, object] = {}  # graph key -> an ONNX Runtime session, or None where torch must serve
_lock = threading.Lock()


class FeatureGraph(nn.Module):
    """uint8 images -> the backbone's pooled features, as backbone_features computes them in torch."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        net = timm_net(self.model)
        return net.forward_head(
            net.forward_features(self.model.normalize(images_uint8.float() / 255.0)), pre_logits=True
        )


def _torch_features(model: Classifier, images_uint8: torch.Tensor) -> torch.Tensor:
    device = model_device(model)
    net = timm_net(model)
    normalised = model.normalize(to_float(images_uint8.to(device)))
    return net.forward_head(net.forward_features(normalised), pre_logits=True).cpu()


def generated_images(size: int, count: int = 4) -> torch.Tensor:
    """Generated uint8 images with photo-like structure (smooth colour fields and edges), seeded: what a
    graph is checked on when no photo is at hand (here, and an export whose run's data has moved)."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(count, 3, 4, 4, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    edges = (torch.rand(count, 1, size, size, generator=generator) > 0.97).float()
    return ((0.8 * smooth + 0.2 * edges).clamp(0, 1) * 255).round().to(torch.uint8)


def _graph_bytes(model: Classifier, size: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on constant folding are not for users
        torch.onnx.export(
            FeatureGraph(model).eval(),
            (torch.zeros(2, 3, size, size, dtype=torch.uint8),),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to a file object; the signature names paths only
            dynamo=False,
            input_names=["images"],
            output_names=["features"],
            opset_version=OPSET,
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
        )
    return buffer.getvalue()


def _graph_key(key: str, size: int) -> str:
    return f"{GRAPH_FORMAT}|{torch.__version__}|{key}|{size}"


def _graph_path(full: str):
    return cache_root() / "backbones" / f"{hashlib.sha256(full.encode()).hexdigest()[:20]}.onnx"


def graph_file(key: str, size: int):
    """The cached ONNX graph of a frozen backbone, checked when it was built, or None when it is not in
    the cache (never built here, the cache off, or torch serving)."""
    path = _graph_path(_graph_key(key, size))
    return path if cache_enabled() and path.is_file() and onnx_runtime() is not None else None


def _new_session(ort, data: bytes):
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def cached_session(key: str, size: int):
    """The session of a frozen backbone whose graph is built already (in this process, or in the cache
    folder), or None: a finished probe run then predicts without building its torch backbones at all
    (timm's two EfficientNets took 3.5 s of a 9 s predict on 100 photos)."""
    full = _graph_key(key, size)
    with _lock:
        if full in _sessions:
            return _sessions[full]
        ort, path = onnx_runtime(), _graph_path(full)
        if ort is None or not (cache_enabled() and path.is_file()):
            return None
        try:
            session = _new_session(ort, path.read_bytes())
        except Exception:  # a damaged cache file: the model's path builds it again
            return None
        _sessions[full] = session
        return session


def _session(model: Classifier, key: str, size: int):
    """The ONNX Runtime session of `model`'s backbone at `size` (built, cached and checked once), or None
    where torch must compute the features."""
    if model_device(model).type == "cpu" and (session := cached_session(key, size)) is not None:
        return session
    full = _graph_key(key, size)
    with _lock:
        if full in _sessions:
            return _sessions[full]
        _sessions[full] = None  # until it is shown to work
        ort = onnx_runtime()
        if ort is None or model_device(model).type != "cpu":
            return None
        try:
            data = _graph_bytes(model, size)
            session = _new_session(ort, data)
            images = generated_images(size)
            with torch.no_grad():
                expected = _torch_features(model, images).numpy()
            parity = float(np.abs(expected - session.run(None, {"images": images.numpy()})[0]).max())
        except Exception as error:  # an exporter or runtime that cannot take this network: torch serves
            warnings.warn(f"ONNX Runtime cannot run this backbone ({type(error).__name__}); using torch", stacklevel=2)
            return None
        if not parity < PARITY_LIMIT:
            warnings.warn("ONNX Runtime's backbone features differ from torch's; using torch", stacklevel=2)
            return None
        if cache_enabled():  # checked once, here: a graph read back from the cache is trusted by its key
            path = _graph_path(full)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        _sessions[full] = session
        return session


def session_features(session, images_uint8: torch.Tensor, batch_size: int = ORT_BATCH) -> torch.Tensor:
    """Pooled features of uint8 images by an ONNX Runtime backbone session, in batches, with progress."""
    chunks = []
    with work_bar(images_uint8.shape[0], "features") as bar:
        for start in range(0, images_uint8.shape[0], batch_size):
            batch = images_uint8[start : start + batch_size].contiguous().numpy()
            chunks.append(torch.from_numpy(session.run(None, {"images": batch})[0]))
            bar.update(len(batch))
    return torch.cat(chunks)


def weights_identity(weights: str, model: str = "effnet-lite0") -> str:
    """A short id of a weights source: the package's weights by name and size, a user file by content."""
    if weights == "imagenet":
        return f"imagenet-{imagenet_identity(model)}"
    return file_digest(weights)[:16]


def backbone_key(recipe: Recipe) -> str | None:
    """The identity of a recipe's frozen backbone (model, weights, input size): the key of its feature
    cache and of its ONNX Runtime graph; None for a recipe whose backbone trains (its features change)."""
    if recipe.pretrained != "probe":
        return None
    try:
        identity = weights_identity(recipe.weights or "imagenet", recipe.model)
    except OSError:  # a run whose --weights file is not here: its checkpoint holds them; torch serves
        return None
    return f"{recipe.model}|{identity}|{recipe.image_size}"


def frozen_features(
    images_uint8: torch.Tensor, key: str | None, device: str | torch.device, network: Callable[[], Classifier]
) -> torch.Tensor:
    """Pooled features of a frozen backbone (`key`: its identity, backbone_key): by its ONNX graph when
    this machine has it cached and the backbone runs on the CPU, without building the torch network (a
    warm train, a loaded probe run); else backbone_features of `network()` (built by the call)."""
    if key is not None and torch.device(device).type == "cpu":
        session = cached_session(key, images_uint8.shape[-1])
        if session is not None:
            return session_features(session, images_uint8)
    return backbone_features(network(), images_uint8, key=key)


@torch.no_grad()
def backbone_features(
    model: Classifier, images_uint8: torch.Tensor, batch_size: int = 32, key: str | None = None
) -> torch.Tensor:
    """Pooled features (N x D, on the CPU) of a timm backbone inside a pasture Classifier, in eval mode,
    in batches. With `key` (the frozen backbone's identity: model, weights, size; probe.backbone_key),
    by ONNX Runtime when it is installed and its graph passes the check; else by torch on the model's
    device."""
    model.eval()
    session = _session(model, key, images_uint8.shape[-1]) if key is not None and len(images_uint8) else None
    if session is not None:
        return session_features(session, images_uint8)
    chunks = []
    with work_bar(images_uint8.shape[0], "features") as bar:
        for start in range(0, images_uint8.shape[0], batch_size):
            batch = images_uint8[start : start + batch_size]
            chunks.append(_torch_features(model, batch))
            bar.update(len(batch))
    return torch.cat(chunks)
