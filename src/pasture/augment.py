"""Classical augmentation presets, applied to whole batches of float tensors with per-image randomness.

Why not torchvision.transforms.v2 directly: called on a batch tensor, a v2 transform draws ONE set of
random parameters and applies it to every image in the batch (all flipped or none, one rotation angle).
Here each image draws its own flip, rotation, translation, scale and colour factors, and the work is
still one batched tensor op per step (affine_grid + grid_sample, broadcast colour maths): no per-image
Python loop. The parameter ranges mirror torchvision's RandomHorizontalFlip / RandomAffine /
ColorJitter, which is what the report's "random transformations" used.

Presets are data (AugmentPreset); `augment_batch(images, preset, generator)` is the one function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pasture.errors import UserError


@dataclass(frozen=True)
class AugmentPreset:
    name: str
    flip_p: float = 0.0  # probability of a horizontal flip
    degrees: float = 0.0  # rotation drawn from [-degrees, degrees]
    translate: float = 0.0  # shift drawn from [-translate, translate] x image side, per axis
    scale: tuple[float, float] = (1.0, 1.0)  # zoom factor range (>1 zooms in)
    brightness: float = 0.0  # factor drawn from [1-b, 1+b]
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0  # hue rotation drawn from [-hue, hue] turns (torchvision's convention, <= 0.5)
    padding: str = "zeros"  # what fills pixels moved in from outside: "zeros" (torchvision) or "reflection"
    description: str = ""

    @property
    def is_identity(self) -> bool:
        return (self.flip_p == 0 and self.degrees == 0 and self.translate == 0 and self.scale == (1.0, 1.0)
                and self.brightness == 0 and self.contrast == 0 and self.saturation == 0 and self.hue == 0)


AUGMENT_PRESETS: dict[str, AugmentPreset] = {
    preset.name: preset
    for preset in (
        AugmentPreset("none", description="no augmentation"),
        AugmentPreset(
            "paper",
            flip_p=0.5, degrees=10.0, translate=0.1, scale=(0.9, 1.1),
            brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05,
            description="the report's random transforms: flip, small rotation/translation/scale, colour jitter",
        ),
    )
}


def get_augment(name: str) -> AugmentPreset:
    if name not in AUGMENT_PRESETS:
        raise UserError(f"--augment {name}: unknown preset; choose one of {', '.join(AUGMENT_PRESETS)}")
    return AUGMENT_PRESETS[name]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_affine(images: torch.Tensor, preset: AugmentPreset, generator: torch.Generator) -> torch.Tensor:
    """Per-image rotation, translation and zoom of float images N x C x H x W."""
    n = images.shape[0]
    angle = _uniform(n, -preset.degrees, preset.degrees, generator) * (math.pi / 180.0)
    zoom = _uniform(n, preset.scale[0], preset.scale[1], generator)
    # affine_grid works in [-1, 1] coordinates, so a shift of a fraction f of the side is 2f.
    shift_x = _uniform(n, -preset.translate, preset.translate, generator) * 2.0
    shift_y = _uniform(n, -preset.translate, preset.translate, generator) * 2.0
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # theta maps output coordinates to where they are sampled in the input.
    theta = torch.stack([
        torch.stack([cos, -sin, shift_x], dim=1),
        torch.stack([sin, cos, shift_y], dim=1),
    ], dim=1).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=preset.padding, align_corners=False)


_GREY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def colour_jitter(images: torch.Tensor, preset: AugmentPreset, generator: torch.Generator) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and hue changes of float images in [0, 1]."""
    n = images.shape[0]
    grey_weights = _GREY.to(images.dtype).view(1, 3, 1, 1)

    def factor(strength: float) -> torch.Tensor:
        return _uniform(n, max(0.0, 1 - strength), 1 + strength, generator).to(images.dtype).view(n, 1, 1, 1)

    if preset.brightness:
        images = (images * factor(preset.brightness)).clamp(0, 1)
    if preset.contrast:
        mean_grey = (images * grey_weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        images = ((images - mean_grey) * factor(preset.contrast) + mean_grey).clamp(0, 1)
    if preset.saturation:
        grey = (images * grey_weights).sum(1, keepdim=True)
        images = ((images - grey) * factor(preset.saturation) + grey).clamp(0, 1)
    if preset.hue:
        # Rotate the chroma plane of YIQ by a per-image angle: one 3x3 matrix per image.
        angle = _uniform(n, -preset.hue, preset.hue, generator) * (2 * math.pi)
        rotation = torch.zeros(n, 3, 3)
        rotation[:, 0, 0] = 1
        rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
        rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(angle), torch.cos(angle)
        to_yiq = _RGB_TO_YIQ
        matrix = (torch.linalg.inv(to_yiq) @ rotation @ to_yiq).to(images.dtype)
        images = torch.einsum("nij,njhw->nihw", matrix, images).clamp(0, 1)
    return images


def augment_batch(images: torch.Tensor, preset: AugmentPreset, generator: torch.Generator) -> torch.Tensor:
    """Augment float images N x 3 x H x W in [0, 1]; every image gets its own random parameters.

    All randomness comes from `generator`, so a seeded run is reproducible and resumable.
    """
    if preset.is_identity:
        return images
    if preset.flip_p:
        flip = torch.rand(images.shape[0], generator=generator) < preset.flip_p
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    if preset.degrees or preset.translate or preset.scale != (1.0, 1.0):
        images = random_affine(images, preset, generator)
    if preset.brightness or preset.contrast or preset.saturation or preset.hue:
        images = colour_jitter(images, preset, generator)
    return images
