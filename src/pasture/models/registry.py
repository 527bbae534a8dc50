"""A registry of classifiers created by name, as timm's create_model: `create_model("paper-cnn", 2, 64)`.

Every model returned takes float images in [0, 1] (N x 3 x S x S) and returns logits (N x classes);
input normalisation lives inside the model (`InputNormalize`), so training, evaluation and prediction
can never disagree about it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import torch
from torch import nn

from pasture.core.errors import UserError


class InputNormalize(nn.Module):
    """(x - mean) / std per channel, with the constants stored as buffers (saved with the weights)."""

    mean: torch.Tensor  # buffers, declared for the type checker (nn.Module.__getattr__ is Tensor | Module)
    std: torch.Tensor

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class Dropout(nn.Module):
    """nn.Dropout's computation (zero each element with probability p, scale the rest by 1 / keep),
    with a mask drawn four elements per random number. On CPU, nn.Dropout's bernoulli_ is not
    vectorised (a quarter of every paper-cnn training step), and even torch.rand_like spends one
    32-bit draw per element. Here one 64-bit draw gives four 16-bit uniforms, so p is rounded to a
    multiple of 1/65536 (0.15 becomes 0.149994); the kept elements are scaled by the exact inverse
    of the rounded keep probability, so the expectation is unchanged. Different random stream from
    nn.Dropout, same distribution up to that rounding."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.drop_levels = min(round(p * 65536), 65535)  # of 65536 equally likely 16-bit values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_levels == 0:
            return x
        keep = (_uniform_int16_like(x) >= self.drop_levels - 32768).to(x.dtype)
        return x * keep.mul_(65536 / (65536 - self.drop_levels))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _uniform_int16_like(x: torch.Tensor) -> torch.Tensor:
    """Independent uniform int16 values in x's shape and memory layout, from torch's global RNG."""
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    values = words.view(torch.int16)[:n]
    dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    # Same strides as x (e.g. channels-last), so the product below runs without a layout change.
    return values.as_strided(x.shape, x.stride()) if dense else values.view(x.shape)


class TimmNet(Protocol):
    """What pasture calls on a timm network (or ConcatenatedBackbones, which offers the same): typed here
    because nn.Module's attribute lookup gives mypy only "Tensor | Module"."""

    num_features: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...
    def reset_classifier(self, num_classes: int) -> None: ...
    def forward_features(self, images: torch.Tensor) -> torch.Tensor: ...
    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...
    def get_classifier(self) -> nn.Module: ...


def timm_net(model: nn.Module) -> TimmNet:
    """The timm network inside a pasture Classifier (or `model` itself when it is one): the one place such a
    network is fetched by attribute, cast to what pasture calls on it."""
    return cast(TimmNet, getattr(model, "net", model))


class Classifier(nn.Module):
    """InputNormalize followed by a network that maps normalised images to logits.

    With `channels_last`, the network's weights and its input use the NHWC memory layout, where
    oneDNN's CPU convolutions and pooling are several times faster for small convs (max pooling alone
    10x). The layout changes no computation, only float rounding order.
    """

    def __init__(self, net: nn.Module, mean, std, channels_last: bool = False):
        super().__init__()
        self.normalize = InputNormalize(mean, std)
        self.net = net
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = self.normalize(images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]  # (num_classes, image_size, weights) -> network on normalised input
    min_image_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    description: str = ""
    pretrained: bool = False  # has a pretrained backbone that accepts `weights`
    channels_last: bool = False  # NHWC layout: set where benchmarks/speed.py measured it faster on CPU
    native_image_size: int | None = None  # the input size its pretrained weights were trained at


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise UserError(f"--model {name}: unknown model; choose one of {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int, image_size: int, weights: str | None = None) -> Classifier:
    """Build model `name` for `num_classes` classes and square inputs of `image_size` pixels.

    `weights` only applies to pretrained backbones: "imagenet" (the offline package's weights), a path
    to the user's own backbone weights, or None (random init: used when a run's checkpoint will
    supply every weight anyway).
    """
    spec = get_spec(name)
    if weights is not None and not spec.pretrained:
        raise UserError(f"--weights: {name} is trained from scratch and takes no backbone weights")
    if num_classes < 2:
        raise UserError(f"{name}: needs at least 2 classes, got {num_classes}")
    if image_size < spec.min_image_size:
        raise UserError(f"--image-size {image_size}: too small for {name}; it needs at least {spec.min_image_size} px")
    return Classifier(spec.build(num_classes, image_size, weights), spec.mean, spec.std, spec.channels_last)


class Ensemble(nn.Module):
    """Averages the members' softmax probabilities; returns their log so that a softmax of the output
    (what evaluation applies) gives back exactly the mean probability."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([torch.softmax(member(images), dim=1) for member in self.members]).mean(0)
        return torch.log(probabilities.clamp_min(1e-12))
