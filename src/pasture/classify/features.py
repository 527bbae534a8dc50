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

from pasture.classify.backbones import backbone_features, backbone_key
from pasture.classify.recipes import Recipe, with_overrides
from pasture.core.cache import ContentCache
from pasture.models import Classifier

FEATURE_FORMAT = "v1"  # bump when feature extraction changes, so old cache entries are not reused


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

    def features(self, model: Classifier, images_uint8: torch.Tensor) -> torch.Tensor:
        keys = [self.image_key(image) for image in images_uint8]
        found: dict[int, torch.Tensor] = {}
        for index, key in enumerate(keys):
            stored = self.cache.read(key, lambda value: isinstance(value, torch.Tensor) and value.dim() == 1)
            if stored is not None:
                found[index] = stored
        missing = [index for index in range(len(keys)) if index not in found]
        if missing:
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
