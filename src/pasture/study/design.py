"""The replicate design: the splits and seeds every condition of a study runs on (a fixed split's
seeds, repeated stratified k-fold, or leave-one-group-out). Shared by experiments and tune.
Cut out of study/experiment.py (issue 28).
"""

from __future__ import annotations

from dataclasses import dataclass

from pasture.core.errors import UserError


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
