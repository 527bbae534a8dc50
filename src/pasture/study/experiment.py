"""Experiments: conditions x replicates (seeds, or repeated stratified folds), paired, resumable.

Every condition runs on the same replicates (same split and seed), so conditions can be compared
pair by pair, which removes the split-to-split and seed-to-seed noise they share. Each finished run
is stored under DIR/runs/<hash of its settings>/result.json; running the same experiment again skips
what is stored, and adding a condition runs only the new runs. A GAN condition trains its GAN on the
replicate's training part only, in the shared GAN store (pasture.study.gan_store).

This module holds the spec and run_experiment, which checks the spec, plans and runs the study and
writes its report; the stages live beside it: conditions and design (what is compared, on which
replicates, as RunTasks), inputs (what a run reads), gan_store and teachers (what runs share), run
(one run, stored), plan (the plan and its estimate) and engines (how runs are executed).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pasture.classify.fit import check_eval_every
from pasture.classify.recipes import check_synthetic_allowed, resolve_recipe
from pasture.core.defaults import DEFAULT_MIN_IMAGE_SIZE
from pasture.core.device import resolve_device
from pasture.core.errors import UserError
from pasture.core.locks import locked_folder
from pasture.core.runs import (
    RUN_FILES,
    atomic_write_json,
    check_output_folder,
    check_writable,
    remove_orphan_temp_files,
    remove_own_files,
    versions,
)
from pasture.data import detect_layout, load_dataset, load_pool
from pasture.gan.presets import get_gan_preset
from pasture.gan.trainer import validate_gan_preset
from pasture.study.conditions import Condition
from pasture.study.design import GROUP_FOLDS, Replicate, RunTask, plan_replicates, study_tasks
from pasture.study.engines import AUTO_JOBS, Engine, LocalEngine, effective_threads, run_tasks
from pasture.study.plan import plan_text, study_plan
from pasture.study.report import write_report
from pasture.study.run import pending_tasks, read_stored_run, stored_runs


@dataclass
class ExperimentSpec:
    data: str
    out: str
    conditions: list[Condition]
    seeds: int = 5
    folds: int | str | None = None  # k, or "groups" (leave-one-group-out)
    classes: list[str] | None = None
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE
    groups: str | None = None  # a CSV or "subfolders" (pasture.data.groups)
    group_column: str = "group"
    jobs: int | str = 1  # runs at once on this machine, or "auto" (auto_jobs)
    eval_every: int = 1  # test-split curve points every K epochs; results are the same (not in the run key)
    quiet: bool = False
    title: str = "pasture experiment"
    report_numbers: dict = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    force: bool = False  # remove pasture's own files from `out` first (never a user's)
    device: str = "cpu"  # a resolved device name; every run of the study uses it (--jobs runs share it)
    dry_run: bool = False  # only the plan: nothing is trained or written
    engine: Engine | None = None  # how runs are executed (LocalEngine(jobs) when None; pasture.study.engines)
    # (test_fraction, split_seed): replicates are folds of the training split that `train` makes of
    # DATA/<class>/ with these (tuning: its test split is never loaded into a run); None for studies
    split: tuple | None = None


@dataclass
class StudyOptions:
    """How a study (an experiment or a search) is run, as the api and the CLI take it: on which engine
    and device, how loud, and whether to start again. Options as data: api.experiment and api.tune take
    one of these (or a keyword per field), as api.train takes a recipe plus overrides."""

    engine: str = "local"  # local: this machine (`jobs` processes); ray: every run a Ray task
    jobs: int | str = "auto"
    ray_address: str | None = None  # with engine="ray": "auto" or HOST:PORT of a cluster
    threads_per_run: int | None = None  # with engine="ray": CPUs per task (default 1)
    device: str = "auto"
    quiet: bool = False
    force: bool = False  # remove pasture's own files from the folder first (never a user's)
    command: list[str] | None = None  # the command line, for the record (None: called from Python)


@dataclass
class ExperimentOptions(StudyOptions):
    """What api.experiment compares, and on which replicates (see its docstring)."""

    conditions: list[str] | None = None
    paper: bool = False  # the report's table: paper, +transforms, +DCGAN, and pasture's for contrast
    seeds: int = 5
    folds: int | str | None = None  # k (repeated stratified k-fold), or "groups" (leave-one-group-out)
    groups: str | None = None  # a CSV with columns file and group_column, or "subfolders"
    group_column: str = "group"
    recipe: str | None = None  # for written conditions that name none
    model: str | None = None
    classes: list[str] | None = None
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE
    eval_every: int = 1
    dry_run: bool = False


# Fields a study's options and its spec share by name but not by meaning: the spec's engine is an Engine
# (the options name one), its conditions are parsed, its command and device resolved.
NOT_COPIED = {"engine", "conditions", "command", "device"}


def spec_from_options(spec_type, options: StudyOptions, **resolved):
    """A study's spec (ExperimentSpec, TuneSpec) from its options object: every field the two share by
    name, copied, then what the caller resolved (data, out, conditions, the device, ...; these win),
    instead of each field copied by hand. The command line defaults to none (called from Python)."""
    names = {item.name for item in dataclasses.fields(spec_type)}
    shared = {
        item.name: getattr(options, item.name)
        for item in dataclasses.fields(options)
        if item.name in names and item.name not in NOT_COPIED
    }
    return spec_type(**{**shared, "command": list(options.command or []), **resolved})


def with_fields(options, function: str, fields: dict):
    """`options` with keyword shorthands applied: each must be one of its fields."""
    known = {f.name for f in dataclasses.fields(options)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument {unknown[0]!r}")
    return dataclasses.replace(options, **fields) if fields else options


# What an experiment writes into its folder (glob patterns); --force removes only these.
EXPERIMENT_FILES = (
    "experiment.json",
    "report.md",
    "report.html",
    "results.csv",
    "results.json",
    "figures/accuracy.png",
    "figures/curves_*.png",
    "figures/confusion_*.png",
    "runs/*/result.json",
    "runs/*/top_losses.png",
    *(f"gans/*/{pattern}" for pattern in RUN_FILES),
    "teachers/*/teacher.pt",
)


def _remove_own_files(out: Path, patterns: tuple) -> None:
    remove_own_files(out, patterns)
    for pattern in ("runs/*", "gans/*", "teachers/*", "runs", "gans", "teachers", "figures"):  # ours, once emptied
        for folder in out.glob(pattern):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def open_study_folder(
    out: Path, force: bool, marker: str = "experiment.json", what: str = "experiment", files: tuple = EXPERIMENT_FILES
) -> None:
    """Refuse a folder that holds something else than this kind of study (its `marker` file), or,
    with --force, clear pasture's own `files` (glob patterns) from it; used by experiments and tune."""
    if force:  # as `train --force`: pasture's own files go, the user's stay, and pasture writes beside them
        check_output_folder(out, None, what)
        if out.is_dir():
            _remove_own_files(out, files)
    else:
        check_output_folder(out, marker, what)
    check_writable(out)
    remove_orphan_temp_files(out, recursive=True)


def run_experiment(spec: ExperimentSpec, warn=None) -> dict:
    """Run every condition on every replicate (skipping stored runs), then write the report.

    Returns the results dict (also DIR/results.json)."""
    if not spec.conditions:
        raise UserError("--conditions: give at least one condition")
    names = [condition.name for condition in spec.conditions]
    if len(set(names)) != len(names):
        raise UserError(f"--conditions: names must differ ({', '.join(names)})")
    if spec.seeds < 1:
        raise UserError(f"--seeds {spec.seeds}: must be at least 1")
    check_eval_every(spec.eval_every)
    root = Path(spec.data)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; give the folder that holds your class folders")
    layout = detect_layout(root)
    if spec.folds == GROUP_FOLDS and spec.groups is None:
        raise UserError("--folds groups: say which photos come from which source with --groups FILE.csv or subfolders")
    for condition in spec.conditions:  # every condition checked before any work starts
        _check_condition(condition)
    summary_data = _summary_data(spec, root, layout, warn)
    group_names = sorted(set(summary_data.train.groups)) if summary_data.train.groups is not None else None
    replicates = plan_replicates(layout, spec.seeds, spec.folds, group_names)
    out = Path(spec.out)
    start_engine(spec, out)  # a cluster that cannot be reached or used is said before anything is written
    if spec.dry_run:  # reads what is stored, writes nothing
        check_output_folder(out, "experiment.json", "experiment")
        tasks = tasks_of(spec, layout, summary_data.fingerprint, replicates)
        stored = {
            task.key: (None if spec.force else read_stored_run(out / "runs" / task.key / "result.json"))
            for task in tasks
        }
        plan = study_plan(spec, engine_of(spec), tasks, stored, replicates)
        return {"plan": plan, "plan_text": plan_text(plan)}
    with locked_folder(out, "experiment"):  # the lock first: --force on a live study deletes nothing
        open_study_folder(out, spec.force)
        atomic_write_json(out / "experiment.json", _study_record(spec, root, layout))
        return _run_all(spec, out, layout, summary_data, replicates, warn)


def _check_condition(condition) -> None:
    """One condition of a study, checked as `train` and `gan train` would check it."""
    recipe = resolve_recipe(condition.recipe, **dict(condition.overrides))
    if condition.gan_preset:  # the preset with the condition's overrides, checked as `gan train` checks it
        try:
            validate_gan_preset(
                dataclasses.replace(get_gan_preset(condition.gan_preset), **dict(condition.gan_overrides))
            )
        except UserError as error:
            raise UserError(f"--conditions {condition.name}: {error}") from None
    if condition.gan_preset or condition.synthetic_dir:
        check_synthetic_allowed(recipe, f"--conditions {condition.name}")
    if condition.unlabeled_dir is not None and condition.teacher is None:
        raise UserError(f"--conditions {condition.name}: unlabeled=DIR needs teacher=RECIPE, which labels them")
    if condition.unlabeled_dir is not None and not Path(condition.unlabeled_dir).is_dir():
        raise UserError(f"--conditions {condition.name}: unlabeled={condition.unlabeled_dir}: no such folder")
    if condition.teacher is not None:
        resolve_recipe(condition.teacher)
        if condition.synthetic_dir or recipe.pretrained == "probe":
            raise UserError(
                f"--conditions {condition.name}: a distilled student trains on images (not a probe) "
                "and takes GAN samples through gan=PRESET, not synthetic=DIR"
            )


def _summary_data(spec: ExperimentSpec, root: Path, layout: str, warn):
    """The data as the report describes it (and as the replicates are planned on): the train/test split,
    or the whole pool of class folders, at the first condition's image size."""
    size = resolve_recipe(spec.conditions[0].recipe, **dict(spec.conditions[0].overrides)).image_size
    if layout == "train/test":
        return load_dataset(
            root, size, classes=spec.classes, min_image_size=spec.min_image_size, warn=warn or (lambda m: None)
        )
    else:
        return load_pool(
            root,
            size,
            classes=spec.classes,
            min_image_size=spec.min_image_size,
            warn=warn or (lambda m: None),
            groups=spec.groups,
            group_column=spec.group_column,
        )


def _study_record(spec: ExperimentSpec, root: Path, layout: str) -> dict:
    """experiment.json: what the study is, written first (a folder killed during this write holds only
    a temp file and the lock, both recognised as leftovers next time)."""
    return {
        "title": spec.title,
        "data": str(root.resolve()),
        "layout": layout,
        "seeds": spec.seeds,
        "folds": spec.folds if layout != "train/test" else None,
        "conditions": [c.name for c in spec.conditions],
        "command": spec.command,
        "versions": versions(),
        "engine": engine_of(spec).name,
        "threads_per_run": effective_threads(engine_of(spec)),
    }


def engine_of(spec: ExperimentSpec) -> Engine:
    if spec.engine is None:
        spec.engine = LocalEngine(spec.jobs)
    return spec.engine


def start_engine(spec: ExperimentSpec, out: Path | None) -> Engine:
    """The study's engine, with --jobs auto resolved (for `out`'s stored runs) and started."""
    engine = engine_of(spec)
    if isinstance(engine, LocalEngine):
        engine.settle(spec.device, None if spec.force else out)
    engine.start()
    return engine


def tasks_of(spec: ExperimentSpec, layout: str, fingerprint: str, replicates: list[Replicate]) -> list[RunTask]:
    """The study's RunTasks, each with its engine's thread share."""
    return study_tasks(spec, layout, fingerprint, replicates, engine_of(spec).threads_per_run())


def _run_all(spec: ExperimentSpec, out: Path, layout: str, summary_data, replicates, warn) -> dict:
    tasks = tasks_of(spec, layout, summary_data.fingerprint, replicates)
    stored = stored_runs(out, tasks, warn)
    todo = pending_tasks(tasks, stored)
    gans: dict[str, float | None] = {}
    if not spec.quiet and todo:
        plan = study_plan(spec, engine_of(spec), tasks, stored, replicates)
        print(plan_text(plan), file=sys.stderr, flush=True)
        gans = plan["gan_seconds"]
    started = time.perf_counter()
    stored.update(run_tasks(engine_of(spec), todo, len(stored), spec.quiet, out, gans=gans))
    results = [{**(stored[task.key] or {}), "condition": task.condition.name} for task in tasks]
    return write_report(
        spec, layout, summary_data, replicates, results, ran=len(todo), seconds=time.perf_counter() - started
    )


ENGINES = ("local", "ray")


def run_on_engine(run, spec, warn, options: StudyOptions):
    """run(spec) on the engine `options` names, closed after (a Ray instance started for it stops)."""
    spec.engine = make_engine(
        options.engine,
        jobs=options.jobs,
        ray_address=options.ray_address,
        threads_per_run=options.threads_per_run,
        device=spec.device,
    )
    try:
        return run(spec, warn=warn)
    finally:
        spec.engine.close()


def study_device(device: str, engine: str) -> str:
    """The device a study's runs use: --device auto resolves to what the engine accepts (the Ray engine
    runs on CPUs, so auto on a GPU machine is the CPU there, not a refusal naming a --device never given)."""
    if device == "auto" and engine == "ray":
        return "cpu"
    return str(resolve_device(device))


def make_engine(
    name: str,
    *,
    jobs: int | str = "auto",
    ray_address: str | None = None,
    threads_per_run: int | None = None,
    device: str = "cpu",
):
    """The engine that executes a study's runs: LocalEngine(jobs) or a RayEngine (imported only here,
    so a plain install never needs Ray)."""
    if name not in ENGINES:
        raise UserError(f"--engine {name}: choose local or ray")
    if name == "local":
        if ray_address is not None:
            raise UserError("--ray-address: give --engine ray too")
        if threads_per_run is not None:
            raise UserError(
                "--threads-per-run: applies to --engine ray; the local engine gives each of --jobs "
                "workers cores/jobs threads"
            )
        return LocalEngine(jobs)
    if jobs not in (1, AUTO_JOBS):
        raise UserError(
            "--jobs: applies to --engine local; Ray runs as many runs at once as the cluster has "
            "CPUs / --threads-per-run"
        )
    if device != "cpu":
        raise UserError(
            f"--device {device}: --engine ray runs on CPUs in this version; on a GPU machine use --engine local"
        )
    from pasture.study.ray_engine import RayEngine

    return RayEngine(ray_address, threads=threads_per_run or 1)
