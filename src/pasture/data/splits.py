"""Seeded, stratified splits: train/test, k folds, and validation splits carved from a training split."""

from __future__ import annotations

import numpy as np
import torch

from pasture.core.errors import UserError
from pasture.data.images import Dataset, subset_images


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, test) with each class split in the same proportion, seeded.

    Every class keeps at least one image on each side, so it needs two or more images.
    """
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels.numpy() == label)
        members = members[rng.permutation(len(members))]
        n_test = int(round(len(members) * test_fraction))
        n_test = min(max(n_test, 1), len(members) - 1)
        test_idx.extend(members[:n_test].tolist())
        train_idx.extend(members[n_test:].tolist())
    return torch.tensor(sorted(train_idx)), torch.tensor(sorted(test_idx))


def group_split(
    labels: torch.Tensor, groups: list[str], test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, test) where every group (photo source) lies wholly on one side, so the test split
    holds only sources the model never saw. Groups are taken in a seeded random order into the test
    split while no class there passes `test_fraction` of its images; a class whose images would all go
    to one side keeps one group on each side where it has two or more. Raises UserError when a class
    comes from one group only (it cannot be both trained and tested on unseen sources)."""
    rng = np.random.default_rng(seed)
    names = sorted(set(groups))
    members = {name: [i for i, group in enumerate(groups) if group == name] for name in names}
    label_list = labels.tolist()
    classes = sorted(set(label_list))
    total = {c: label_list.count(c) for c in classes}
    groups_of_class = {c: [n for n in names if any(label_list[i] == c for i in members[n])] for c in classes}
    for c in classes:
        if len(groups_of_class[c]) < 2:
            raise UserError(
                f"--split-by-group: class {c} comes from one group only ({groups_of_class[c][0]}); it needs "
                "photos from two or more sources to be tested on one it never saw"
            )
    in_test: set[str] = set()

    def count(chosen: set[str], c: int) -> int:
        return sum(1 for name in chosen for i in members[name] if label_list[i] == c)

    for name in [names[i] for i in rng.permutation(len(names))]:
        trial = in_test | {name}
        fits = all(count(trial, c) <= test_fraction * total[c] for c in classes)
        keeps_training = all(count(trial, c) < total[c] for c in classes)
        if fits and keeps_training:
            in_test = trial
    for c in classes:  # every class gets tested: its smallest group goes to test if it has none there
        if count(in_test, c) == 0:
            smallest = min((n for n in groups_of_class[c] if n not in in_test), key=lambda n: len(members[n]))
            if all(count(in_test | {smallest}, k) < total[k] for k in classes):
                in_test.add(smallest)
    test_idx = sorted(i for name in in_test for i in members[name])
    train_idx = sorted(i for name in names if name not in in_test for i in members[name])
    return torch.tensor(train_idx, dtype=torch.long), torch.tensor(test_idx, dtype=torch.long)


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Test indices of `folds` disjoint, stratified folds covering every image (seeded).

    Each class is shuffled and dealt round-robin, so fold sizes per class differ by at most one.
    """
    if folds < 2:
        raise UserError(f"--folds {folds}: needs at least 2 folds")
    rng = np.random.default_rng(seed)
    members_of_fold: list[list[int]] = [[] for _ in range(folds)]
    offset = 0
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels.numpy() == label)
        if len(members) < folds:
            raise UserError(f"--folds {folds}: a class has only {len(members)} images; use at most that many folds")
        for position, index in enumerate(members[rng.permutation(len(members))]):
            members_of_fold[(position + offset) % folds].append(int(index))
        offset += len(members)  # start the next class where this one stopped, to balance fold sizes
    return [torch.tensor(sorted(fold)) for fold in members_of_fold]


def held_out_folds(labels: torch.Tensor, groups: list[str] | None, seed: int) -> tuple[list[torch.Tensor], str]:
    """Held-out index sets over training photos, and how they were made: leave one group (photo source)
    out when 2 or more groups are known, so what is chosen on them is judged on sources not seen, as a
    user's photos will be; else stratified folds (5, or fewer for a small class); none when a class has
    fewer than 2 photos. The probe's choice of C and the familiarity threshold both use them."""
    if groups is not None and len(set(groups)) >= 2:
        names = sorted(set(groups))
        folds = [torch.tensor([i for i, g in enumerate(groups) if g == name]) for name in names]
        return folds, f"leave-one-source-out over {len(names)} sources"
    smallest = int(torch.bincount(labels).min()) if len(labels) else 0
    k = min(5, smallest)
    if k < 2:
        return [], "none (a class has fewer than 2 photos)"
    return stratified_folds(labels, k, seed), f"{k} stratified folds"


def fold_dataset(pool: Dataset, test_indices: torch.Tensor) -> Dataset:
    """A Dataset whose test split is `test_indices` of the pool and whose train split is the rest."""
    everything = pool.train
    is_test = torch.zeros(len(everything), dtype=torch.bool)
    is_test[test_indices] = True
    return Dataset(
        root=pool.root,
        layout="fold",
        classes=pool.classes,
        image_size=pool.image_size,
        train=subset_images(everything, torch.nonzero(~is_test).flatten(), "train"),
        test=subset_images(everything, torch.nonzero(is_test).flatten(), "test"),
        skipped=pool.skipped,
        fingerprint=pool.fingerprint,
    )


def validation_split(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """A Dataset whose train/test are a stratified split of `dataset.train` alone.

    For choosing recipes and settings: the real test split is never looked at.
    """
    train_idx, val_idx = stratified_split(dataset.train.labels, fraction, seed)
    return Dataset(
        root=dataset.root,
        layout="validation",
        classes=dataset.classes,
        image_size=dataset.image_size,
        train=subset_images(dataset.train, train_idx, "train"),
        test=subset_images(dataset.train, val_idx, "validation"),
        skipped=dataset.skipped,
        fingerprint=dataset.fingerprint,
    )
