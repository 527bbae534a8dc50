"""`pasture adapt` for a fine-tuned run (its backbone trains): the run's own labels of the new camera's
photos where it is at least CONFIDENT sure, and the labelled ones of LABELS.csv, join its training photos,
and its recipe is trained again from the same start; the guard of classify.adapt keeps the original when
the new run changes most labels or puts every photo in one class.

Why self-training and not FixMatch's consistency term: measured (benchmarks/adapt_networks.py, trained on
cowhorse-dev, the 240 photos of cowhorse-sources as the new camera), a fine-tuned EfficientNet-Lite0 run
labelled 81 of them at >= 0.95, all 81 right, and `pasture adapt` took it from 87.5% to 92.9% on the new
camera (+14 / -1 photos, exact McNemar p = 0.001), on a CPU-sized schedule (the recipe's own 8 epochs). A run trained from scratch is refused before any of this (classify.new_camera): it is at chance
on a new camera (52.1%) and labels none of its photos that surely, so it would have nothing to learn.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from pasture.classify.adapt import guard
from pasture.classify.evaluate import predict_probabilities
from pasture.classify.finish import finish_run
from pasture.classify.fit import train_classifier
from pasture.classify.recipes import Recipe
from pasture.classify.trained import LoadedRun
from pasture.core.locks import LOCK_NAME
from pasture.core.record import RUN_FOLDER
from pasture.core.runs import RUN_FILES, atomic_write_json, opened_run, read_json, remove_own_files
from pasture.data import ImageSet

CONFIDENT = 0.95  # FixMatch's threshold (Sohn et al. 2020): 81 of 81 right on the benchmark's new camera
METHOD = (
    f"self-training: the new photos the run labels with probability >= {CONFIDENT} (and any labelled by hand) "
    "joined its training photos under those labels; the recipe trained again"
)


def adapt_network(photos, labelled: dict[int, int], out: Path, recipe: Recipe, options: dict) -> dict:
    """A new run folder `out`: the run of `photos` (classify.new_camera.NewPhotos: the run, its split, the
    new photos decoded) trained again with its sure labels of the new photos added. `options`: quiet,
    force, command, warn. Returns what adapt reports; when no photo is labelled surely enough, or the
    guard refuses the new model, `kept_original` is True and no run is left in `out`."""
    original = LoadedRun(photos.run, photos.device).probabilities(photos.images)  # with the run's TTA
    confidence, pseudo = original.max(1)
    keep = confidence >= CONFIDENT
    for index, label in labelled.items():
        pseudo[index], keep[index] = label, True
    base = {"labelled": len(labelled), "method": METHOD, "confident": int((confidence >= CONFIDENT).sum())}
    if not bool(keep.any()):
        _, report = guard(original.argmax(1), original.argmax(1), photos.classes)
        nothing = (
            f"it labels none of these photos with probability {CONFIDENT} or more, so training on its own "
            "labels would learn nothing; label a few (LABELS.csv, --labels), or adapt a probe run and distill "
            "from it (docs/results/adapt.md)"
        )
        return {**report, **base, "kept_original": True, "why": nothing}
    dataset = dataclasses.replace(photos.dataset, train=_with_new_photos(photos, pseudo, keep))
    config, identity = photos.adapted_config(recipe, METHOD, len(labelled), base)
    warn = options["warn"]
    with opened_run(
        out,
        identity,
        config,
        RUN_FOLDER,
        force=options["force"],
        command=options["command"],
        warn=warn,
        on_interrupt=f"{out} is not finished; run the same command with --force to adapt again",
    ):
        seed = int(photos.config.get("seed", 0))
        result = train_classifier(dataset, recipe, seed, run_dir=out, quiet=options["quiet"], device=photos.device)
        adapted = predict_probabilities(result.model, photos.images, tta=bool(recipe.tta)).argmax(1)
        why, report = guard(original.argmax(1), adapted, photos.classes)
        report = {**report, **base}
        if why is None:  # what it changed is known now: the model card says it (config.json's "adapted")
            written = read_json(out / "config.json")
            written["adapted"].update({key: report[key] for key in ("changed", "shares_before", "shares_after")})
            atomic_write_json(out / "config.json", written)
        finished = finish_run(out, result, dataset, recipe) if why is None else None
    if why is not None:
        _remove_run(out)
        warn(f"the adapted model was not kept: {why}; the original run stays as it is")
        return {**report, "kept_original": True, "why": why}
    return {**report, "kept_original": False, "run": str(out), "metrics": finished}


def _with_new_photos(photos, pseudo: torch.Tensor, keep: torch.Tensor) -> ImageSet:
    """The run's training photos with the kept new photos added under their labels."""
    train = photos.dataset.train
    rows = keep.nonzero().flatten()
    return ImageSet(
        images=torch.cat([train.images, photos.images[rows]]),
        labels=torch.cat([train.labels, pseudo[rows]]),
        files=train.files + [str(photos.files[int(row)]) for row in rows],
        classes=train.classes,
        split="train",
        groups=train.groups + ["new photos"] * len(rows) if train.groups is not None else None,
    )


def _remove_run(out: Path) -> None:
    """A refused adaptation leaves nothing: pasture's own files, then the folder when that emptied it."""
    remove_own_files(out, (*RUN_FILES, LOCK_NAME))
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
