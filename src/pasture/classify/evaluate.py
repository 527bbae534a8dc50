"""Accuracy with its Wilson 95% interval and n, per-class accuracy, confusion matrix; batched inference;
and score_run, the one function that turns a trained model into its RunRecord."""

from __future__ import annotations

import torch
from torch import nn

from pasture.core.device import model_device
from pasture.core.record import RunRecord
from pasture.core.stats import wilson_interval


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float32 in [0, 1], the input every pasture model takes."""
    return images_uint8.float().div_(255.0)


def shift(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move images by (dy, dx) pixels, filling the uncovered border by reflection."""
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return images
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="reflect")
    height, width = images.shape[2:]
    return padded[:, :, pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def tta_views(images: torch.Tensor) -> list[torch.Tensor]:
    """Test-time augmentation: the image and its mirror, each also shifted by +/- 1/16 of the side."""
    step = max(1, images.shape[-1] // 16)
    views = []
    for view in (images, images.flip(-1)):
        views.extend([view, shift(view, step, step), shift(view, -step, -step)])
    return views


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    images_uint8: torch.Tensor,
    batch_size: int = 64,
    tta: bool = False,
) -> torch.Tensor:
    """Softmax probabilities N x classes (on the CPU), in eval mode (dropout off), in batches on the
    model's device.

    With `tta`, the probabilities are averaged over the views of `tta_views`.
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    chunks = []
    for start in range(0, images_uint8.shape[0], batch_size):
        images = to_float(images_uint8[start : start + batch_size].to(device))
        views = tta_views(images) if tta else [images]
        chunks.append(torch.stack([torch.softmax(model(view), dim=1) for view in views]).mean(0).cpu())
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


def accuracy_report(predicted: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Accuracy, Wilson 95% interval, n, per-class accuracy and confusion (rows: true, cols: predicted)."""
    n = int(labels.shape[0])
    correct = int((predicted == labels).sum())
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    for true_label, predicted_label in zip(labels.tolist(), predicted.tolist()):
        confusion[true_label, predicted_label] += 1
    per_class = {}
    for index, name in enumerate(classes):
        n_class = int(confusion[index].sum())
        if n_class == 0:
            continue  # a class absent from these images has no accuracy to report
        right = int(confusion[index, index])
        per_class[name] = {
            "accuracy": right / n_class,
            "ci95": list(wilson_interval(right, n_class)),
            "n": n_class,
        }
    return {
        "accuracy": correct / n if n else float("nan"),
        "ci95": list(wilson_interval(correct, n)),
        "n": n,
        "correct": correct,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "classes": list(classes),
    }


def evaluate_model(
    model: nn.Module,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    tta: bool = False,
) -> dict:
    probabilities = predict_probabilities(model, images_uint8, tta=tta)
    return accuracy_report(probabilities.argmax(1), labels, classes)


def test_probabilities(result, dataset, recipe) -> torch.Tensor:
    """The trained model's probabilities on the test split, with the recipe's TTA: what score_run and
    the top-losses figure both read, computed once (or by the training, from cached features)."""
    if result.test_probabilities is not None:
        return result.test_probabilities
    return predict_probabilities(result.model, dataset.test.images, tta=recipe.tta)


def score_run(result, dataset, recipe, probabilities: torch.Tensor | None = None) -> RunRecord:
    """The one scoring of a finished training run: test split (with the recipe's TTA) and training
    split (plain), as a RunRecord; per group, and on groups the training never saw, when known.
    `result` is the TrainResult, `dataset` the Dataset it trained on; `probabilities` are
    test_probabilities(...) when the caller has them already."""
    if probabilities is None:
        probabilities = test_probabilities(result, dataset, recipe)
    predicted = probabilities.argmax(1)
    test = accuracy_report(predicted, dataset.test.labels, dataset.classes)
    if result.train_probabilities is not None:
        train = accuracy_report(result.train_probabilities.argmax(1), dataset.train.labels, dataset.classes)
    else:
        train = evaluate_model(result.model, dataset.train.images, dataset.train.labels, dataset.classes)
    per_group, unseen = {}, None
    if dataset.test.groups is not None:
        per_group = group_reports(predicted, dataset.test.labels, dataset.test.groups, dataset.classes)
        seen = set(dataset.train.groups or ())
        new = sorted(set(dataset.test.groups) - seen)
        if new:
            unseen = _subset_figure(predicted, dataset, lambda group: group not in seen)
            unseen["groups"] = new
            if len(new) < len(set(dataset.test.groups)):  # some test groups were seen in training too
                unseen["seen"] = _subset_figure(predicted, dataset, lambda group: group in seen)
                # Beyond its interval: the unseen figure's whole interval lies below the seen one's.
                unseen["gap_beyond_intervals"] = unseen["ci95"][1] < unseen["seen"]["ci95"][0]
    return RunRecord(
        classes=list(dataset.classes),
        model=recipe.model,
        recipe=recipe.name,
        test_accuracy=test["accuracy"],
        test_ci95=test["ci95"],
        n_test=test["n"],
        test_correct=test["correct"],
        per_class=test["per_class"],
        confusion=test["confusion"],
        train_accuracy=train["accuracy"],
        train_ci95=train["ci95"],
        n_train=train["n"],
        train_confusion=train["confusion"],
        epochs=len(result.history),
        final_train_loss=result.history[-1]["train_loss"] if result.history else None,
        train_seconds=result.seconds,
        diverged=result.nonfinite_loss,
        tta=recipe.tta,
        ensemble=recipe.ensemble,
        history=list(result.history),
        notes=dict(result.notes),
        per_group=per_group,
        unseen=unseen,
    )


def _subset_figure(predicted: torch.Tensor, dataset, keep) -> dict:
    """Accuracy, ci95 and n of the test images whose group passes `keep`."""
    chosen = torch.tensor([i for i, group in enumerate(dataset.test.groups) if keep(group)])
    report = accuracy_report(predicted[chosen], dataset.test.labels[chosen], dataset.classes)
    return {"accuracy": report["accuracy"], "ci95": report["ci95"], "n": report["n"]}


def group_reports(predicted: torch.Tensor, labels: torch.Tensor, groups: list[str], classes: list[str]) -> dict:
    """{group: accuracy, ci95, n, per_class} of predictions whose images come from each group."""
    reports = {}
    for group in sorted(set(groups)):
        chosen = torch.tensor([i for i, name in enumerate(groups) if name == group])
        report = accuracy_report(predicted[chosen], labels[chosen], classes)
        reports[group] = {key: report[key] for key in ("accuracy", "ci95", "n", "per_class")}
    return reports
