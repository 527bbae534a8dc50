"""Decoding: one image file -> one uint8 tensor (pasture.core.imagefile's rule), through a disk cache
keyed by the file's content, and many files in a small thread pool.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from pasture.core.cache import ContentCache
from pasture.core.imagefile import BadImage, decode_array, too_small
from pasture.core.progress import work_bar

# Bump when decoding changes, so old cache entries are not reused (v2: large photos reduced before the fit,
# core.imagefile.DECODE_SIDE).
DECODE_CACHE_FORMAT = "v2"


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
    cache = ContentCache("decoded", fan_out=True, what="decode-cache")
    if not cache.enabled:
        return decode_image_and_size(path, image_size, min_image_size)[0]
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise BadImage(f"could not be read ({error.strerror})") from None
    key = f"{digest}_{image_size}_{DECODE_CACHE_FORMAT}"

    def holds_the_image(entry) -> bool:
        image = entry["image"]
        return image.dtype == torch.uint8 and tuple(image.shape) == (3, image_size, image_size)

    cached = cache.read(key, holds_the_image)
    if cached is not None:
        if min(cached["width"], cached["height"]) < min_image_size:
            raise too_small(cached["width"], cached["height"], min_image_size)
        return cached["image"]
    image, (width, height) = decode_image_and_size(path, image_size, min_image_size)
    cache.write(key, {"image": image, "width": width, "height": height})
    return image


def decode_many(
    paths: list[Path], image_size: int, min_image_size: int
) -> list[tuple[torch.Tensor | None, BadImage | None]]:
    """Decode in a small thread pool (Pillow releases the GIL). Returns [(tensor, None) or (None, why)]."""

    def one(path: Path) -> tuple[torch.Tensor | None, BadImage | None]:
        try:
            return cached_decode(path, image_size, min_image_size), None
        except BadImage as error:
            return None, error

    workers = max(1, min(4, os.cpu_count() or 1))
    if len(paths) < 8:
        return [one(p) for p in paths]
    results = []
    with ThreadPoolExecutor(max_workers=workers) as pool, work_bar(len(paths), "reading photos") as bar:
        for result in pool.map(one, paths):
            results.append(result)
            bar.update(1)
    return results
