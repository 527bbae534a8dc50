"""Decoded images in memory: one uint8 tensor per split, with labels, file names and class names."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from pasture.core.defaults import cache_root
from pasture.core.errors import UserError

# Above this many bytes, a split's decoded photos live in a file-backed map (an unlinked temporary file
# under the cache folder) instead of process memory: the kernel writes them out and reads them back under
# pressure, so a large training set does not need its decoded size in RAM (5,000 photos at 260 px are
# 1 GB, 50,000 are 10 GB). Below it (about 1,300 photos at 260 px), memory is simpler and as fast.
MAPPED_BYTES = 256 * 2**20


def image_storage(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor of `shape`: in memory, or file-backed above MAPPED_BYTES. The file's
    blocks are reserved first (a full disk falls back to memory here, instead of killing the process
    with SIGBUS when a page is first written)."""
    size = math.prod(shape)
    if size <= MAPPED_BYTES or not hasattr(os, "posix_fallocate"):
        return torch.empty(shape, dtype=torch.uint8)
    try:
        folder = cache_root() / "mapped"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as handle:  # unlinked at once; the map keeps it alive
            os.posix_fallocate(handle.fileno(), 0, size)
            mapped = np.memmap(handle, dtype=np.uint8, mode="r+", shape=shape)
    except OSError:  # no room, or the cache folder is not writable: the photos stay in memory
        return torch.empty(shape, dtype=torch.uint8)
    return torch.from_numpy(mapped)


@dataclass
class ImageSet:
    """Decoded images of one split. `images` is uint8 N x 3 x S x S, `labels` int64 N."""

    images: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    classes: list[str]
    split: str = "train"  # "train", "test", "validation", "all", "eval" or "synthetic": GANs accept only "train"
    groups: list[str] | None = None  # the group (photo source) of each image, when known (pasture.data.groups)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> dict[str, int]:
        per_class = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, per_class))


@dataclass
class Dataset:
    """A train split and (usually) a test split, with what was skipped on the way."""

    root: str
    layout: str  # "train/test", "class-folders", "pool", "fold", "validation" or "synthetic"
    classes: list[str]
    image_size: int
    train: ImageSet
    test: ImageSet | None
    skipped: list[dict] = field(default_factory=list)  # {"file":..., "reason":...}
    fingerprint: str = ""  # sha256 over (relative path, sha256 of the bytes) of every file read

    def summary(self) -> dict:
        return {
            "root": self.root,
            "layout": self.layout,
            "classes": self.classes,
            "image_size": self.image_size,
            "train_counts": self.train.counts(),
            "test_counts": self.test.counts() if self.test is not None else None,
            "n_train": len(self.train),
            "n_test": len(self.test) if self.test is not None else 0,
            "skipped": self.skipped,
            "fingerprint": self.fingerprint,
            **self.group_summary(),
        }

    def group_summary(self) -> dict:
        """Images per group in each split, and the test groups the training split never saw."""
        if self.train.groups is None:
            return {}
        count = lambda names: {name: names.count(name) for name in sorted(set(names))}  # noqa: E731
        test_groups = self.test.groups if self.test is not None and self.test.groups is not None else []
        return {
            "train_groups": count(self.train.groups),
            "test_groups": count(test_groups),
            "unseen_test_groups": sorted(set(test_groups) - set(self.train.groups)),
        }


def subset_images(images: ImageSet, indices: torch.Tensor, split: str) -> ImageSet:
    """The images (with labels and files) at `indices`, as a split named `split`."""
    selected = image_storage((len(indices), *images.images.shape[1:]))
    torch.index_select(images.images, 0, indices, out=selected)
    return ImageSet(
        images=selected,
        labels=images.labels[indices],
        files=[images.files[i] for i in indices.tolist()],
        classes=images.classes,
        split=split,
        groups=[images.groups[i] for i in indices.tolist()] if images.groups is not None else None,
    )


def class_index_map(names: list[str], target_classes: list[str], what: str) -> torch.Tensor:
    """For each class name in `names`, its index in `target_classes` (a model's or a training set's
    class order), so labels can be matched by name, never by position. `what` starts the error when
    a name is missing, e.g. "--synthetic SYNTH" or "--run RUN"."""
    missing = [name for name in names if name not in target_classes]
    if missing:
        raise UserError(
            f"{what}: class(es) {', '.join(missing)} are not among the classes "
            f"({', '.join(target_classes)}); rename or remove them"
        )
    return torch.tensor([target_classes.index(name) for name in names], dtype=torch.int64)
