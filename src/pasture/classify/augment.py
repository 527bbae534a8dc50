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

from pasture.core.errors import UserError


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
    crop_scale: tuple[float, float] = (1.0, 1.0)  # random resized crop: share of the image's area kept
    crop_ratio: tuple[float, float] = (1.0, 1.0)  # ... and its aspect-ratio range (w/h)
    trivial: bool = False  # TrivialAugment-style: one random op at a random strength per image
    description: str = ""

    @property
    def has_affine(self) -> bool:
        return bool(self.degrees or self.translate or self.scale != (1.0, 1.0))

    @property
    def has_crop(self) -> bool:
        return self.crop_scale != (1.0, 1.0) or self.crop_ratio != (1.0, 1.0)

    @property
    def has_colour(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation or self.hue)

    @property
    def is_identity(self) -> bool:
        return not (self.flip_p or self.has_affine or self.has_crop or self.has_colour or self.trivial)


AUGMENT_PRESETS: dict[str, AugmentPreset] = {
    preset.name: preset
    for preset in (
        AugmentPreset("none", description="no augmentation"),
        AugmentPreset(
            "paper",
            flip_p=0.5,
            degrees=10.0,
            translate=0.1,
            scale=(0.9, 1.1),
            brightness=0.2,
            contrast=0.2,
            saturation=0.2,
            hue=0.05,
            description="the report's random transforms: flip, small rotation/translation/scale, colour jitter",
        ),
        AugmentPreset(
            "strong",
            flip_p=0.5,
            crop_scale=(0.35, 1.0),
            crop_ratio=(3 / 4, 4 / 3),
            trivial=True,
            brightness=0.3,
            contrast=0.3,
            saturation=0.3,
            hue=0.03,
            padding="reflection",
            description="for tiny datasets: random resized crop, flip, one TrivialAugment op per image "
            "(translations scale with image size), colour jitter",
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
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift_x], dim=1),
            torch.stack([sin, cos, shift_y], dim=1),
        ],
        dim=1,
    ).to(images.device, images.dtype)  # parameters are drawn on the CPU (seeded), used where the images are
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=preset.padding, align_corners=False)


_GREY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def colour_jitter(images: torch.Tensor, preset: AugmentPreset, generator: torch.Generator) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and hue changes of float images in [0, 1].
    Returns a new tensor (the input is not modified); after the first change, the others work in
    place on it, which saves a full-size allocation and pass per operation."""
    n = images.shape[0]
    grey_weights = _GREY.to(images.device, images.dtype).view(1, 3, 1, 1)
    out = None  # becomes a fresh tensor at the first change; later changes are in place

    def factor(strength: float) -> torch.Tensor:
        return (
            _uniform(n, max(0.0, 1 - strength), 1 + strength, generator)
            .to(images.device, images.dtype)
            .view(n, 1, 1, 1)
        )

    def blend(towards: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # (x - towards) * weight + towards, clamped to [0, 1]: torchvision's _blend, in place where possible.
        moved = images - towards if out is None else out.sub_(towards)
        return moved.mul_(weight).add_(towards).clamp_(0, 1)

    if preset.brightness:
        out = (images * factor(preset.brightness)).clamp_(0, 1)
    if preset.contrast:
        current = images if out is None else out
        mean_grey = (current * grey_weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        out = blend(mean_grey, factor(preset.contrast))
    if preset.saturation:
        current = images if out is None else out
        out = blend((current * grey_weights).sum(1, keepdim=True), factor(preset.saturation))
    if preset.hue:
        # Rotate the chroma plane of YIQ by a per-image angle: one 3x3 matrix per image.
        angle = _uniform(n, -preset.hue, preset.hue, generator) * (2 * math.pi)
        rotation = torch.zeros(n, 3, 3)
        rotation[:, 0, 0] = 1
        rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
        rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(angle), torch.cos(angle)
        to_yiq = _RGB_TO_YIQ
        matrix = (torch.linalg.inv(to_yiq) @ rotation @ to_yiq).to(images.device, images.dtype)
        current = images if out is None else out
        out = torch.einsum("nij,njhw->nihw", matrix, current).clamp_(0, 1)
    return images if out is None else out


def _warp(images: torch.Tensor, theta: torch.Tensor, padding: str) -> torch.Tensor:
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def random_resized_crop(images: torch.Tensor, preset: AugmentPreset, generator: torch.Generator) -> torch.Tensor:
    """Per-image crop of a random area share and aspect ratio, resized back to the full size."""
    n = images.shape[0]
    area = _uniform(n, preset.crop_scale[0], preset.crop_scale[1], generator)
    log_ratio = _uniform(n, math.log(preset.crop_ratio[0]), math.log(preset.crop_ratio[1]), generator)
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)  # fractions of the side
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    centre_x = _uniform(n, -1, 1, generator) * (1 - width)
    centre_y = _uniform(n, -1, 1, generator) * (1 - height)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([width, zero, centre_x], 1), torch.stack([zero, height, centre_y], 1)], 1)
    return _warp(images, theta, preset.padding)


# TrivialAugment (Mueller & Hutter 2021): each image gets one op, drawn uniformly, at a uniform strength.
# Ranges are those of its standard space, except that translation is a share of the image side
# (torchvision's TrivialAugmentWide shifts up to 32 px whatever the size: half of a 64 px image).
TRIVIAL_OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "colour",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
)
TRIVIAL_MAX = {"shear": 0.3, "translate": 0.15, "rotate": 30.0, "enhance": 0.9, "posterize_bits": 4}


def _blend(images: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (degenerate + factor.view(-1, 1, 1, 1) * (images - degenerate)).clamp(0, 1)


def _trivial_colour_op(op: str, images: torch.Tensor, strength: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    strength, sign = strength.to(images.device, images.dtype), sign.to(images.device, images.dtype)
    factor = 1 + sign * strength * TRIVIAL_MAX["enhance"]
    grey = (images * _GREY.to(images.device, images.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if op == "brightness":
        return _blend(images, torch.zeros_like(images), factor)
    if op == "colour":
        return _blend(images, grey.expand_as(images), factor)
    if op == "contrast":
        return _blend(images, grey.mean((2, 3), keepdim=True).expand_as(images), factor)
    if op == "sharpness":
        kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
        kernel = kernel.to(images.device, images.dtype).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
        return _blend(images, blurred, factor)
    if op == "posterize":
        bits = 8 - (strength * TRIVIAL_MAX["posterize_bits"]).round()
        levels = (2**bits).view(-1, 1, 1, 1)
        return torch.floor(images * levels) / levels
    if op == "solarize":
        threshold = (1 - strength).view(-1, 1, 1, 1)
        return torch.where(images >= threshold, 1 - images, images)
    if op == "autocontrast":
        low = images.amin((2, 3), keepdim=True)
        high = images.amax((2, 3), keepdim=True)
        return ((images - low) / (high - low).clamp_min(1e-3)).clamp(0, 1)
    raise ValueError(op)


def trivial_augment(images: torch.Tensor, preset: AugmentPreset, generator: torch.Generator) -> torch.Tensor:
    """One random TrivialAugment op per image. Images are grouped by op, so the Python loop runs over
    the 13 ops, never over images."""
    n = images.shape[0]
    op_index = torch.randint(len(TRIVIAL_OPS), (n,), generator=generator)
    strength = torch.rand(n, generator=generator)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    result = images.clone()
    # Geometric ops: one affine matrix per image, one grid_sample for all of them.
    theta = torch.eye(2, 3).repeat(n, 1, 1)
    geometric = torch.zeros(n, dtype=torch.bool)
    for op in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
        chosen = op_index == TRIVIAL_OPS.index(op)
        if not chosen.any():
            continue
        geometric |= chosen
        amount = (sign * strength)[chosen]
        if op == "shear_x":
            theta[chosen, 0, 1] = amount * TRIVIAL_MAX["shear"]
        elif op == "shear_y":
            theta[chosen, 1, 0] = amount * TRIVIAL_MAX["shear"]
        elif op == "translate_x":
            theta[chosen, 0, 2] = amount * TRIVIAL_MAX["translate"] * 2  # [-1, 1] coordinates
        elif op == "translate_y":
            theta[chosen, 1, 2] = amount * TRIVIAL_MAX["translate"] * 2
        else:
            angle = amount * TRIVIAL_MAX["rotate"] * math.pi / 180
            theta[chosen] = torch.stack(
                [
                    torch.stack([torch.cos(angle), -torch.sin(angle), torch.zeros_like(angle)], 1),
                    torch.stack([torch.sin(angle), torch.cos(angle), torch.zeros_like(angle)], 1),
                ],
                1,
            )
    # The masks live on the CPU with the random draws; the images are reached by index (index_select /
    # index_copy_), which needs no device-side nonzero (a GPU sync per op) and no data-dependent shape.
    if geometric.any():
        rows = geometric.nonzero().flatten()
        picked = rows.to(images.device)
        result.index_copy_(0, picked, _warp(images.index_select(0, picked), theta[rows], preset.padding))
    for op in TRIVIAL_OPS[6:]:
        chosen = op_index == TRIVIAL_OPS.index(op)
        if chosen.any():
            rows = chosen.nonzero().flatten()
            picked = rows.to(images.device)
            result.index_copy_(
                0, picked, _trivial_colour_op(op, images.index_select(0, picked), strength[rows], sign[rows])
            )
    return result


def augment_batch(images: torch.Tensor, preset: AugmentPreset, generator: torch.Generator) -> torch.Tensor:
    """Augment float images N x 3 x H x W in [0, 1]; every image gets its own random parameters.

    Order: random resized crop, flip, affine, TrivialAugment op, colour jitter.
    All randomness comes from `generator` (a CPU generator: the per-image parameters are drawn there and
    moved to the images' device), so a seeded run is reproducible and resumable on any device.
    """
    if preset.is_identity:
        return images
    if preset.has_crop:
        images = random_resized_crop(images, preset, generator)
    if preset.flip_p:
        flip = (torch.rand(images.shape[0], generator=generator) < preset.flip_p).to(images.device)
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    if preset.has_affine:
        images = random_affine(images, preset, generator)
    if preset.trivial:
        images = trivial_augment(images, preset, generator)
    if preset.has_colour:
        images = colour_jitter(images, preset, generator)
    return images


def beta_shares(alpha: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` draws of Beta(alpha, alpha) (MixUp's and CutMix's share of the first image), made from two
    Gamma draws so that the seeded generator stays the only source of randomness (torch.distributions
    would use the global one)."""
    gamma_a = torch._standard_gamma(torch.full((count,), float(alpha)), generator=generator)
    gamma_b = torch._standard_gamma(torch.full((count,), float(alpha)), generator=generator)
    return gamma_a / (gamma_a + gamma_b)


def mix_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019), one of them per batch when both are on.

    Returns mixed images and soft targets N x num_classes (each row sums to 1).
    """
    targets = F.one_hot(labels, num_classes).to(images.dtype)
    if not (mixup_alpha or cutmix_alpha) or images.shape[0] < 2:
        return images, targets
    use_cutmix = bool(cutmix_alpha) and (not mixup_alpha or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    keep = float(beta_shares(alpha, 1, generator))  # share of the first image
    partner = torch.randperm(images.shape[0], generator=generator).to(images.device)
    if use_cutmix:
        height, width = images.shape[2:]
        cut_h, cut_w = int(height * math.sqrt(1 - keep)), int(width * math.sqrt(1 - keep))
        top = int(torch.randint(height - cut_h + 1, (1,), generator=generator))
        left = int(torch.randint(width - cut_w + 1, (1,), generator=generator))
        images = images.clone()
        images[:, :, top : top + cut_h, left : left + cut_w] = images[
            partner, :, top : top + cut_h, left : left + cut_w
        ]
        keep = 1 - (cut_h * cut_w) / (height * width)  # the share actually kept
    else:
        images = keep * images + (1 - keep) * images[partner]
    return images, keep * targets + (1 - keep) * targets[partner]
