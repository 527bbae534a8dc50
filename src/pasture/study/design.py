"""The design of a study: the replicates every condition runs on (a fixed split's seeds, repeated
stratified k-fold, or leave-one-group-out), and the RunTask of each (condition, replicate) pair, keyed
by what makes its run what it is. Shared by experiments and tune. Torch-free.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pasture.core.defaults import DEFAULT_MIN_IMAGE_SIZE, without_labels
from pasture.core.errors import UserError
from pasture.study.conditions import Condition


@dataclass(frozen=True)
class Replicate:
    """One split + seed that every condition is run on."""

    index: int
    seed: int
    repeat: int = 0
    fold: int | None = None  # None: the fixed train/test split
    folds: int | None = None
    group: str | None = None  # leave-one-group-out: the group (photo source) that is the test set


GROUP_FOLDS = "groups"  # --folds groups: each group's images are the test set once


def kfold_replicates(folds: int, repeats: range) -> list[Replicate]:
    """Repeats of a stratified `folds`-fold split: repeat r uses seed r, fold f is its f-th part. Shared
    by experiments and by tune (whose confirmation uses repeats the search never saw)."""
    return [
        Replicate(index=r * folds + f, seed=r, repeat=r, fold=f, folds=folds) for r in repeats for f in range(folds)
    ]


def plan_replicates(
    layout: str, seeds: int, folds: int | str | None, group_names: list[str] | None = None
) -> list[Replicate]:
    """The replicates every condition runs on: seeds on a fixed split, `seeds` repeats of stratified
    k-fold, or (folds="groups") `seeds` repeats of leave-one-group-out over `group_names`."""
    if layout == "train/test":
        if folds:
            raise UserError("--folds: DATA has a fixed train/test split; folds need DATA/<class>/ folders")
        return [Replicate(index=i, seed=i) for i in range(seeds)]
    if folds == GROUP_FOLDS:
        if not group_names or len(group_names) < 2:
            raise UserError("--folds groups: needs --groups with at least two groups (photo sources)")
        k = len(group_names)
        return [
            Replicate(index=r * k + g, seed=r, repeat=r, fold=g, folds=k, group=name)
            for r in range(seeds)
            for g, name in enumerate(group_names)
        ]
    return kfold_replicates(int(folds or 5), range(seeds))  # GROUP_FOLDS is handled above


def content_hash(data: dict) -> str:
    """16 hex digits naming `data` by content (stored runs, GANs and teachers are keyed by it)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunTask:
    """One (condition, replicate) of a study: everything a run needs to know, and nothing it reads
    (that is pasture.study.inputs). It is picklable, so an engine can send it to another process or
    machine. `key` names the stored run (DIR/runs/<key>/) by its settings."""

    key: str
    data: str  # the data folder
    out: str  # the study folder
    layout: str  # "train/test" or "classes" (pasture.data.detect_layout)
    condition: Condition
    replicate: Replicate
    fingerprint: str = ""  # the data's file names and sizes: a changed folder is read again
    classes: tuple[str, ...] | None = None
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE
    groups: str | None = None  # a CSV or "subfolders"
    group_column: str = "group"
    threads: int = 0  # torch threads for this run (a --jobs share); 0: the process's own
    eval_every: int = 1
    device: str = "cpu"
    # (test_fraction, split_seed): the replicate is a fold of the training split `train` makes (tune)
    split: tuple[float, int] | None = None

    @property
    def condition_settings(self) -> dict:
        """The condition as stored with the run and as timings are keyed (all fields, labels excluded)."""
        data = without_labels(dataclasses.asdict(self.condition))
        data["overrides"] = list(self.condition.overrides)
        data["gan_overrides"] = list(self.condition.gan_overrides)
        return data


def _file_fingerprint(path: str) -> str | None:
    """Content id of a groups table (None for "subfolders", whose groups are in the data's own paths)."""
    if path == "subfolders":
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _folder_fingerprint(folder: str | None) -> str | None:
    """Content id of a fixed synthetic set, so that a re-sampled set at the same path is not reused."""
    if folder is None:
        return None
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--conditions synthetic={folder}: no such folder; give the --out of `pasture gan sample`")
    listing = sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())
    return content_hash({"files": listing})


def study_tasks(spec, layout: str, fingerprint: str, replicates: list[Replicate], threads: int = 0) -> list[RunTask]:
    """Every (condition, replicate) of `spec` (an ExperimentSpec) as a RunTask, conditions outermost."""
    tasks = []
    for condition in spec.conditions:
        for replicate in replicates:
            settings: dict = {
                "condition": condition.settings(),
                "replicate": dataclasses.asdict(replicate),
                "fingerprint": fingerprint,
                "classes": spec.classes,
                "min_image_size": spec.min_image_size,
                "synthetic_fingerprint": _folder_fingerprint(condition.synthetic_dir),
            }
            if spec.groups is not None:  # which images form each group is part of what a run is
                settings["groups"] = [spec.groups, spec.group_column, _file_fingerprint(spec.groups)]
            if spec.split is not None:  # folds of the training split that this split leaves
                settings["split"] = list(spec.split)
            tasks.append(
                RunTask(
                    key=content_hash(settings),
                    data=spec.data,
                    out=spec.out,
                    layout=layout,
                    condition=condition,
                    replicate=replicate,
                    fingerprint=fingerprint,
                    classes=tuple(spec.classes) if spec.classes else None,
                    min_image_size=spec.min_image_size,
                    groups=spec.groups,
                    group_column=spec.group_column,
                    threads=threads,
                    eval_every=spec.eval_every,
                    device=spec.device,
                    split=tuple(spec.split) if spec.split else None,
                )
            )
    return tasks
