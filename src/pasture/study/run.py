"""One run of a study: train and score one (condition, replicate), store it under
DIR/runs/<task key>/result.json, and read stored runs back (a stored run is never computed again).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from pasture.classify.explain import score_and_plot_top_losses
from pasture.classify.fit import train_classifier
from pasture.classify.recipes import resolve_recipe, synthetic_share
from pasture.core.record import RunRecord
from pasture.core.runs import atomic_write_bytes, atomic_write_json, read_json
from pasture.study.design import RunTask
from pasture.study.gan_store import gan_samples
from pasture.study.inputs import LOCAL, RunInputs, task_device
from pasture.study.teachers import teacher_bank_of
from pasture.study.timings import remember, timing_key

RESULT_FORMAT = 2  # 1: flat metrics before the RunRecord; such stored runs are recomputed


def run_folder(task: RunTask) -> Path:
    return Path(task.out) / "runs" / task.key


def execute_run(task: RunTask, inputs: RunInputs | None = None) -> dict:
    """Run one (condition, replicate) and store its result; returns the stored dict: the run's
    RunRecord under "record", with where the run sits in the design beside it."""
    folder = run_folder(task)
    folder.mkdir(parents=True, exist_ok=True)
    stored, seconds = compute_run(task, folder, inputs)
    return store_run(task, stored, seconds)


def compute_run(task: RunTask, folder: Path, inputs: RunInputs | None = None) -> tuple[dict, float]:
    """Train and score one (condition, replicate), reading through `inputs` (this process's LOCAL
    when None); its figure (top_losses.png) goes into `folder`. Returns (the dict to store, the
    classifier's seconds). Stores nothing: see store_run.

    With the task's `threads` (a --jobs share), and the caller's thread count back after: a pool's
    last run may run in the calling process, which must not be left with one thread."""
    before = torch.get_num_threads()
    if task.threads:
        torch.set_num_threads(task.threads)
    try:
        return _compute_run(task, folder, LOCAL if inputs is None else inputs)
    finally:
        torch.set_num_threads(before)


def _compute_run(task: RunTask, folder: Path, inputs: RunInputs) -> tuple[dict, float]:
    condition = task.condition
    recipe = resolve_recipe(condition.recipe, **dict(condition.overrides))
    dataset = inputs.replicate_dataset(task, recipe.image_size)
    started = time.perf_counter()
    synthetic, gan_dir, ratio, bank, teacher_info = None, None, 0.0, None, None
    if condition.teacher:
        bank, gan_dir, teacher_info = teacher_bank_of(task, inputs, recipe, len(dataset.classes))
    elif condition.gan_preset:
        synthetic, gan_dir = gan_samples(task, inputs, recipe.image_size)
    elif condition.synthetic_dir:
        synthetic = inputs.synthetic_at(condition.synthetic_dir, dataset.classes, recipe.image_size)
    if synthetic is not None:  # checked at parsing: a ratio of None means the default share, never 0
        given = condition.synthetic_ratio
        ratio = synthetic_share(len(synthetic), len(dataset.train)) if given is None else given
    classifier_started = time.perf_counter()
    result = train_classifier(
        dataset,
        recipe,
        task.replicate.seed,
        synthetic=synthetic,
        synthetic_ratio=ratio,
        eval_every=task.eval_every,
        device=task_device(task),
        bank=bank,
    )
    record = score_and_plot_top_losses(result, dataset, recipe, folder)
    stored = {
        "format": RESULT_FORMAT,
        "key": task.key,
        "condition": condition.name,
        "condition_settings": task.condition_settings,
        "replicate": dataclasses.asdict(task.replicate),
        "recipe_settings": recipe.to_dict(),
        "gan_dir": gan_dir,
        "synthetic_ratio": ratio,
        "n_synthetic": len(synthetic) if synthetic is not None else 0,
        **({"teacher": teacher_info} if teacher_info is not None else {}),
        "seconds": time.perf_counter() - started,
        "record": record.to_dict(),
    }
    return stored, time.perf_counter() - classifier_started


def store_run(task: RunTask, stored: dict, seconds: float, files: dict[str, bytes] | None = None) -> dict:
    """Store a computed run: its files (when computed elsewhere), the time it took (for study plans),
    and result.json last, which marks the run as done."""
    folder = run_folder(task)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        atomic_write_bytes(folder / name, data)
    remember("run", run_timing_key(task), seconds)
    atomic_write_json(folder / "result.json", stored)
    return stored


def run_timing_key(task: RunTask) -> str:
    """What decides a classifier run's time (not its seed): condition, data, kind of replicate."""
    return timing_key(
        {
            "condition": task.condition_settings,
            "fingerprint": task.fingerprint,
            "folds": task.replicate.folds,
            "group": task.replicate.group,
        },
        task_device(task),
    )


def read_stored_run(path: Path) -> dict | None:
    """A stored run's result.json, or None when it is absent, unreadable or of another format (such a
    run is simply computed again)."""
    try:
        stored = read_json(path)
        if stored.get("format") != RESULT_FORMAT:
            return None
        RunRecord.from_dict(stored["record"])
        return stored
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def stored_runs(out: Path, tasks: list[RunTask], warn) -> dict[str, dict | None]:
    """{key: stored result or None}; a damaged or older-format result is computed again, said once."""
    stored, damaged = {}, []
    for task in tasks:
        path = out / "runs" / task.key / "result.json"
        stored[task.key] = read_stored_run(path)
        if stored[task.key] is None and path.is_file():
            damaged.append(path)
    if damaged and warn is not None:
        warn(
            f"{damaged[0]}"
            + (f" and {len(damaged) - 1} more stored run(s)" if len(damaged) > 1 else "")
            + ": damaged or from an older pasture; computing again"
        )
    return stored


def pending_tasks(tasks: list[RunTask], stored: dict) -> list[RunTask]:
    """The tasks whose run is not stored, once per key: runs are stored by settings, not by condition
    name, so two names for the same settings share runs."""
    return list({task.key: task for task in tasks if stored[task.key] is None}.values())
