"""Where a model looked: Grad-CAM on the last convolutional layer, and occlusion sensitivity as a check
that needs no gradients, both through Captum (PyTorch's interpretability library).

Heatmaps are H x W in [0, 1] at the input size, for the class the model predicted. `pointing_game`
scores them against a known region (the planted-evidence sanity test of tests/test_explain.py).
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pasture.classify.calibration import plot_reliability
from pasture.classify.evaluate import predict_probabilities, score_run, test_probabilities, to_float
from pasture.core.errors import UserError
from pasture.core.extras import optional_import
from pasture.core.locks import folder_lock
from pasture.core.paths import display_name
from pasture.core.plots import plot_confusion, pyplot, save_figure
from pasture.core.runs import atomic_write_bytes, atomic_write_json, check_writable
from pasture.models import Ensemble


def _captum():
    return optional_import("captum.attr", "pasture explain", "explain", "captum")


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last convolutional layer of a classifier (paper-cnn's third conv, resnet-small's last block,
    EfficientNet-Lite0's conv_head): the layer Grad-CAM reads."""
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise UserError("explain: this model has no convolutional layer to read")
    return convs[-1]


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each map (N x H x W) scaled to [0, 1]; an all-zero map stays zero."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    return (maps - low) / (high - low).clamp_min(1e-12)


GRADCAM_BATCH = 2  # images a backward pass takes: 8 at 260 px through the default's two backbones peaked at 2.7 GB


def gradcam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Grad-CAM heatmaps (N x H x W in [0, 1]) of float images N x 3 x H x W for the `targets` classes;
    an ensemble's map is the mean of its members'. GRADCAM_BATCH images at a time: a training run's top
    losses took its peak memory from 0.9 to 2.7 GB in one pass of 8."""
    attr = _captum()
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    chunks = []
    for start in range(0, len(images), GRADCAM_BATCH):
        part, wanted = images[start : start + GRADCAM_BATCH], targets[start : start + GRADCAM_BATCH]
        maps = []
        for member in members:
            cam = attr.LayerGradCam(member, last_conv(member)).attribute(part, target=wanted, relu_attributions=True)
            maps.append(F.interpolate(cam.float(), size=part.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
        chunks.append(torch.stack(maps).mean(0).detach())
    return _normalise(torch.cat(chunks))


def occlusion(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Occlusion sensitivity (N x H x W in [0, 1]): how much the target's score drops when a grey square
    (1/8 of the side) covers each place. Model-agnostic: no gradients, no layer chosen.

    The squares tile the image (an 8 x 8 grid: 64 forward passes per photo, 16 per batch). Half-overlapping
    ones (15 x 15 = 225 passes, one per batch) took 45 s for two photos with the default probe's two
    backbones at 260 px; the app's Test page waits for this."""
    attr = _captum()
    side = images.shape[-1]
    window = max(2, side // 8)
    scores = attr.Occlusion(lambda x: torch.softmax(model(x), dim=1)).attribute(
        images,
        target=targets,
        sliding_window_shapes=(3, window, window),
        strides=(3, window, window),
        baselines=0.5,
        perturbations_per_eval=16,
    )
    return _normalise(scores.sum(1).clamp_min(0).detach())


def pointing_game(maps: torch.Tensor, region: torch.Tensor) -> float:
    """Share of maps whose hottest pixel lies in `region` (a bool H x W mask). Where several pixels tie
    for hottest (a tile of an occlusion map, an all-zero map), each counts for its share: argmax would
    pick the first, the top-left corner, and credit maps that point nowhere to a region there."""
    flat = maps.flatten(1)
    hottest = flat == flat.max(1, keepdim=True).values
    return float(((hottest & region.flatten()).sum(1) / hottest.sum(1)).mean())


def _overlay_png(
    image_uint8: torch.Tensor, cam: torch.Tensor | None, occluded: torch.Tensor | None, title: str, nearest: list[dict]
) -> bytes:
    """The photo and its Grad-CAM and occlusion maps (those given); under them, its nearest training
    photos (class and distance) when the run keeps them."""
    plt = pyplot()
    rows = 2 if nearest else 1
    maps = [
        ("photo", None),
        *((name, heat) for name, heat in (("Grad-CAM", cam), ("occlusion", occluded)) if heat is not None),
    ]
    figure, axes = plt.subplots(rows, 3, figsize=(9, 3.3 * rows), squeeze=False)
    for axis in axes[0][len(maps) :]:
        axis.axis("off")
    picture = image_uint8.permute(1, 2, 0).numpy()
    for axis, (name, heat) in zip(axes[0], maps):
        axis.imshow(picture)
        if heat is not None:
            axis.imshow(heat.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    if nearest:
        for axis, item in zip(axes[1], [*nearest, *([None] * 3)]):
            axis.axis("off")
            if item is None:
                continue
            with Image.open(io.BytesIO(item["thumbnail"])) as thumbnail:
                axis.imshow(thumbnail.convert("RGB"))
            axis.set_title(f"nearest training photo: {item['class']}, distance {item['distance']:.2f}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def occlusion_png(model: nn.Module, image_uint8: torch.Tensor, title: str) -> bytes:
    """The photo and its occlusion map for the class the model gives it (the app's button: 64 forward
    passes, seconds with the default probe, so it is made only when asked for)."""
    probabilities = predict_probabilities(model, image_uint8[None], tta=False)
    device = next(model.parameters()).device
    target = probabilities.argmax(1).to(device)
    occluded = occlusion(model, to_float(image_uint8[None].to(device)), target).cpu()[0]
    return _overlay_png(image_uint8, None, occluded, title, [])


def explain_images(
    model: nn.Module,
    config: dict,
    files: list[Path],
    images_uint8: torch.Tensor,
    out: str | os.PathLike,
    labels: list[int] | None = None,
    nearest: list[list[dict]] | None = None,
    occlusion_maps: bool = True,
) -> list[dict]:
    """For each image: the predicted label and probability, and OUT/<n>_<name>.png with the photo, its
    Grad-CAM and (with `occlusion_maps`) its occlusion map. `labels` (true classes), when given, are shown
    beside; `nearest` (each image's nearest training photos, {file, class, distance}:
    trained.LoadedRun.label) are drawn under it and listed in its row. Writes OUT/explanations.json too;
    returns its rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = config["classes"]
    probabilities = predict_probabilities(model, images_uint8, tta=False)
    predicted = probabilities.argmax(1)
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(files), 16):
        batch = to_float(images_uint8[start : start + 16].to(device)).requires_grad_(False)
        targets = predicted[start : start + 16].to(device)
        cams = gradcam(model, batch, targets).cpu()
        occluded = occlusion(model, batch, targets).cpu() if occlusion_maps else None
        for offset, path in enumerate(files[start : start + 16]):
            index = start + offset
            label, probability = classes[int(predicted[index])], float(probabilities[index].max())
            title = f"{display_name(Path(path).name)}: {label} {probability:.0%}"
            if labels is not None:
                title += f" (true: {classes[labels[index]]})"
            near = nearest[index] if nearest is not None else []
            name = f"{index:04d}_{''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in Path(path).stem)}.png"
            occluded_map = occluded[offset] if occluded is not None else None
            png = _overlay_png(images_uint8[index], cams[offset], occluded_map, title, near)
            atomic_write_bytes(out / name, png)
            row = {"file": display_name(path), "label": label, "probability": probability, "heatmap": name}
            if near:
                row["nearest"] = [
                    {"file": display_name(item["file"]), "class": item["class"], "distance": item["distance"]}
                    for item in near
                ]
            rows.append(row)
    atomic_write_json(out / "explanations.json", rows)
    return rows


# ----------------------------------------------------------------------------------------------
# Top losses: the test photos the model got most confidently wrong


TOP_LOSSES = 8
# A trained run's top_losses.png shows the photos without heatmaps (fastai's plot_top_losses default):
# Grad-CAM of 8 photos builds the networks, imports Captum and runs them backwards, 3.5 of a warm
# 9-12 s `pasture train` of the default, which otherwise never builds its networks (classify.probe).
HEATMAPS_HINT = "where the model looked: pasture evaluate RUN DATA --out DIR"
HEATMAPS_EXTRA = 'heatmaps: pip install -e ".[explain]"'


def top_loss_indices(probabilities: torch.Tensor, labels: torch.Tensor, k: int = TOP_LOSSES) -> list[int]:
    """The k images with the highest loss, -log p(true class), highest first: confidently wrong photos
    come before unsure ones, and a model that gets everything right shows its least sure photos."""
    losses = -torch.log(probabilities.gather(1, labels.view(-1, 1)).squeeze(1).clamp_min(1e-12))
    return torch.argsort(losses, descending=True, stable=True)[:k].tolist()


def plot_top_losses(
    model: nn.Module | None,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    probabilities: torch.Tensor,
    classes: list[str],
    files: list[str],
    path: str | os.PathLike,
    k: int = TOP_LOSSES,
) -> list[dict]:
    """PNG of the k highest-loss images: each photo with its Grad-CAM heatmap (for the predicted class;
    without Captum, or without a `model`, the photo alone), true and predicted label, p(predicted) and
    the loss. Returns the rows shown (file, true, predicted, probability, loss)."""
    chosen = top_loss_indices(probabilities, labels, k)
    predicted = probabilities.argmax(1)
    heat = None
    if model is not None and chosen and importlib.util.find_spec("captum") is not None:
        device = next(model.parameters()).device
        heat = gradcam(model, to_float(images_uint8[chosen].to(device)), predicted[chosen].to(device)).cpu()
    plt = pyplot()
    columns = max(1, min(4, len(chosen)))
    rows_needed = max(1, -(-len(chosen) // columns))
    # constrained layout: it leaves room for each two-line title and the suptitle (tight_layout drew the
    # second row's titles over the first row's photos)
    figure, axes = plt.subplots(
        rows_needed, columns, figsize=(2.6 * columns, 3.2 * rows_needed), squeeze=False, layout="constrained"
    )
    shown = []
    for slot, axis in enumerate(axes.flat):
        axis.axis("off")
        if slot >= len(chosen):
            continue
        index = chosen[slot]
        probability = float(probabilities[index, predicted[index]])
        loss = float(-torch.log(probabilities[index, labels[index]].clamp_min(1e-12)))
        axis.imshow(images_uint8[index].permute(1, 2, 0).numpy())
        if heat is not None:
            axis.imshow(heat[slot].numpy(), cmap="jet", alpha=0.4, vmin=0, vmax=1)
        wrong = int(predicted[index]) != int(labels[index])
        axis.set_title(
            f"true {classes[labels[index]]} / pred {classes[predicted[index]]} {probability:.0%}\n"
            f"{display_name(Path(files[index]).name)[:28]}  loss {loss:.2f}",
            fontsize=8,
            color="#a40000" if wrong else "black",
        )
        shown.append(
            {
                "file": display_name(files[index]),
                "true": classes[labels[index]],
                "predicted": classes[predicted[index]],
                "probability": probability,
                "loss": loss,
            }
        )
    if not chosen:
        axes.flat[0].text(0.5, 0.5, "no test images", ha="center", va="center")
    n_wrong = sum(1 for row in shown if row["true"] != row["predicted"])
    figure.suptitle(
        f"top losses, highest first: {n_wrong} of the {len(shown)} shown are wrong (red titles)"
        + ("" if heat is not None or not chosen else f"; {HEATMAPS_HINT if model is None else HEATMAPS_EXTRA}"),
        fontsize=9,
    )
    save_figure(figure, path)
    plt.close(figure)
    return shown


def score_and_plot_top_losses(result, dataset, recipe, folder: Path):
    """A trained run scored on its test split (evaluate.score_run -> RunRecord) and its top_losses.png
    written to `folder`: the one way a finished run is scored, for `train` (classify.finish.finish_run) and for an
    experiment's runs (study.run), which had each written it out."""
    probabilities = test_probabilities(result, dataset, recipe)  # for the record and the top losses
    record = score_run(result, dataset, recipe, probabilities)
    plot_top_losses(
        None,  # no heatmaps (HEATMAPS_HINT says where they are)
        dataset.test.images,
        dataset.test.labels,
        probabilities,
        dataset.classes,
        dataset.test.files,
        folder / "top_losses.png",
    )
    return record


def write_evaluation(
    out: Path, report: dict, model: nn.Module, images, labels: torch.Tensor, probabilities: torch.Tensor, header: dict
) -> None:
    """`pasture evaluate --out`: reliability.png, confusion.png, top_losses.png (the photos the model got
    most confidently wrong) and evaluation.json (`header` and the report, with the top losses)."""
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out)
    classes, name = report["classes"], Path(header["data"]).name
    with folder_lock(out, "evaluation"):
        plot_reliability(report["calibration"], out / "reliability.png", name)
        plot_confusion(
            report["confusion"],
            classes,
            out / "confusion.png",
            title=f"{name}: {report['correct']}/{report['n']} correct",
        )
        report["top_losses"] = plot_top_losses(
            model, images.images, labels, probabilities, classes, images.files, out / "top_losses.png"
        )
        atomic_write_json(out / "evaluation.json", {**header, **report})
