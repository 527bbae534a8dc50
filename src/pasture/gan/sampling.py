"""A trained GAN's generators rebuilt from their saved state, and sampled per class in batches (seeded
latents, the truncation trick)."""

from __future__ import annotations

import torch

from pasture.core.device import model_device
from pasture.gan.presets import GanPreset
from pasture.gan.trainer import build_generator, to_uint8


def build_samplers(
    preset: GanPreset, num_classes: int, units: list[dict], device: str | torch.device = "cpu"
) -> list[tuple[list[int], torch.nn.Module]]:
    """(class ids, generator in eval mode on `device`) for each trained unit."""
    samplers = []
    for unit in units:
        generator = build_generator(preset, num_classes if preset.conditional else 0)
        generator.load_state_dict(unit["generator"])
        samplers.append((list(unit["class_ids"]), generator.to(device).eval()))
    return samplers


@torch.no_grad()
def generate(
    preset: GanPreset,
    samplers,
    class_index: int,
    count: int,
    generator: torch.Generator,
    truncation: float | None = None,
    batch: int = 64,
) -> torch.Tensor:
    """`count` uint8 images of class `class_index` (N x 3 x S x S)."""
    for class_ids, network in samplers:  # noqa: B007 (the unit found is used after the break)
        if class_index in class_ids:
            break
    else:
        raise ValueError(f"no GAN unit makes class {class_index}")
    chunks = []
    for start in range(0, count, batch):
        n = min(batch, count - start)
        z = torch.randn(n, preset.nz, generator=generator)
        if truncation is not None:  # resample |z| > truncation (the truncation trick)
            for _ in range(100):
                outside = z.abs() > truncation
                if not outside.any():
                    break
                z[outside] = torch.randn(int(outside.sum()), generator=generator)
            z = z.clamp(-truncation, truncation)
        device = model_device(network)
        labels = torch.full((n,), class_index, dtype=torch.long, device=device) if preset.conditional else None
        chunks.append(to_uint8(network(z.to(device), labels)).cpu())  # latents drawn on the CPU (seeded)
    return torch.cat(chunks) if chunks else torch.empty(0, 3, preset.image_size, preset.image_size, dtype=torch.uint8)
