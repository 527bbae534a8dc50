"""Linear probe on a frozen pretrained backbone: features computed once per image and cached on disk.

The cache holds one small file per (backbone, weights, input size, image content): a changed image
has another content hash and is recomputed; an unchanged one is read back, across runs and seeds.
Location: $PASTURE_CACHE_DIR, else ~/.cache/pasture. Training the head on cached features takes
seconds; the mirror image of every training photo is added as a second feature (cheap augmentation).
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pasture.classify.evaluate import to_float
from pasture.classify.recipes import Recipe, apply_schedule, class_weights, get_recipe, with_overrides
from pasture.classify.trained import CHECKPOINT_FORMAT, MEMBER_SEED_STRIDE, TrainResult, build_members
from pasture.core.defaults import cache_root
from pasture.core.device import model_device
from pasture.core.runs import atomic_torch_save, write_jsonl
from pasture.core.runtime import progress_bar, seed_everything, stop_point
from pasture.data import Dataset
from pasture.models import create_model
from pasture.models.pretrained import imagenet_weights_path

FEATURE_FORMAT = "v1"  # bump when feature extraction changes, so old cache entries are not reused


def weights_identity(weights: str) -> str:
    """A short id of a weights source: the package's weights by name and size, a user file by content."""
    if weights == "imagenet":
        return f"imagenet-{imagenet_weights_path().stat().st_size}"
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@torch.no_grad()
def backbone_features(model: nn.Module, images_uint8: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Pooled features (N x D, on the CPU) of a timm backbone inside a pasture Classifier, in eval mode,
    computed in batches on the model's device."""
    model.eval()
    device = model_device(model)
    chunks = []
    for start in range(0, images_uint8.shape[0], batch_size):
        normalised = model.normalize(to_float(images_uint8[start:start + batch_size].to(device)))
        chunks.append(model.net.forward_head(model.net.forward_features(normalised), pre_logits=True).cpu())
    return torch.cat(chunks)


class FeatureCache:
    """Per-image feature files under cache_root()/features/<backbone key>/<image hash>.pt."""

    def __init__(self, backbone_key: str, root: Path | None = None):
        key = hashlib.sha256(f"{FEATURE_FORMAT}|{backbone_key}".encode()).hexdigest()[:20]
        self.folder = (root or cache_root()) / "features" / key
        self.computed = 0
        self.reused = 0

    @staticmethod
    def image_key(image_uint8: torch.Tensor) -> str:
        return hashlib.sha256(image_uint8.contiguous().numpy().tobytes()).hexdigest()

    def features(self, model: nn.Module, images_uint8: torch.Tensor) -> torch.Tensor:
        keys = [self.image_key(image) for image in images_uint8]
        found: dict[int, torch.Tensor] = {}
        for index, key in enumerate(keys):
            path = self.folder / f"{key}.pt"
            if path.is_file():
                try:
                    found[index] = torch.load(path, map_location="cpu", weights_only=True)
                except Exception:  # a damaged entry is recomputed, never trusted
                    pass
        missing = [index for index in range(len(keys)) if index not in found]
        if missing:
            fresh = backbone_features(model, images_uint8[missing])
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                for index, feature in zip(missing, fresh):
                    atomic_torch_save(feature.clone(), self.folder / f"{keys[index]}.pt")
            except OSError:
                pass  # an unwritable cache only costs time
            for index, feature in zip(missing, fresh):
                found[index] = feature
        self.computed += len(missing)
        self.reused += len(keys) - len(missing)
        return torch.stack([found[index] for index in range(len(keys))])


def feature_cache(recipe: Recipe) -> FeatureCache:
    """The feature cache of a recipe's backbone (model, weights, input size): one per backbone, shared
    by the probe, LP-FT and the doctor's label check."""
    return FeatureCache(f"{recipe.model}|{weights_identity(recipe.weights or 'imagenet')}|{recipe.image_size}")


def fit_linear_head(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, recipe: Recipe, generator: torch.Generator,
    test_features: torch.Tensor | None = None, test_labels: torch.Tensor | None = None, on_epoch=None,
) -> tuple[nn.Linear, list[dict]]:
    """Logistic regression on features: AdamW over mini-batches with the recipe's schedule."""
    head = nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(labels) / recipe.batch_size)
    loss_weights = class_weights(labels, num_classes, recipe)  # None unless balance_classes
    history = []
    for epoch in range(recipe.epochs):
        stop_point()
        order = torch.randperm(len(labels), generator=generator)
        loss_sum, correct = 0.0, 0
        for batch_index in range(steps_per_epoch):
            indices = order[batch_index * recipe.batch_size:(batch_index + 1) * recipe.batch_size]
            apply_schedule(optimizer, recipe.lr, epoch * steps_per_epoch + batch_index, steps_per_epoch, recipe)
            logits = head(features[indices])
            loss = F.cross_entropy(logits, labels[indices], weight=loss_weights,
                                   label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(indices)
            correct += int((logits.argmax(1) == labels[indices]).sum())
        record = {"epoch": epoch + 1, "train_loss": loss_sum / len(labels), "train_accuracy": correct / len(labels)}
        if test_features is not None:
            with torch.no_grad():
                predicted = head(test_features).argmax(1)
            record["test_accuracy"] = float((predicted == test_labels).float().mean())
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return head, history


def _copy_head(model: nn.Module, head: nn.Linear) -> None:
    classifier = model.net.get_classifier()
    with torch.no_grad():
        classifier.weight.copy_(head.weight)
        classifier.bias.copy_(head.bias)


def _probe_features(model: nn.Module, dataset: Dataset, recipe: Recipe) -> tuple[FeatureCache, torch.Tensor, torch.Tensor]:
    """Cached features of the training images and their mirror images, with matching labels."""
    cache = feature_cache(recipe)
    images = dataset.train.images
    features = torch.cat([cache.features(model, images), cache.features(model, images.flip(-1))])
    return cache, features, torch.cat([dataset.train.labels, dataset.train.labels])


def init_head_from_probe(model: nn.Module, dataset: Dataset, recipe: Recipe, generator: torch.Generator) -> None:
    """LP-FT (Kumar et al. 2022): before fine-tuning, fit the head on frozen features, so the first
    gradient steps do not push random-head noise into the pretrained backbone."""
    _, features, labels = _probe_features(model, dataset, recipe)
    head_recipe = with_overrides(get_recipe("probe"), balance_classes=recipe.balance_classes)
    head, _ = fit_linear_head(features, labels, len(dataset.classes), head_recipe, generator)
    _copy_head(model, head)


def train_probe(
    dataset: Dataset, recipe: Recipe, seed: int, run_dir: str | Path | None = None, quiet: bool = True,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train linear heads (one per ensemble member) on frozen, cached backbone features; the backbone
    runs on `device`, the heads (a few thousand weights) on the CPU."""
    started = time.perf_counter()
    backbone = create_model(recipe.model, len(dataset.classes), recipe.image_size,
                            weights=recipe.weights or "imagenet").to(device)
    cache, features, labels = _probe_features(backbone, dataset, recipe)
    test_features = cache.features(backbone, dataset.test.images) if dataset.test is not None else None
    test_labels = dataset.test.labels if dataset.test is not None else None

    history: list[dict] = []
    member_states = []
    bar = progress_bar(recipe.epochs * recipe.ensemble, 0, quiet, desc="probe")

    def show(record):
        bar.set_postfix({"loss": f"{record['train_loss']:.3f}"}, refresh=False)
        bar.update(1)

    try:
        for member in range(recipe.ensemble):
            generator = seed_everything(seed + MEMBER_SEED_STRIDE * member)
            head, member_history = fit_linear_head(features, labels, len(dataset.classes), recipe, generator,
                                                   test_features, test_labels, on_epoch=show)
            for record in member_history:
                if recipe.ensemble > 1:
                    record["member"] = member + 1
            history.extend(member_history)
            _copy_head(backbone, head)
            member_states.append({key: value.detach().cpu().clone() for key, value in backbone.state_dict().items()})
    finally:
        bar.close()
    if run_dir is not None:
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "members": member_states, "history": history}, Path(run_dir) / "checkpoint.pt")
        write_jsonl(Path(run_dir) / "history.jsonl", history)
    return TrainResult(
        model=build_members(recipe, len(dataset.classes), member_states, device), history=history,
        seconds=time.perf_counter() - started,
        notes={"features_computed": cache.computed, "features_reused": cache.reused},
    )
