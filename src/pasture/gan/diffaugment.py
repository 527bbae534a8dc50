"""DiffAugment (Zhao, Liu, Lin, Zhu, Han; NeurIPS 2020): differentiable augmentation for GANs on tiny data.

The same random augmentation is applied to every image the discriminator sees, real and fake, in both
the D and the G steps; since every op is differentiable, G's gradients flow through it. Images are in
[-1, 1] (the generator's Tanh range). Each op draws its parameters per image; with probability `p`
< 1 an image keeps its original (the adaptive probability of ADA, Karras et al. 2020).

    diff_augment(images, "color,translation,cutout", p=1.0, generator=None)
"""

from __future__ import annotations

import torch


def _rand(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=generator).to(device)


def rand_brightness(x, generator=None):
    return x + (_rand(x.shape[0], generator, x.device) - 0.5)


def rand_saturation(x, generator=None):
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x.shape[0], generator, x.device) * 2) + mean


def rand_contrast(x, generator=None):
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x.shape[0], generator, x.device) + 0.5) + mean


def rand_translation(x, generator=None, ratio: float = 0.125):
    """Shift each image by up to `ratio` of its side (whole pixels), zeros moving in."""
    n, _, height, width = x.shape
    shift_y = torch.randint(-int(height * ratio), int(height * ratio) + 1, (n,), generator=generator)
    shift_x = torch.randint(-int(width * ratio), int(width * ratio) + 1, (n,), generator=generator)
    rows = torch.arange(height).view(1, height, 1) - shift_y.view(n, 1, 1)  # source row of each pixel
    cols = torch.arange(width).view(1, 1, width) - shift_x.view(n, 1, 1)
    inside = ((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).to(x.dtype).unsqueeze(1)
    rows, cols = rows.clamp(0, height - 1).expand(n, height, width), cols.clamp(0, width - 1).expand(n, height, width)
    flat = (rows * width + cols).view(n, 1, -1).expand(-1, x.shape[1], -1).to(x.device)
    moved = torch.gather(x.reshape(n, x.shape[1], -1), 2, flat).view_as(x)
    return moved * inside.to(x.device)


def rand_cutout(x, generator=None, ratio: float = 0.5):
    """Zero one square of `ratio` x side per image, at a random position."""
    n, _, height, width = x.shape
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    top = torch.randint(0, height - cut_h + 1, (n, 1, 1), generator=generator)
    left = torch.randint(0, width - cut_w + 1, (n, 1, 1), generator=generator)
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    hole = (rows >= top) & (rows < top + cut_h) & (cols >= left) & (cols < left + cut_w)
    return x * (~hole).to(x.dtype).unsqueeze(1).to(x.device)


POLICIES = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def parse_policy(policy: str) -> list[str]:
    """'color,translation' -> ['color', 'translation']; '' or 'none' -> []. Unknown names raise ValueError."""
    names = [name.strip() for name in (policy or "").split(",") if name.strip() and name.strip() != "none"]
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {','.join(unknown)}; choose from {','.join(POLICIES)} or none")
    return names


def diff_augment(
    x: torch.Tensor, policy: str, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply the named policies to a batch N x C x H x W; each image is augmented with probability p."""
    names = parse_policy(policy)
    if not names or p <= 0:
        return x
    for name in names:
        for op in POLICIES[name]:
            augmented = op(x, generator)
            if p < 1:
                keep = (torch.rand(x.shape[0], generator=generator) < p).view(-1, 1, 1, 1).to(x.device)
                augmented = torch.where(keep, augmented, x)
            x = augmented
    return x
