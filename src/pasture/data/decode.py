"""Decoding: one image file -> one uint8 tensor, through a disk cache keyed by the file's content.

Every image is decoded once with Pillow (EXIF orientation applied, converted to RGB, resized so its
shorter side is `image_size`, then centre-cropped to a square). Anything that makes a file unusable
raises BadImage with a reason a user can act on; callers skip the file with a warning or stop.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pasture.core.defaults import cache_enabled, cache_root, warn_to_stderr
from pasture.core.runs import atomic_torch_save

DECODE_CACHE_FORMAT = "v1"  # bump when decoding changes, so old cache entries are not reused

# Pillow warns (DecompressionBombWarning) above Image.MAX_IMAGE_PIXELS (89.5 Mpx) and refuses above
# twice that. pasture checks the limit itself, before decoding, and skips such a file with its own
# one-line warning that names it; Pillow's anonymous warning would only repeat it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class BadImage(Exception):
    """A file that cannot be used as an image; the message says why."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparent pixels are composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: rescale to 8 bits from the range the values actually use.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _too_small(width: int, height: int, min_image_size: int) -> BadImage:
    return BadImage(f"is {width}x{height} px, smaller than the minimum of {min_image_size} px (--min-image-size)")


def _too_large(width: int, height: int) -> BadImage | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or width * height <= limit:
        return None
    return BadImage(f"is {width}x{height} px ({width * height / 1e6:.1f} Mpx), above Pillow's decompression-bomb "
                    f"limit of {limit / 1e6:.1f} Mpx; downscale it to use it")


def decode_image_and_size(
    path: str | os.PathLike, image_size: int, min_image_size: int = 0,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Read one image file -> (uint8 tensor 3 x image_size x image_size, original (width, height)).

    Raises BadImage."""
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            too_large = _too_large(width, height)  # checked before the pixels are decoded
            if too_large is not None:
                raise too_large
            opened.load()
            if min(width, height) < min_image_size:
                raise _too_small(width, height, min_image_size)
            image = _to_rgb(ImageOps.exif_transpose(opened))
    except BadImage:
        raise
    except Image.DecompressionBombError as error:
        raise BadImage(f"exceeds Pillow's decompression-bomb pixel limit ({error})") from None
    except UnidentifiedImageError:
        raise BadImage("is not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data
        raise BadImage(f"could not be decoded ({error})") from None
    square = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BICUBIC)
    array = np.asarray(square, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), (width, height)


def cached_decode(path: Path, image_size: int, min_image_size: int) -> torch.Tensor:
    """decode_image_and_size through a disk cache keyed by the file's bytes and the output size.

    Experiments decode the same photos in every run and process; a cache hit costs one file hash and
    one small read. A changed file has another hash, so stale entries are never used; a damaged entry
    is decoded again. Bad images are not cached (their error is recomputed, cheaply)."""
    if not cache_enabled():
        return decode_image_and_size(path, image_size, min_image_size)[0]
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise BadImage(f"could not be read ({error.strerror})") from None
    entry = cache_root() / "decoded" / digest[:2] / f"{digest}_{image_size}_{DECODE_CACHE_FORMAT}.pt"
    if entry.is_file():
        try:
            cached = torch.load(entry, map_location="cpu", weights_only=True)
            image = cached["image"]
            if image.dtype != torch.uint8 or tuple(image.shape) != (3, image_size, image_size):
                raise ValueError(f"holds a {tuple(image.shape)} {image.dtype} tensor")
            if min(cached["width"], cached["height"]) < min_image_size:
                raise _too_small(cached["width"], cached["height"], min_image_size)
            return image
        except BadImage:
            raise
        except Exception:  # damaged or foreign entry: decode again below, and say so once
            _warn_damaged_cache(entry)
    image, (width, height) = decode_image_and_size(path, image_size, min_image_size)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"image": image, "width": width, "height": height}, entry)
    except OSError:
        pass  # an unwritable cache only costs time
    return image


_damaged_cache_seen = False


def _warn_damaged_cache(entry: Path) -> None:
    global _damaged_cache_seen
    if not _damaged_cache_seen:
        _damaged_cache_seen = True
        warn_to_stderr(f"{entry}: a damaged decode-cache entry; decoding the image again (further damaged entries "
                       "are replaced silently)")


def decode_many(paths: list[Path], image_size: int, min_image_size: int) -> list[tuple[torch.Tensor | None, str]]:
    """Decode in a small thread pool (Pillow releases the GIL). Returns [(tensor or None, reason)]."""

    def one(path: Path):
        try:
            return cached_decode(path, image_size, min_image_size), ""
        except BadImage as error:
            return None, str(error)

    workers = max(1, min(4, os.cpu_count() or 1))
    if len(paths) < 8:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths))
