"""Image files -> uint8 arrays, torch-free: the one decoding rule of pasture (pasture.data wraps it in
tensors and a cache; an exported ONNX model is fed by it without torch).

Every image is decoded with Pillow: EXIF orientation applied, converted to RGB, resized so its shorter
side is `image_size`, then centre-cropped to a square. Anything that makes a file unusable raises
BadImage with a reason a user can act on.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pasture.core.errors import UserError
from pasture.core.paths import pasture_made, printable_name

# Picks images out of a folder given to `predict`; class folders try every file.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# pasture's own pixel limit, checked from the header before any pixel is decoded (a file above it is
# skipped with a line that names it). The same size as Pillow's warning threshold, but pasture's: decoding
# below it is bounded by what follows, not by Pillow's global setting. Pillow's anonymous warning would
# only repeat pasture's line.
MAX_PIXELS = 89_478_485
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Large photos are decoded small first: JPEG's DCT scaling (Image.draft) and a box reduction for other
# formats bring the shorter side down to no less than this before the bicubic fit. pasture never reads
# more than 1024 px (core.defaults.MAX_IMAGE_SIZE), so the fit sees at least its own size; a 16-bit
# 9400 x 9500 PNG took 3.2 GB through float64 arithmetic before (issue 40).
DECODE_SIDE = 1024
ROWS_PER_CHUNK = 512  # 16/32-bit and float images are brought to 8 bits this many rows at a time

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class BadImage(Exception):
    """A file that cannot be used as an image; the message says why. `advice` is what to do when the
    message itself does not say it (a file that is no image: give image files only)."""

    def __init__(self, message: str, advice: str = "give image files only"):
        super().__init__(message)
        self.advice = advice

    def line(self, path: str | os.PathLike) -> str:
        """The one-line error naming `path`."""
        return f"{printable_name(path)}: {self}" + (f"; {self.advice}" if self.advice else "")


def _grey_8bit(image: Image.Image) -> Image.Image:
    """A 16/32-bit integer or float greyscale image as 8-bit "L", a band of rows at a time (integer
    arithmetic; float32 for float images), each band box-reduced as _reduced would reduce the whole:
    beside the decoded image itself, memory holds one band and the small result. Integers above 255 are
    read as 16-bit (v // 257 = v * 255 / 65535, floored, as before); floats are stretched from their own
    minimum to their maximum."""
    extrema = image.getextrema()  # (min, max) of a one-band image, computed by Pillow without a copy
    low, high = float(cast(float, extrema[0])), float(cast(float, extrema[1]))
    factor = _reduction(image.size)
    width, height = image.size
    out = Image.new("L", (-(-width // factor), -(-height // factor)))
    rows = max(factor, ROWS_PER_CHUNK // factor * factor)
    for top in range(0, height, rows):
        band = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        if image.mode == "F":
            span = high - low
            scaled = (band.astype(np.float32) - np.float32(low)) * np.float32(255.0 / span if span > 0 else 0.0)
            eight = scaled.astype(np.uint8)
        elif high > 255:
            eight = (np.clip(band, 0, 65535).astype(np.uint32) // 257).astype(np.uint8)
        else:
            eight = np.clip(band, 0, 255).astype(np.uint8)
        piece = Image.fromarray(eight, mode="L")
        out.paste(piece.reduce(factor) if factor > 1 else piece, (0, top // factor))
    return out


def _eight_bit(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> L, RGB, or (with transparency) RGBA/LA, 8 bits a channel."""
    if image.mode in WIDE_MODES or image.mode == "F":
        return _grey_8bit(image)
    if image.mode == "P":
        return image.convert("RGBA")
    if image.mode in ("L", "RGB", "RGBA", "LA"):
        return image
    if image.mode in ALPHA_MODES:
        return image.convert("RGBA")
    return image.convert("RGB")


def _on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels composited on white: RGBA/LA -> RGB; L and RGB unchanged."""
    if image.mode not in ALPHA_MODES:
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def _reduction(size: tuple[int, int]) -> int:
    """The whole factor an image of `size` is box-reduced by: its shorter side stays at least DECODE_SIDE
    (1: not reduced)."""
    factor = min(size) // DECODE_SIDE
    return factor if factor >= 2 else 1


def _reduced(image: Image.Image) -> Image.Image:
    """`image` box-reduced by _reduction's factor."""
    factor = _reduction(image.size)
    return image.reduce(factor) if factor > 1 else image


def _draft(opened: Image.Image) -> None:
    """Ask a JPEG decoder for a DCT-scaled image whose shorter side stays at least DECODE_SIDE."""
    if opened.format != "JPEG":
        return
    width, height = opened.size
    scale = min(width, height) / DECODE_SIDE
    if scale >= 2:
        opened.draft(opened.mode, (math.ceil(width / scale), math.ceil(height / scale)))


def too_small(width: int, height: int, min_image_size: int) -> BadImage:
    """The BadImage of an image whose shorter side is below --min-image-size."""
    return BadImage(
        f"is {width}x{height} px, smaller than the minimum of {min_image_size} px (--min-image-size)", advice=""
    )


def too_large(width: int, height: int) -> BadImage | None:
    """The BadImage of an image above pasture's pixel limit (MAX_PIXELS), or None."""
    if width * height <= MAX_PIXELS:
        return None
    return BadImage(
        f"is {width}x{height} px ({width * height / 1e6:.1f} Mpx), above pasture's limit of "
        f"{MAX_PIXELS / 1e6:.1f} Mpx; downscale it to use it",
        advice="",
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
            if min(width, height) < min_image_size:
                raise too_small(width, height, min_image_size)
            _draft(opened)
            opened.load()
            image = _on_white(_reduced(_eight_bit(ImageOps.exif_transpose(opened))))
    except BadImage:
        raise
    except Image.DecompressionBombError as error:
        raise BadImage(f"exceeds Pillow's decompression-bomb pixel limit ({error})") from None
    except UnidentifiedImageError:
        raise BadImage("is not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data
        raise BadImage(f"could not be decoded ({error})") from None
    square = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BICUBIC).convert("RGB")
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


def datasets_holding(paths) -> list[Path]:
    """The data folders that hold the given photos as a class: for each folder given (or each file's
    folder), its parent when that parent holds another folder of photos beside it (the other classes).
    `explain RUN DATA/cow --out DATA/why` would otherwise add a class "why" to DATA (issue 40)."""

    def holds_photos(folder: Path) -> bool:
        return any(entry.suffix.lower() in IMAGE_SUFFIXES for entry in folder.iterdir() if entry.is_file())

    found = []
    for given in paths:
        folder = Path(given) if Path(given).is_dir() else Path(given).parent
        parent = folder.resolve().parent
        if parent == folder.resolve():
            continue
        try:
            siblings = [entry for entry in parent.iterdir() if entry.is_dir() and entry.resolve() != folder.resolve()]
            if any(holds_photos(sibling) and pasture_made(sibling) is None for sibling in siblings):
                found.append(parent)
        except OSError:  # an unreadable folder beside it: no class folders known there
            continue
    return found
