"""Decoding: one image file -> one uint8 tensor (pasture.core.imagefile's rule), through a disk cache
keyed by the file's content, and many files in a small thread pool.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from pasture.core.defaults import cache_enabled, cache_root, warn_to_stderr
from pasture.core.imagefile import BadImage, decode_array, too_small
from pasture.core.runs import atomic_torch_save

DECODE_CACHE_FORMAT = "v1"  # bump when decoding changes, so old cache entries are not reused


def decode_image_and_size(
    path: str | os.PathLike,
    image_size: int,
    min_image_size: int = 0,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Read one image file -> (uint8 tensor 3 x image_size x image_size, original (width, height)).

    Raises BadImage."""
    array, size = decode_array(path, image_size, min_image_size)
    return torch.from_numpy(array), size


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
                raise too_small(cached["width"], cached["height"], min_image_size)
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
        warn_to_stderr(
            f"{entry}: a damaged decode-cache entry; decoding the image again (further damaged entries "
            "are replaced silently)"
        )


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
