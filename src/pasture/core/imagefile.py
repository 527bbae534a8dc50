"""Image files -> uint8 arrays, torch-free: the one decoding rule of pasture (pasture.data wraps it in
tensors and a cache; an exported ONNX model is fed by it without torch).

Every image is decoded with Pillow: EXIF orientation applied, converted to RGB, resized so its shorter
side is `image_size`, then centre-cropped to a square. Anything that makes a file unusable raises
BadImage with a reason a user can act on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pasture.core.errors import UserError

# Picks images out of a folder given to `predict`; class folders try every file.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

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


def too_small(width: int, height: int, min_image_size: int) -> BadImage:
    """The BadImage of an image whose shorter side is below --min-image-size."""
    return BadImage(f"is {width}x{height} px, smaller than the minimum of {min_image_size} px (--min-image-size)")


def too_large(width: int, height: int) -> BadImage | None:
    """The BadImage of an image above Pillow's decompression-bomb limit, or None."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or width * height <= limit:
        return None
    return BadImage(
        f"is {width}x{height} px ({width * height / 1e6:.1f} Mpx), above Pillow's decompression-bomb "
        f"limit of {limit / 1e6:.1f} Mpx; downscale it to use it"
    )


def decode_array(
    path: str | os.PathLike,
    image_size: int,
    min_image_size: int = 0,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read one image file -> (uint8 array 3 x image_size x image_size, original (width, height)).

    Raises BadImage."""
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            oversized = too_large(width, height)  # checked before the pixels are decoded
            if oversized is not None:
                raise oversized
            opened.load()
            if min(width, height) < min_image_size:
                raise too_small(width, height, min_image_size)
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
    return np.ascontiguousarray(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)), (width, height)


def image_files_in(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, by image suffix) into a sorted list of image files."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not inside:
                raise UserError(f"{path}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return found
