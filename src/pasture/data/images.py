"""Decoded images in memory: one uint8 tensor per split, with labels, file names and class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pasture.core.errors import UserError


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
    return ImageSet(
        images=images.images[indices],
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
