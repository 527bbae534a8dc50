"""Backbone features, computed once per image and cached on disk: what the probe's head, LP-FT, adapt,
ask and the doctor's label check all read.

The cache holds one small file per (backbone, weights, input size, image content): a changed image
has another content hash and is recomputed; an unchanged one is read back, across runs and seeds.
Location: $PASTURE_CACHE_DIR, else ~/.cache/pasture.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from pasture.classify.backbones import backbone_features, backbone_key, frozen_features
from pasture.classify.recipes import Recipe, with_overrides
from pasture.core.cache import ContentCache
from pasture.models import Classifier, create_model, timm_net

FEATURE_FORMAT = "v1"  # bump when feature extraction changes, so old cache entries are not reused
WEIGHTS_FORMAT = "v1"  # bump when what a backbone-weights cache entry holds changes


class FrozenBackbone:
    """The probe's frozen network, built only when something needs it: a feature the cache lacks, or its
    weights the first time (kept in the cache after, beside the features). A warm `pasture train` of the
    default then never builds its two EfficientNets: building them imports timm and torchvision (2 s)
    and takes 0.4 s more, of a run that needs only their cached features and their weights to save."""

    def __init__(self, recipe: Recipe, num_classes: int, device: str | torch.device):
        self.recipe, self.num_classes, self.device = recipe, num_classes, device
        self._network: Classifier | None = None
        self._weights: dict | None = None

    def network(self) -> Classifier:
        if self._network is None:
            recipe = self.recipe
            model = create_model(
                recipe.model, self.num_classes, recipe.image_size, weights=recipe.weights or "imagenet"
            )
            self._network = model.to(self.device)
        return self._network

    def _built_weights(self) -> dict:
        network = self.network()
        classifier = timm_net(network).get_classifier()
        head = {id(tensor) for tensor in classifier.state_dict(keep_vars=True).values()}
        state = network.state_dict(keep_vars=True)
        return {
            "state": {name: tensor.detach().cpu().clone() for name, tensor in state.items()},
            "head": [name for name, tensor in state.items() if id(tensor) in head],
        }

    def weights(self) -> dict:
        """{"state": the network's state dict, "head": the names of its classifier's tensors}."""
        if self._weights is None:
            key = backbone_key(self.recipe)
            if key is None:  # no identity to keep them under (a --weights file not here)
                self._weights = self._built_weights()
            else:
                self._weights = ContentCache("backbone-weights", what="backbone-weights cache").get(
                    hashlib.sha256(f"{WEIGHTS_FORMAT}|{key}|{self.num_classes}".encode()).hexdigest()[:20],
                    self._built_weights,
                    check=_weights_entry,
                )
        return self._weights

    def member_state(self, head: nn.Linear) -> dict:
        """A member's state dict: the frozen network's tensors (shared between members: torch.save writes
        a shared tensor once) and `head` as its classifier."""
        weights = self.weights()
        state = dict(weights["state"])
        weight_name, bias_name = sorted(weights["head"], key=lambda name: not name.endswith("weight"))
        state[weight_name], state[bias_name] = head.weight.detach().cpu().clone(), head.bias.detach().cpu().clone()
        return state


def _weights_entry(value) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("state"), dict)
        and all(isinstance(tensor, torch.Tensor) for tensor in value["state"].values())
        and isinstance(value.get("head"), list)
        and len(value["head"]) == 2
        and all(name in value["state"] for name in value["head"])
    )


class FeatureCache:
    """Per-image feature files under cache_root()/features/<backbone key>/<image hash>.pt (core.cache)."""

    def __init__(self, backbone_key: str, root: Path | None = None):
        self.backbone_key = backbone_key
        key = hashlib.sha256(f"{FEATURE_FORMAT}|{backbone_key}".encode()).hexdigest()[:20]
        self.cache = ContentCache(f"features/{key}", root=root, what="feature-cache")
        self.folder = self.cache.folder
        self.computed = 0
        self.reused = 0

    @staticmethod
    def image_key(image_uint8: torch.Tensor) -> str:
        return hashlib.sha256(image_uint8.contiguous().numpy().tobytes()).hexdigest()

    def features(self, model: Classifier | FrozenBackbone, images_uint8: torch.Tensor) -> torch.Tensor:
        """The images' features: read from the cache, computed by the backbone for those it lacks (a
        FrozenBackbone builds its network only if it must)."""
        keys = [self.image_key(image) for image in images_uint8]
        found: dict[int, torch.Tensor] = {}
        for index, key in enumerate(keys):
            stored = self.cache.read(key, lambda value: isinstance(value, torch.Tensor) and value.dim() == 1)
            if stored is not None:
                found[index] = stored
        missing = [index for index in range(len(keys)) if index not in found]
        if missing:
            if isinstance(model, FrozenBackbone):
                fresh = frozen_features(images_uint8[missing], self.backbone_key, model.device, model.network)
            else:
                fresh = backbone_features(model, images_uint8[missing], key=self.backbone_key)
            for index, feature in zip(missing, fresh):
                self.cache.write(keys[index], feature.clone())
                found[index] = feature
        self.computed += len(missing)
        self.reused += len(keys) - len(missing)
        return torch.stack([found[index] for index in range(len(keys))])


def feature_cache(recipe: Recipe) -> FeatureCache:
    """The feature cache of a recipe's frozen backbone (model, weights, input size): one per backbone,
    shared by the probe, LP-FT and the doctor's label check."""
    return FeatureCache(backbone_key(with_overrides(recipe, pretrained="probe")) or "")
