"""Export a finished run as one self-contained ONNX file, checked against the run itself.

The graph takes what pasture's decoding gives, uint8 RGB images N x 3 x S x S at the run's input size
(resizing stays outside: ONNX resize differs from Pillow's), and returns class probabilities: scaling to
[0, 1], the input normalisation, the probe head, every ensemble member (averaged) and the run's
test-time augmentation are inside. Classes, input size, pasture's version and the run's test accuracy
with its interval and n are in the metadata.

Why the TorchScript exporter (dynamo=False): measured on this project's machine, the dynamo exporter took
52 s for effnet-lite0 against 6 s, needs onnxscript and writes weights to a side file by default; and
the graph is exported at the run's fixed image size (a dynamic height and width did not finish in 8
minutes for EfficientNet's SAME padding). Only the batch is dynamic.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pasture import __version__
from pasture.classify.backbones import backbone_features, generated_images
from pasture.classify.evaluate import predict_probabilities, tta_views
from pasture.classify.familiarity import Familiarity
from pasture.classify.trained import finished_run_config, heads_probabilities, load_run, run_split
from pasture.core.errors import UserError
from pasture.core.extras import optional_import
from pasture.core.paths import check_output_file
from pasture.core.runs import atomic_write_bytes, read_checked_json
from pasture.export.onnx_runner import OnnxClassifier
from pasture.models import Classifier as Network
from pasture.models import Ensemble, timm_net

OPSET = 17
PARITY_LIMIT = 1e-4  # max |p_torch - p_onnxruntime| an export may have


class ExportGraph(nn.Module):
    """uint8 images -> class probabilities, exactly as pasture.classify.evaluate.predict_probabilities."""

    def __init__(self, model: nn.Module, tta: bool):
        super().__init__()
        self.model, self.tta = model, tta

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        images = images_uint8.float() / 255.0
        views = tta_views(images) if self.tta else [images]
        return torch.stack([torch.softmax(self.model(view), dim=1) for view in views]).mean(0)


class FamiliarExportGraph(ExportGraph):
    """uint8 images -> (probabilities, familiarity, distance), as trained.LoadedRun.scores: one backbone
    pass gives the features, the heads read them (with TTA, the shifted views give the probabilities),
    and the k-NN distance to the bank of training features (a float16 constant: 0.5 MB for 100 photos of
    the default's 2,560 features) is read as the share of held-out training photos at least as far."""

    bank: torch.Tensor
    held_out: torch.Tensor

    def __init__(self, model: nn.Module, tta: bool, familiarity: Familiarity):
        super().__init__(model, tta)
        self.register_buffer("bank", familiarity.bank.half())
        self.register_buffer("held_out", familiarity.held_out.float())
        self.k = max(1, min(familiarity.k, len(familiarity.bank)))

    def forward(self, images_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        members = list(self.model.members) if isinstance(self.model, Ensemble) else [self.model]
        first = cast(Network, members[0])
        net = timm_net(first)
        features = net.forward_head(
            net.forward_features(first.normalize(images_uint8.float() / 255.0)), pre_logits=True
        )
        if self.tta:
            probabilities = super().forward(images_uint8)
        else:
            heads = [timm_net(member).get_classifier() for member in members]
            probabilities = torch.stack([torch.softmax(head(features), dim=1) for head in heads]).mean(0)
        similarity = F.normalize(features, dim=1) @ self.bank.float().T
        distance = 1.0 - similarity.topk(self.k, dim=1).values[:, -1]
        familiarity = (self.held_out[None, :] >= distance[:, None]).float().mean(1)
        return probabilities, familiarity, distance


def _onnx():
    return optional_import("onnx", "pasture export", "export")


CHECK_PHOTOS = 32  # photos an export is checked on: a graph that converts wrongly is wrong on every photo;
# on all 100 test photos of cowhorse-dev, torch's pass alone was 6.5 s of a 20 s `pasture export` (issue 42)


def check_images(run: Path, config: dict, count: int = CHECK_PHOTOS) -> tuple[torch.Tensor, str]:
    """`count` of the run's own test images for the parity check (its data folder, read again; evenly
    spaced, so every class is in it), else generated images with photo-like structure (smooth colour
    fields and edges) when the data has moved."""
    dataset = run_split(config)
    if dataset is not None:
        total = len(dataset.test)
        if total <= count:
            return dataset.test.images, f"the run's {total} test images"
        rows = torch.linspace(0, total - 1, count).round().long()
        return dataset.test.images[rows], f"{count} of the run's {total} test images"
    data = config.get("identity", {}).get("data")
    images = generated_images(config["image_size"], count)
    return images, f"{count} generated images (the run's data folder {data} is not here)"


def run_reference(run: Path, model: nn.Module, images: torch.Tensor, tta: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The run's own probabilities on `images`, by torch, and for a run with a familiarity bank its k-NN
    distances. A probe's backbone runs once for both (its heads read the features as the model does;
    with TTA the model sees the shifted views): `pasture export` of the default spent 16 s of its 28 in
    torch's two passes over the same 100 test photos (issue 42)."""
    familiarity = Familiarity.load(run)
    if familiarity is None:
        return predict_probabilities(model, images, tta=tta).numpy(), None
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    features = backbone_features(cast(Network, members[0]), images)
    distances = familiarity.score(features)["distance"].numpy()
    if tta:
        return predict_probabilities(model, images, tta=True).numpy(), distances
    heads = [timm_net(member).get_classifier() for member in members]
    return heads_probabilities(heads, features).numpy(), distances


def checked_parity(
    run: Path,
    config: dict,
    model: nn.Module,
    tta: bool,
    outputs,
    what: str,
    where: Path,
) -> tuple[float, float | None, str, int]:
    """(max |p_run - p_export|, max |distance_run - distance_export| or None, what it was checked on, how
    many images): `outputs` (uint8 images N x 3 x S x S as numpy -> the exported model's outputs:
    probabilities, and familiarity and distance where it has them) against the run's own on
    check_images. A difference of PARITY_LIMIT or more is a
    UserError naming `where` and the runtime (`what`)."""
    images, checked_on = check_images(run, config)
    expected, expected_distances = run_reference(run, model, images, tta)
    exported = outputs(images.numpy())
    found = [(f"{what} differs from the run", expected, exported[0])]
    if expected_distances is not None and len(exported) == 3:
        found.append(("its familiarity distances differ from the run's", expected_distances, exported[2]))
    parities = []
    for difference, reference, got in found:
        parity = float(np.abs(reference - got).max())
        if not parity < PARITY_LIMIT:
            raise UserError(
                f"{where}: {difference} by {parity:.2e} (limit {PARITY_LIMIT:g}); the export is not faithful, "
                "so it was not kept"
            )
        parities.append(parity)
    return parities[0], parities[1] if len(parities) > 1 else None, checked_on, int(len(images))


def fp32_export(run: Path, familiar: bool = True) -> tuple[nn.Module, dict, bool, bytes, dict]:
    """(the run's model, its config, whether it uses TTA, the fp32 ONNX file's bytes, its metadata).
    With `familiar` and a run that keeps its training photos' features, the graph also outputs each
    image's familiarity and distance (FamiliarExportGraph) and the metadata says the threshold."""
    _onnx()  # the extra, said before any work
    model, config = load_run(run)
    tta = bool(config["recipe"].get("tta", False))
    familiarity = Familiarity.load(run) if familiar else None
    graph = (ExportGraph(model, tta) if familiarity is None else FamiliarExportGraph(model, tta, familiarity)).eval()
    outputs = ["probabilities"] + ([] if familiarity is None else ["familiarity", "distance"])
    size = config["image_size"]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on constant folding are not for users
        torch.onnx.export(
            graph,
            (torch.zeros(2, 3, size, size, dtype=torch.uint8),),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to a file object; the signature names paths only
            dynamo=False,
            input_names=["images"],
            output_names=outputs,
            opset_version=OPSET,
            dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]},
        )
    metadata = run_metadata(run, config, tta)
    if familiarity is not None:
        metadata.update(familiarity_metadata(familiarity))
    return model, config, tta, buffer.getvalue(), metadata


def familiarity_metadata(familiarity: Familiarity) -> dict:
    """What an export with familiarity outputs says of them (strings, as all metadata)."""
    summary = familiarity.summary()
    return {
        "output": "class probabilities (N x classes, in the order of 'classes'); familiarity (N): the share of "
        "held-out training photos at least as far from the rest; distance (N): the k-NN cosine distance to the "
        "training photos, unfamiliar above familiarity_threshold",
        "familiarity_threshold": repr(float(summary["threshold"])),
        "familiarity_kept": str(summary["kept"]),
        "familiarity_method": summary["method"],
        "familiarity_chosen_on": summary["chosen_on"],
    }


def run_metadata(run: Path, config: dict, tta: bool, precision: str = "fp32") -> dict:
    """What every export carries (strings): classes, input size and preprocessing, output, precision,
    and the run's test accuracy with its interval and n."""
    size = config["image_size"]
    metrics = read_checked_json(run / "metrics.json", what="finished run")
    return {
        "classes": json.dumps(config["classes"]),
        "image_size": str(size),
        "pasture_version": __version__,
        "model": config["model"],
        "recipe": config["recipe"]["name"],
        "tta": str(tta).lower(),
        "ensemble": str(config["recipe"].get("ensemble", 1)),
        "input": f"uint8 RGB, N x 3 x {size} x {size}: shorter side resized to {size} (bicubic) and centre-cropped",
        "output": "class probabilities, N x classes, in the order of 'classes'",
        "precision": precision,
        "test_accuracy": str(metrics.get("test_accuracy")),
        "test_ci95": json.dumps(metrics.get("test_ci95")),
        "n_test": str(metrics.get("n_test")),
    }


def with_metadata(data: bytes, metadata: dict) -> bytes:
    """The ONNX file `data` with `metadata` as its metadata_props, checked."""
    onnx = _onnx()
    proto = onnx.load_from_string(data)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def output_file(run: Path, out: str | os.PathLike | None, default_name: str) -> Path:
    """--out (default RUN/<default_name>), which must be an .onnx file pasture may write."""
    path = Path(out) if out is not None else run / default_name
    if path.suffix != ".onnx":
        raise UserError(f"--out {path}: name the file *.onnx")
    check_output_file(path, "--out")  # before the export's work, naming the user's file
    return path


def export_onnx(run: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """Write RUN's model as an ONNX file (default RUN/model.onnx) and check it against the run on its
    test images with ONNX Runtime. Returns what was written and measured; a parity error above
    PARITY_LIMIT is a UserError (and nothing is left behind)."""
    run = Path(run)
    finished_run_config(run)  # a folder that is not a finished run is said before --out
    out = output_file(run, out, "model.onnx")
    model, config, tta, exported, metadata = fp32_export(run)
    data = with_metadata(exported, metadata)
    atomic_write_bytes(out, data)
    try:
        runner = OnnxClassifier(out)
        parity, familiar_parity, where, checked = checked_parity(
            run, config, model, tta, runner.outputs, "ONNX Runtime", out
        )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return {
        "file": str(out),
        "format": "onnx",
        "bytes": len(data),
        "parity_max_abs": parity,
        "familiarity_parity_max_abs": familiar_parity,
        "checked_on": where,
        "n_checked": checked,
        "opset": f"ONNX opset {OPSET}",
        "runtime": "onnxruntime",
        "metadata": metadata,
    }
