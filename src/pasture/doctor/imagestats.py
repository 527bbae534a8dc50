"""Trivial per-image statistics: what a model could use to tell the classes apart without looking at
the subject. Each statistic belongs to a named family, so the doctor can say which one gives a shortcut.

Pixel statistics come from the decoded square (the pixels a model sees, at STATS_SIZE px); file
statistics (original size, JPEG quality, bytes per pixel) from the file's header, without decoding it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

STATS_SIZE = 64  # px: enough for colour, brightness and sharpness; the hashes use 32 px anyway
HISTOGRAM_BINS = 8

# libjpeg's base luminance table (Annex K of the JPEG standard): a file's table is this one scaled by
# its quality setting, which is how the quality a camera or website chose is recovered.
_JPEG_BASE_LUMA_SUM = sum(
    (
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    )
)

# family -> what it measures; the order of columns in `pixel_statistics` + `file_statistics`.
FAMILIES = {
    "colour": "colour histogram and mean colour",
    "brightness": "brightness, contrast and saturation",
    "sharpness": "sharpness (Laplacian variance, edge strength)",
    "jpeg": "JPEG quality and bytes per pixel",
    "size": "original width, height and aspect ratio",
}


def jpeg_quality(image: Image.Image) -> float | None:
    """The quality (1-100) a JPEG was saved with, estimated from its luminance table; None otherwise."""
    tables = getattr(image, "quantization", None)
    if image.format != "JPEG" or not tables:
        return None
    luma = tables.get(0)
    if luma is None or len(luma) != 64:
        return None
    # The sum is independent of the table's order (zig-zag or natural), and libjpeg scales every entry
    # by the same percentage: scale = 5000/q below quality 50, 200 - 2q above.
    scale = 100.0 * sum(luma) / _JPEG_BASE_LUMA_SUM
    quality = 5000.0 / scale if scale > 100 else (200.0 - scale) / 2.0
    return float(min(100.0, max(1.0, quality)))


def file_statistics(path: str | os.PathLike) -> dict:
    """Original size, format and JPEG quality of one file, read from its header."""
    with Image.open(path) as image:
        width, height = image.size
        quality = jpeg_quality(image)
        kind = image.format or "?"
    size_bytes = Path(path).stat().st_size
    return {"width": width, "height": height, "format": kind, "jpeg_quality": quality, "bytes": size_bytes}


def to_stats_size(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x S x S -> float N x 3 x STATS_SIZE x STATS_SIZE in [0, 1] (antialiased)."""
    images = images_uint8.float() / 255.0
    if images.shape[-1] != STATS_SIZE:
        images = F.interpolate(
            images, size=(STATS_SIZE, STATS_SIZE), mode="bilinear", antialias=True, align_corners=False
        ).clamp(0, 1)
    return images


_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def pixel_statistics(images: torch.Tensor) -> dict[str, np.ndarray]:
    """float N x 3 x H x W in [0, 1] -> {family: N x k feature matrix} for colour, brightness, sharpness."""
    n = images.shape[0]
    quantised = (images * HISTOGRAM_BINS).long().clamp(max=HISTOGRAM_BINS - 1).view(n, 3, -1)
    histogram = torch.stack(
        [
            torch.stack([(quantised[:, channel] == b).float().mean(1) for b in range(HISTOGRAM_BINS)], 1)
            for channel in range(3)
        ],
        1,
    ).view(n, -1)
    mean_colour = images.mean((2, 3))
    luma = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).unsqueeze(1)
    top, bottom = images.max(1).values, images.min(1).values
    saturation = torch.where(top > 0, (top - bottom) / top.clamp(min=1e-6), torch.zeros_like(top))
    laplacian = F.conv2d(luma, _LAPLACIAN)
    edges = (luma[..., 1:, :] - luma[..., :-1, :]).abs().mean((1, 2, 3)) + (
        luma[..., :, 1:] - luma[..., :, :-1]
    ).abs().mean((1, 2, 3))
    return {
        "colour": torch.cat([histogram, mean_colour], 1).numpy(),
        "brightness": torch.stack([luma.mean((1, 2, 3)), luma.std((1, 2, 3)), saturation.mean((1, 2))], 1).numpy(),
        "sharpness": torch.stack([torch.log1p(laplacian.var((1, 2, 3)) * 1e3), edges], 1).numpy(),
    }


def file_families(rows: list[dict]) -> dict[str, np.ndarray]:
    """File statistics (from `file_statistics`) -> {family: N x k} for jpeg and size."""
    quality = np.array([row["jpeg_quality"] if row["jpeg_quality"] is not None else -1.0 for row in rows])
    is_jpeg = np.array([row["jpeg_quality"] is not None for row in rows], dtype=float)
    width = np.array([row["width"] for row in rows], dtype=float)
    height = np.array([row["height"] for row in rows], dtype=float)
    bytes_per_pixel = np.array([row["bytes"] for row in rows], dtype=float) / (width * height)
    return {
        "jpeg": np.stack([quality, is_jpeg, np.log(bytes_per_pixel)], 1),
        "size": np.stack([np.log(width), np.log(height), width / height], 1),
    }


def size_summary(rows: list[dict]) -> dict:
    """Width, height and aspect ratio quantiles, and the formats and JPEG qualities seen."""

    def quantiles(values):
        low, median, high = np.percentile(values, [5, 50, 95])
        return {
            "min": float(np.min(values)),
            "p5": float(low),
            "median": float(median),
            "p95": float(high),
            "max": float(np.max(values)),
        }

    width = np.array([row["width"] for row in rows], dtype=float)
    height = np.array([row["height"] for row in rows], dtype=float)
    formats: dict[str, int] = {}
    for row in rows:
        formats[row["format"]] = formats.get(row["format"], 0) + 1
    qualities = [row["jpeg_quality"] for row in rows if row["jpeg_quality"] is not None]
    return {
        "width": quantiles(width),
        "height": quantiles(height),
        "aspect": quantiles(width / height),
        "formats": formats,
        "jpeg_quality": quantiles(qualities) if qualities else None,
    }
