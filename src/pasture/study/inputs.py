"""What a run reads from disk: the replicate's data at a size, unlabelled photos, a fixed synthetic
set, and the GANs a run samples from, behind one object (RunInputs) that a run is given.

A local run reads through LOCAL, which loads on first use and keeps what it read (workers load once).
A Ray worker is given a RunInputs.shipped(...) filled with what the driver loaded and sent (worker
nodes have no copy of the photos): a read that was not shipped is a bug, said at once, rather than a
confusing "no such folder" on a machine that never had the folder.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import torch

from pasture.classify.recipes import resolve_recipe
from pasture.core.defaults import DEFAULT_TEST_FRACTION
from pasture.core.device import reproducible_on
from pasture.data import (
    decode_files,
    fold_dataset,
    image_files_in,
    load_dataset,
    load_pool,
    load_synthetic,
    stratified_folds,
)
from pasture.gan.presets import GanPreset, get_gan_preset
from pasture.study.design import RunTask

# A study reads its data at a few sizes (one per recipe, GAN and teacher size): 8 entries hold every one
# of them, and a data set decoded at 224 px is about 0.15 MB per photo.
DATA_CACHE_ENTRIES = 8


class _RecentlyUsed(collections.OrderedDict):
    """A dict that keeps its `limit` most recently used entries (a notebook that runs study after study
    kept every data set it had ever decoded)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def task_device(task: RunTask) -> torch.device:
    """The device a task runs on, set up for reproducible numbers (workers are processes of their own)."""
    return reproducible_on(torch.device(task.device))


def gan_preset_of(task: RunTask) -> GanPreset:
    """The GAN preset of a GAN task's condition, with the condition's overrides."""
    condition = task.condition
    assert condition.gan_preset is not None
    return dataclasses.replace(get_gan_preset(condition.gan_preset), **dict(condition.gan_overrides))


class RunInputs:
    """Everything runs read, by key: loaded on first use (`shipped_only=False`) or given (a Ray worker's)."""

    def __init__(self, limit: int = DATA_CACHE_ENTRIES, shipped_only: bool = False):
        self.loaded: dict = _RecentlyUsed(limit)
        self.shipped_only = shipped_only
        self.gans: dict[str, list] = {}  # GAN store folder name -> its units (shipped with a Ray task)

    @classmethod
    def shipped(cls, keys: list, values: list, gan_names=(), gan_units=()) -> RunInputs:
        """The inputs a Ray driver sent with one task: nothing else can be read."""
        inputs = cls(limit=max(1, len(keys)), shipped_only=True)
        inputs.loaded.update(zip(keys, values))
        inputs.gans.update(zip(gan_names, gan_units))
        return inputs

    def read(self, key: tuple, load):
        """Everything a run reads from disk goes through here: once per process, keyed by what was read."""
        if key not in self.loaded:
            if self.shipped_only:
                raise RuntimeError(f"pasture: a Ray task needed {key[:2]} but the driver did not ship it")
            self.loaded[key] = load()
        return self.loaded[key]

    def data_at(self, task: RunTask, image_size: int):
        """The whole data of a task at `image_size`: the train/test split (or, with task.split, the
        split `train` makes of class folders) or the unsplit pool."""
        quiet = lambda message: None  # noqa: E731  (skips are reported once, in the data summary)
        options: dict[str, Any] = {
            "classes": list(task.classes) if task.classes else None,
            "min_image_size": task.min_image_size,
            "warn": quiet,
        }
        if task.layout == "train/test" or task.split:
            fraction, seed = task.split or (DEFAULT_TEST_FRACTION, 0)

            def load():
                return load_dataset(task.data, image_size, test_fraction=fraction, split_seed=seed, **options)
        else:

            def load():
                return load_pool(task.data, image_size, groups=task.groups, group_column=task.group_column, **options)

        return self.read(data_key(task, image_size), load)

    def replicate_dataset(self, task: RunTask, image_size: int):
        """The Dataset of a replicate at `image_size`: the fixed split, fold `fold` of repeat `repeat`,
        the held-out group, or (a tuning replicate) a fold of the training split alone."""
        data = self.data_at(task, image_size)
        replicate = task.replicate
        if replicate.fold is None:
            return data
        if replicate.group is not None:  # leave one group out: its images are the test set
            held_out = [index for index, group in enumerate(data.train.groups) if group == replicate.group]
            return fold_dataset(data, torch.tensor(held_out, dtype=torch.long))
        # Folds of data.train: the pool (class folders), or for tuning the training split, whose test
        # split is dropped here and never seen.
        assert replicate.folds is not None
        folds = stratified_folds(data.train.labels, replicate.folds, seed=replicate.repeat)
        return fold_dataset(data, folds[replicate.fold])

    def unlabeled_at(self, folder: str, image_size: int) -> torch.Tensor:
        return self.read(("unlabeled", folder, image_size), lambda: decode_files(image_files_in([folder]), image_size))

    def synthetic_at(self, folder: str, classes: list[str], image_size: int):
        return self.read(
            ("synthetic", folder, tuple(classes), image_size),
            lambda: load_synthetic(folder, classes, image_size)[0],
        )

    def of_task(self, task: RunTask) -> dict:
        """{key: value} of everything `task` reads from disk, loaded here: a Ray driver ships these to
        the worker, which then reads nothing (the same methods load them in a local run)."""
        condition = task.condition
        recipe = resolve_recipe(condition.recipe, **dict(condition.overrides))
        sizes = {recipe.image_size}
        extra = []
        if condition.teacher:
            teacher_size = resolve_recipe(condition.teacher).image_size
            sizes.add(teacher_size)
            if condition.unlabeled_dir:
                extra.append(("unlabeled", condition.unlabeled_dir, teacher_size))
        if condition.gan_preset:
            sizes.add(gan_preset_of(task).image_size)
        found: dict[tuple, Any] = {data_key(task, size): self.data_at(task, size) for size in sorted(sizes)}
        for unlabeled in extra:  # the unlabeled photos, read above
            found[unlabeled] = self.unlabeled_at(unlabeled[1], unlabeled[2])
        if condition.synthetic_dir:
            classes = found[data_key(task, recipe.image_size)].classes
            key = ("synthetic", condition.synthetic_dir, tuple(classes), recipe.image_size)
            found[key] = self.synthetic_at(condition.synthetic_dir, classes, recipe.image_size)
        return found


def data_key(task: RunTask, image_size: int) -> tuple:
    # The fingerprint (file names and sizes) is in the key: a notebook that changes the photos between
    # two studies gets the new photos, not the ones this process decoded first.
    key = (
        "data",
        task.data,
        image_size,
        task.layout,
        tuple(task.classes or ()),
        task.min_image_size,
        task.groups,
        task.group_column,
        task.fingerprint,
    )
    return key + tuple(task.split) if task.split else key


# What local runs read through: one per process, so a --jobs worker decodes each data set once.
LOCAL = RunInputs()
