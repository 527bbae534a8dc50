"""The demo: a two-class image set that the code itself draws, and a short experiment on it.

The images are procedural, documented as such: "stripes" are oriented sine gratings, "spots" are
scattered soft discs, each with random colours, scale, orientation and noise. They are easy for a
person and not trivial for a tiny CNN trained on 24 of them, which is what the demo needs: a
difference between conditions that the statistics can (or cannot) detect.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

DEMO_CLASSES = ("spots", "stripes")


def draw_demo_image(label: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One H x W x 3 uint8 image of class `label` ("spots" or "stripes")."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / size
    background = rng.uniform(0.1, 0.9, size=3)
    foreground = np.clip(background + rng.choice([-1, 1], size=3) * rng.uniform(0.25, 0.5, size=3), 0, 1)
    if label == "stripes":
        angle = rng.uniform(0, math.pi)
        frequency = rng.uniform(2.5, 6.0)
        phase = rng.uniform(0, 2 * math.pi)
        wave = 0.5 + 0.5 * np.sin(2 * math.pi * frequency * (xs * math.cos(angle) + ys * math.sin(angle)) + phase)
        mask = wave
    elif label == "spots":
        mask = np.zeros((size, size))
        for _ in range(rng.integers(3, 8)):
            cy, cx, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.06, 0.16)
            mask = np.maximum(mask, np.clip(1 - np.hypot(ys - cy, xs - cx) / radius, 0, 1) ** 0.5)
    else:
        raise ValueError(f"unknown demo class {label!r}")
    image = background[None, None, :] * (1 - mask[..., None]) + foreground[None, None, :] * mask[..., None]
    image = image + rng.normal(0, 0.06, size=image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_demo_data(root: str | Path, per_class: int = 24, size: int = 32, seed: int = 0) -> Path:
    """DATA/train/<class>/ and DATA/test/<class>/ with `per_class` images each (PNG)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for label in DEMO_CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                Image.fromarray(draw_demo_image(label, rng, size)).save(folder / f"{label}_{index:03d}.png")
    (root / "README.txt").write_text(
        "Procedural demo images drawn by pasture.study.demo: 'stripes' are sine gratings, 'spots' are soft discs,\n"
        "with random colours, sizes, orientations and noise. No real photographs.\n"
    )
    return root
