"""Experiments: conditions x replicates (seeds, or repeated stratified folds), paired, resumable.

Every condition runs on the same replicates (same split and seed), so conditions can be compared
pair by pair, which removes the split-to-split and seed-to-seed noise they share. Each finished run
is stored under DIR/runs/<hash of its settings>/result.json; running the same experiment again skips
what is stored, and adding a condition runs only the new runs. A GAN condition trains its GAN on the
replicate's training part only (the fold's or the fixed training split), stored in the shared GAN store
(gan_store_root) and reused by every study that trains the same GAN on the same images.

Conditions are data (Condition); a few are named (CONDITIONS), others are written on the command
line as NAME:key=value,key=value (see parse_condition).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pasture.classify.distill import model_identity, teacher_bank
from pasture.classify.evaluate import predict_probabilities
from pasture.classify.explain import score_and_plot_top_losses
from pasture.classify.fit import check_eval_every, train_classifier
from pasture.classify.recipes import (
    Recipe,
    check_synthetic_allowed,
    resolve_recipe,
    synthetic_share,
)
from pasture.classify.trained import build_members
from pasture.core.defaults import DEFAULT_TEST_FRACTION, cache_enabled, cache_root, without_labels
from pasture.core.device import device_info, reproducible_on
from pasture.core.errors import Interrupted, UserError
from pasture.core.record import RunRecord
from pasture.core.runs import (
    RUN_FILES,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    check_output_folder,
    check_writable,
    load_checkpoint,
    locked_folder,
    read_json,
    remove_orphan_temp_files,
    versions,
)
from pasture.core.runtime import progress_bar, usable_cores
from pasture.core.store import build_once
from pasture.data import (
    ImageSet,
    decode_files,
    detect_layout,
    fold_dataset,
    image_files_in,
    load_dataset,
    load_pool,
    load_synthetic,
    stratified_folds,
)
from pasture.gan.presets import GanPreset, get_gan_preset
from pasture.gan.synth import resize_uint8
from pasture.gan.trainer import build_samplers, generate, train_gan, validate_gan_preset
from pasture.models.registry import Ensemble
from pasture.study.conditions import Condition
from pasture.study.design import GROUP_FOLDS, Replicate, plan_replicates
from pasture.study.report import write_report
from pasture.study.timings import minutes, recall, remember, timing_key

RESULT_FORMAT = 2  # 1: flat metrics before the RunRecord; such stored runs are recomputed


def _hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class ExperimentSpec:
    data: str
    out: str
    conditions: list[Condition]
    seeds: int = 5
    folds: int | str | None = None  # k, or "groups" (leave-one-group-out)
    classes: list[str] | None = None
    min_image_size: int = 16
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
    engine: object = None  # how runs are executed (LocalEngine(jobs) when None; see pasture.study.ray_engine)
    # (test_fraction, split_seed): replicates are folds of the training split that `train` makes of
    # DATA/<class>/ with these (tuning: its test split is never loaded into a run); None for studies
    split: tuple | None = None


# ----------------------------------------------------------------------------------------------
# Data per replicate (cached per process: workers load once)


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


# A study reads its data at a few sizes (one per recipe, GAN and teacher size): 8 entries hold every one
# of them, and a data set decoded at 224 px is about 0.15 MB per photo.
DATA_CACHE_ENTRIES = 8
_DATA_CACHE: dict = _RecentlyUsed(DATA_CACHE_ENTRIES)
# In a Ray worker, everything a run reads from disk was loaded by the driver and shipped with the task
# (worker nodes have no copy of the photos): a read that was not shipped is a bug, said at once,
# rather than a confusing "no such folder" on a machine that never had the folder.
_SHIPPED_ONLY = False


def _read(key: tuple, load):
    """Everything a run reads from disk goes through here: once per process, keyed by what was read."""
    if key not in _DATA_CACHE:
        if _SHIPPED_ONLY:
            raise RuntimeError(f"pasture: a Ray task needed {key[:2]} but the driver did not ship it")
        _DATA_CACHE[key] = load()
    return _DATA_CACHE[key]


def _data_key(task: dict, image_size: int) -> tuple:
    # The fingerprint (file names and sizes) is in the key: a notebook that changes the photos between
    # two studies gets the new photos, not the ones this process decoded first.
    key = (
        "data",
        task["data"],
        image_size,
        task["layout"],
        tuple(task["classes"] or ()),
        task["min_image_size"],
        task.get("groups"),
        task.get("group_column", "group"),
        task.get("fingerprint", ""),
    )
    return key + tuple(task["split"]) if task.get("split") else key


def _data_at(task: dict, image_size: int):
    """The whole data of a task at `image_size`: the train/test split (or, with task["split"], the
    split `train` makes of class folders) or the unsplit pool."""
    quiet = lambda message: None  # noqa: E731  (skips are reported once, in the data summary)
    options = {"classes": task["classes"], "min_image_size": task["min_image_size"], "warn": quiet}
    if task["layout"] == "train/test" or task.get("split"):
        fraction, seed = task.get("split") or (DEFAULT_TEST_FRACTION, 0)

        def load():
            return load_dataset(task["data"], image_size, test_fraction=fraction, split_seed=seed, **options)
    else:

        def load():
            return load_pool(
                task["data"],
                image_size,
                groups=task.get("groups"),
                group_column=task.get("group_column", "group"),
                **options,
            )

    return _read(_data_key(task, image_size), load)


def replicate_dataset(task: dict, image_size: int):
    """The Dataset of a replicate at `image_size`: the fixed split, fold `fold` of repeat `repeat`, the
    held-out group, or (a tuning replicate) a fold of the training split alone."""
    data = _data_at(task, image_size)
    replicate = task["replicate"]
    if replicate["fold"] is None:
        return data
    if replicate.get("group") is not None:  # leave one group out: its images are the test set
        held_out = [index for index, group in enumerate(data.train.groups) if group == replicate["group"]]
        return fold_dataset(data, torch.tensor(held_out, dtype=torch.long))
    # Folds of data.train: the pool (class folders), or for tuning the training split, whose test
    # split is dropped here and never seen.
    folds = stratified_folds(data.train.labels, replicate["folds"], seed=replicate["repeat"])
    return fold_dataset(data, folds[replicate["fold"]])


def _unlabeled_at(folder: str, image_size: int) -> torch.Tensor:
    return _read(("unlabeled", folder, image_size), lambda: decode_files(image_files_in([folder]), image_size))


def _synthetic_at(folder: str, classes: list[str], image_size: int):
    return _read(
        ("synthetic", folder, tuple(classes), image_size), lambda: load_synthetic(folder, classes, image_size)[0]
    )


def _gan_preset_of(condition: dict) -> GanPreset:
    return dataclasses.replace(
        get_gan_preset(condition["gan_preset"]), **{key: value for key, value in condition["gan_overrides"]}
    )


def task_inputs(task: dict) -> dict:
    """{key: value} of everything `task` reads from disk, loaded here: a Ray driver ships these to the
    worker, which then reads nothing (the same functions load them in a local run)."""
    condition = task["condition"]
    recipe = resolve_recipe(condition["recipe"], **dict(condition["overrides"]))
    sizes = {recipe.image_size}
    extra = []
    if condition.get("teacher"):
        teacher_size = resolve_recipe(condition["teacher"]).image_size
        sizes.add(teacher_size)
        if condition.get("unlabeled_dir"):
            extra.append(("unlabeled", condition["unlabeled_dir"], teacher_size))
    if condition["gan_preset"]:
        sizes.add(_gan_preset_of(condition).image_size)
    inputs: dict[tuple, Any] = {_data_key(task, size): _data_at(task, size) for size in sorted(sizes)}
    for unlabeled in extra:  # the unlabeled photos, read above
        inputs[unlabeled] = _unlabeled_at(unlabeled[1], unlabeled[2])
    if condition.get("synthetic_dir"):
        classes = inputs[_data_key(task, recipe.image_size)].classes
        key = ("synthetic", condition["synthetic_dir"], tuple(classes), recipe.image_size)
        inputs[key] = _synthetic_at(condition["synthetic_dir"], classes, recipe.image_size)
    return inputs


# ----------------------------------------------------------------------------------------------
# One run


def gan_seed(replicate: dict) -> int:
    """GANs are trained once per training split, with the repeat number as seed: on a fixed train/test
    split every classifier seed shares one GAN (as the report had one); each fold has its own."""
    return int(replicate["repeat"])


GAN_STORE_FORMAT = 1  # bump when GAN training changes, so stored GANs are not reused


def gan_store_root(out: str) -> Path:
    """Where experiments keep their GANs: the shared cache (cache_root()/gans), so a GAN trained on the
    same images with the same preset, seed and device is trained once for every study on this machine,
    as decoded images are; DIR/gans when caching is off (PASTURE_NO_CACHE=1)."""
    return cache_root() / "gans" if cache_enabled() else Path(out) / "gans"


def gan_location(task: dict) -> tuple[GanPreset, Any, int, Path]:
    """(preset, the replicate's dataset at the preset's size, seed, the GAN's folder) of a GAN task.

    The folder is named by what the GAN is trained on, by content (the training images, labels and
    class names), not by paths, so two studies of the same photos share it."""
    preset = _gan_preset_of(task["condition"])
    dataset = replicate_dataset(task, preset.image_size)
    seed = gan_seed(task["replicate"])
    key = _hash(
        {
            "format": GAN_STORE_FORMAT,
            "preset": preset.to_dict(),
            "seed": seed,
            "train_images": training_content(dataset),
            "device": _task_device(task).type,
            "torch": torch.__version__,
        }
    )
    return preset, dataset, seed, gan_store_root(task["out"]) / key


def training_content(dataset) -> str:
    """What a model trained on `dataset` learns from, by content: its training images, labels and class
    names (not paths), so two studies of the same photos share what they train on them."""
    content = hashlib.sha256(dataset.train.images.contiguous().numpy().tobytes())
    content.update(dataset.train.labels.numpy().tobytes() + json.dumps(dataset.classes).encode())
    return content.hexdigest()


def gan_is_stored(gan_dir: Path) -> bool:
    return (gan_dir / "summary.json").is_file() and (gan_dir / "checkpoint.pt").is_file()


# GANs a Ray driver shipped with a task, by store folder name (worker nodes have no GAN store of theirs).
_SHIPPED_GANS: dict[str, list] = {}


def _trained_gan(task: dict, location: tuple) -> list:
    """The GAN's units (its gan_location), trained now unless stored; while another process trains the
    same GAN (another study, or a second --jobs worker), wait for it instead of training it twice."""
    gan_dir = location[3]
    if gan_dir.name in _SHIPPED_GANS:
        return _SHIPPED_GANS[gan_dir.name]

    def read() -> list | None:
        return load_checkpoint(gan_dir / "checkpoint.pt")["units"] if gan_is_stored(gan_dir) else None

    def train() -> list:
        resume = (gan_dir / "checkpoint.pt").is_file()
        units, summary = train_task_gan(task, location, gan_dir, resume)
        store_gan(task, location, summary, remember_time=not resume)  # a resumed GAN's time is only part of one
        return units

    return build_once(gan_dir, read, train, "GAN")


def train_task_gan(task: dict, location: tuple, folder: Path, resume: bool = False) -> tuple[list, dict]:
    """Train the GAN of a GAN task (its gan_location) into `folder` (checkpoint, log, sample grids);
    returns (units, summary)."""
    preset, dataset, seed, _ = location
    started = time.perf_counter()
    # The replicate's training part only: the fold's test images never reach the GAN.
    result = train_gan(dataset.train, preset, seed, out=folder, resume=resume, quiet=True, device=_task_device(task))
    summary = {
        "preset": preset.to_dict(),
        "seed": seed,
        "diversity_vs_real": result["diversity"],
        "seconds": time.perf_counter() - started,
        "n_train": len(dataset.train),
    }
    return result["units"], summary


def store_gan(
    task: dict, location: tuple, summary: dict, files: dict[str, bytes] | None = None, remember_time: bool = True
) -> None:
    """Finish a GAN's store folder: its files (when trained elsewhere), then summary.json, which marks
    it as stored; the time is remembered for study plans."""
    preset, dataset, _, gan_dir = location
    gan_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        atomic_write_bytes(gan_dir / name, data)
    atomic_write_json(gan_dir / "summary.json", summary)
    if remember_time:
        remember("gan", gan_timing_key(task, preset, dataset), summary["seconds"])


def gan_timing_key(task: dict, preset: GanPreset, dataset) -> str:
    return timing_key({"preset": preset.to_dict(), "n_train": len(dataset.train)}, _task_device(task))


def run_timing_key(task: dict) -> str:
    """What decides a classifier run's time (not its seed): condition, data, kind of replicate."""
    condition = without_labels(task["condition"])
    return timing_key(
        {
            "condition": condition,
            "fingerprint": task["fingerprint"],
            "folds": task["replicate"].get("folds"),
            "group": task["replicate"].get("group"),
        },
        _task_device(task),
    )


def _gan_for(task: dict, recipe_size: int):
    """Train (or reuse) the replicate's GAN and return its synthetic images at the classifier's size."""
    condition = task["condition"]
    replicate = task["replicate"]
    location = gan_location(task)
    preset, dataset, _, gan_dir = location
    units = _trained_gan(task, location)
    samplers = build_samplers(preset, len(dataset.classes), units, _task_device(task))
    generator = torch.Generator().manual_seed(replicate["seed"])
    images, labels = [], []
    for class_index in range(len(dataset.classes)):
        made = generate(preset, samplers, class_index, condition["synthetic_per_class"], generator)
        images.append(resize_uint8(made, recipe_size))
        labels.append(torch.full((len(made),), class_index, dtype=torch.long))
    synthetic = ImageSet(torch.cat(images), torch.cat(labels), [], dataset.classes, split="synthetic")
    return synthetic, str(gan_dir)


def _bank_for(task: dict, recipe: Recipe, dataset):
    """The teacher bank of a distillation run: the condition's teacher recipe trained on the replicate's
    training part with seed 0 (one teacher per training part, as a user has one teacher run: every
    student seed and repeat of that part shares it and its cached bank; the spread over seeds is the
    student's), plus
    the GAN's samples at the teacher's size when the condition has a GAN. Returns (bank, GAN folder,
    what the result records of the teacher)."""
    condition = task["condition"]
    teacher_recipe = resolve_recipe(condition["teacher"])
    teacher_data = replicate_dataset(task, teacher_recipe.image_size)
    teacher, teacher_seconds, teacher_reused = _trained_teacher(task, teacher_recipe, teacher_data)
    unlabelled, gan_dir = [], None
    if condition["gan_preset"]:
        generated, gan_dir = _gan_for(task, teacher_recipe.image_size)
        unlabelled.append(generated.images)
    if condition.get("unlabeled_dir"):
        unlabelled.append(_unlabeled_at(condition["unlabeled_dir"], teacher_recipe.image_size))
    # The teacher was trained on this replicate's classes, in this order: no class_order to map.
    bank = teacher_bank(
        teacher,
        model_identity(teacher),
        teacher_recipe.image_size,
        teacher_data.train.images,
        teacher_data.train.labels,
        unlabelled,
        recipe,
        len(dataset.classes),
    )
    teacher_accuracy = float(
        (predict_probabilities(teacher, teacher_data.test.images).argmax(1) == teacher_data.test.labels).float().mean()
    )
    return (
        bank,
        gan_dir,
        {
            "recipe": teacher_recipe.name,
            "seconds": teacher_seconds,
            "reused": teacher_reused,
            "bank_seconds": bank.seconds,
            "bank_reused": bank.reused,
            "views": len(bank),
            "test_accuracy": teacher_accuracy,
        },
    )


TEACHER_STORE_FORMAT = 1  # bump when classifier training changes, so stored teachers are not reused


def _trained_teacher(task: dict, recipe: Recipe, dataset) -> tuple:
    """(the teacher model, its training seconds, whether it was stored) of a distillation task: trained
    once per training part, recipe and device, and stored like a GAN (every student seed and repeat of
    that part, and every other study of the same photos, reuses it; before, each student run trained
    its own copy of the same teacher)."""
    device = _task_device(task)
    key = _hash(
        {
            "format": TEACHER_STORE_FORMAT,
            "recipe": recipe.to_dict(),
            "seed": 0,
            "train_images": training_content(dataset),
            "device": device.type,
            "torch": torch.__version__,
        }
    )
    folder = (cache_root() / "teachers" if cache_enabled() else Path(task["out"]) / "teachers") / key
    path = folder / "teacher.pt"

    def read():
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            model = build_members(recipe, len(dataset.classes), stored["members"], device)
            return model, float(stored["seconds"]), True
        except Exception:  # a damaged entry is trained again, never trusted
            return None

    def train():
        started = time.perf_counter()
        model = train_classifier(dataset, recipe, 0, device=device).model
        seconds = time.perf_counter() - started
        members = model.members if isinstance(model, Ensemble) else [model]
        atomic_torch_save(
            {
                "members": [
                    {name: value.detach().cpu() for name, value in member.state_dict().items()} for member in members
                ],
                "seconds": seconds,
            },
            path,
        )
        return model, seconds, False

    return build_once(folder, read, train, "teacher")


def _task_device(task: dict) -> torch.device:
    return reproducible_on(torch.device(task.get("device", "cpu")))  # workers are processes of their own


def execute_run(task: dict) -> dict:
    """Run one (condition, replicate) and store its result; returns the stored dict: the run's
    RunRecord under "record", with where the run sits in the design beside it."""
    run_dir = Path(task["out"]) / "runs" / task["key"]
    run_dir.mkdir(parents=True, exist_ok=True)
    stored, seconds = compute_run(task, run_dir)
    return store_run(task, stored, seconds)


def compute_run(task: dict, folder: Path) -> tuple[dict, float]:
    """Train and score one (condition, replicate); its figure (top_losses.png) goes into `folder`.
    Returns (the dict to store, the classifier's seconds). Stores nothing: see store_run.

    With the task's `threads` (a --jobs share), and the caller's thread count back after: a pool's
    last run may run in the calling process, which must not be left with one thread."""
    before = torch.get_num_threads()
    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    try:
        return _compute_run(task, folder)
    finally:
        torch.set_num_threads(before)


def _compute_run(task: dict, folder: Path) -> tuple[dict, float]:
    condition = task["condition"]
    recipe = resolve_recipe(condition["recipe"], **dict(condition["overrides"]))
    dataset = replicate_dataset(task, recipe.image_size)
    started = time.perf_counter()
    synthetic, gan_dir, ratio, bank, teacher_info = None, None, 0.0, None, None
    if condition.get("teacher"):
        bank, gan_dir, teacher_info = _bank_for(task, recipe, dataset)
    elif condition["gan_preset"]:
        synthetic, gan_dir = _gan_for(task, recipe.image_size)
    elif condition.get("synthetic_dir"):
        synthetic = _synthetic_at(condition["synthetic_dir"], dataset.classes, recipe.image_size)
    if synthetic is not None:
        ratio = condition["synthetic_ratio"]  # checked at parsing: None means the default share, never 0
        if ratio is None:
            ratio = synthetic_share(len(synthetic), len(dataset.train))
    classifier_started = time.perf_counter()
    result = train_classifier(
        dataset,
        recipe,
        task["replicate"]["seed"],
        synthetic=synthetic,
        synthetic_ratio=ratio,
        eval_every=task.get("eval_every", 1),
        device=_task_device(task),
        bank=bank,
    )
    record = score_and_plot_top_losses(result, dataset, recipe, folder)
    stored = {
        "format": RESULT_FORMAT,
        "key": task["key"],
        "condition": condition["name"],
        "condition_settings": without_labels(condition),
        "replicate": task["replicate"],
        "recipe_settings": recipe.to_dict(),
        "gan_dir": gan_dir,
        "synthetic_ratio": ratio,
        "n_synthetic": len(synthetic) if synthetic is not None else 0,
        **({"teacher": teacher_info} if teacher_info is not None else {}),
        "seconds": time.perf_counter() - started,
        "record": record.to_dict(),
    }
    return stored, time.perf_counter() - classifier_started


def store_run(task: dict, stored: dict, seconds: float, files: dict[str, bytes] | None = None) -> dict:
    """Store a computed run: its files (when computed elsewhere), the time it took (for study plans),
    and result.json last, which marks the run as done."""
    run_dir = Path(task["out"]) / "runs" / task["key"]
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        atomic_write_bytes(run_dir / name, data)
    remember("run", run_timing_key(task), seconds)
    atomic_write_json(run_dir / "result.json", stored)
    return stored


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


# ----------------------------------------------------------------------------------------------
# The whole experiment


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
    return _hash({"files": listing})


def study_tasks(spec: ExperimentSpec, layout: str, fingerprint: str, replicates: list[Replicate]):
    threads = engine_of(spec).threads_per_run()
    tasks = []
    for condition in spec.conditions:
        for replicate in replicates:
            settings: dict[str, Any] = {
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
                {
                    "key": _hash(settings),
                    "data": spec.data,
                    "out": spec.out,
                    "layout": layout,
                    "classes": spec.classes,
                    "min_image_size": spec.min_image_size,
                    "fingerprint": fingerprint,
                    "groups": spec.groups,
                    "group_column": spec.group_column,
                    "condition": {
                        **dataclasses.asdict(condition),
                        "overrides": list(condition.overrides),
                        "gan_overrides": list(condition.gan_overrides),
                    },
                    "replicate": dataclasses.asdict(replicate),
                    "threads": threads,
                    "eval_every": spec.eval_every,
                    "device": spec.device,
                    **({"split": list(spec.split)} if spec.split else {}),
                }
            )
    return tasks


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
    for pattern in patterns:
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)
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


def pending_tasks(tasks: list[dict], stored: dict) -> list[dict]:
    """The tasks whose run is not stored, once per key: runs are stored by settings, not by condition
    name, so two names for the same settings share runs."""
    return list({task["key"]: task for task in tasks if stored[task["key"]] is None}.values())


def stored_runs(out: Path, tasks: list[dict], warn) -> dict[str, dict | None]:
    """{key: stored result or None}; a damaged or older-format result is computed again, said once."""
    stored, damaged = {}, []
    for task in tasks:
        path = out / "runs" / task["key"] / "result.json"
        stored[task["key"]] = read_stored_run(path)
        if stored[task["key"]] is None and path.is_file():
            damaged.append(path)
    if damaged and warn is not None:
        warn(
            f"{damaged[0]}"
            + (f" and {len(damaged) - 1} more stored run(s)" if len(damaged) > 1 else "")
            + ": damaged or from an older pasture; computing again"
        )
    return stored


def work_estimate(run_seconds: list[float | None], gan_seconds: list[float | None], parallel: int) -> dict:
    """Wall time of what is left, from the times remembered on this machine, never a figure that quietly
    leaves work out: a run never timed here counts as the median of the runs that were (a stated
    guess); a GAN never timed here cannot be guessed from runs (it takes minutes where a run takes
    seconds), so while one is left there is no total, only the part that is known.

    Returns {"seconds": total or None, "known_seconds", "guessed_runs", "untimed_gans"}."""
    timed = [seconds for seconds in run_seconds if seconds is not None]
    guessed = len(run_seconds) - len(timed)
    guess = statistics.median(timed) if timed else None
    untimed_gans = sum(1 for seconds in gan_seconds if seconds is None)
    known = sum(timed) + sum(seconds for seconds in gan_seconds if seconds is not None)
    lanes = max(1, min(parallel, len(run_seconds) or 1))
    total = None
    if guess is not None and not untimed_gans:
        total = (known + guessed * guess) / lanes
    return {"seconds": total, "known_seconds": known / lanes, "guessed_runs": guessed, "untimed_gans": untimed_gans}


def estimate_text(estimate: dict) -> str | None:
    """The progress bar's "~4 min" or "~4 min (3 runs guessed)", or None when no figure would be honest."""
    if estimate["seconds"] is None:
        return None
    text = f"~{minutes(estimate['seconds'])}"
    if estimate["guessed_runs"]:
        text += f" ({estimate['guessed_runs']} runs guessed)"
    return text


def study_plan(spec: ExperimentSpec, tasks: list[dict], stored: dict, replicates) -> dict:
    """What the study will do and, from the times remembered on this machine, about how long it takes."""
    todo = pending_tasks(tasks, stored)
    # Where each GAN task's GAN lives (hashing its training images), once per task.
    locations = {task["key"]: gan_location(task) for task in tasks if task["condition"]["gan_preset"]} if todo else {}
    needed = {location[3] for location in locations.values()}
    to_train: dict[Path, tuple[str, str | None]] = {}  # GAN folder -> (its timing key, its task key)
    for task in todo:
        if task["key"] in locations:
            preset, dataset, _, gan_dir = locations[task["key"]]
            if gan_dir not in to_train and not gan_is_stored(gan_dir):
                to_train[gan_dir] = (gan_timing_key(task, preset, dataset), _gan_key(task))
    gans = recall("gan", [timing for timing, _ in to_train.values()])
    runs = recall("run", [run_timing_key(task) for task in todo])
    estimate = work_estimate(runs, gans, engine_of(spec).parallel())
    return {
        "conditions": [condition.name for condition in spec.conditions],
        "replicates": len(replicates),
        "runs": len({task["key"] for task in tasks}),
        "stored": len({task["key"] for task in tasks}) - len(todo),
        "to_run": len(todo),
        "gans_needed": len(needed),
        "gans_to_train": len(to_train),
        "estimate_seconds": estimate["seconds"],
        "known_seconds": estimate["known_seconds"],
        "unmeasured_runs": estimate["guessed_runs"],
        "unmeasured_gans": estimate["untimed_gans"],
        # {GAN key: remembered seconds or None} of the GANs to train: the progress bar counts them as work
        "gan_seconds": {key: seconds for (_, key), seconds in zip(to_train.values(), gans) if key is not None},
        "machine": device_info(torch.device(spec.device))["name"],
        "engine": engine_of(spec).name,
        "parallel": engine_of(spec).parallel(),
        "cores": usable_cores(),
        "device": spec.device,
    }


def plan_text(plan: dict) -> str:
    """One line: "4 conditions x 10 replicates = 40 runs (12 stored), 2 GANs to train: about 9 min"."""
    gans = ""
    if plan["gans_needed"]:
        reused = plan["gans_needed"] - plan["gans_to_train"]
        gans = f"; {plan['gans_needed']} GAN(s): {plan['gans_to_train']} to train, {reused} reused from the GAN store"
    text = (
        f"plan: {len(plan['conditions'])} condition(s) x {plan['replicates']} replicate(s) = {plan['runs']} runs "
        f"({plan['stored']} stored, {plan['to_run']} to run){gans}"
    )
    if plan["to_run"] == 0:
        return text + ": nothing to train"
    if plan["estimate_seconds"] is None:
        if plan["unmeasured_gans"]:
            text += f"; no estimate yet: {plan['unmeasured_gans']} GAN(s) never trained on this machine (minutes each)"
        else:
            text += "; no estimate yet (nothing like it ran on this machine)"
        return text + ": the progress bar's estimate follows the first runs" + _jobs_hint(plan)
    text += f"; about {minutes(plan['estimate_seconds'])} on this machine ({plan['machine']})"
    if plan["unmeasured_runs"]:
        text += f", {plan['unmeasured_runs']} of the runs never timed here and guessed at the median of the timed ones"
    return text + _jobs_hint(plan)


def _jobs_hint(plan: dict) -> str:
    """On a machine with spare cores, say how to use them: small runs gain more from running side by
    side than from more threads each (2 cores: 131 s with --jobs 2 against 187 s, benchmarks/engines.py)."""
    if (
        plan.get("engine") != "local"
        or plan.get("device", "cpu") != "cpu"
        or plan.get("parallel", 1) > 1
        or plan.get("cores", 1) < 2
        or plan["to_run"] < 4
    ):
        return ""
    jobs = min(plan["cores"], AUTO_JOBS_MAX)
    return f" (--jobs {jobs} runs {jobs} at a time on this machine's {plan['cores']} cores: faster for small models)"


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
    # Validate every condition before any work starts.
    for condition in spec.conditions:
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
    size = resolve_recipe(spec.conditions[0].recipe, **dict(spec.conditions[0].overrides)).image_size
    if layout == "train/test":
        summary_data = load_dataset(
            root, size, classes=spec.classes, min_image_size=spec.min_image_size, warn=warn or (lambda m: None)
        )
    else:
        summary_data = load_pool(
            root,
            size,
            classes=spec.classes,
            min_image_size=spec.min_image_size,
            warn=warn or (lambda m: None),
            groups=spec.groups,
            group_column=spec.group_column,
        )
    group_names = sorted(set(summary_data.train.groups)) if summary_data.train.groups is not None else None
    replicates = plan_replicates(layout, spec.seeds, spec.folds, group_names)
    out = Path(spec.out)
    start_engine(spec, out)  # a cluster that cannot be reached or used is said before anything is written
    if spec.dry_run:  # reads what is stored, writes nothing
        check_output_folder(out, "experiment.json", "experiment")
        tasks = study_tasks(spec, layout, summary_data.fingerprint, replicates)
        stored = {
            task["key"]: (None if spec.force else read_stored_run(out / "runs" / task["key"] / "result.json"))
            for task in tasks
        }
        plan = study_plan(spec, tasks, stored, replicates)
        return {"plan": plan, "plan_text": plan_text(plan)}
    with locked_folder(out, "experiment"):  # the lock first: --force on a live study deletes nothing
        open_study_folder(out, spec.force)
        # experiment.json first: a folder killed during this write holds only a temp file and the lock,
        # both recognised as leftovers next time.
        atomic_write_json(
            out / "experiment.json",
            {
                "title": spec.title,
                "data": str(root.resolve()),
                "layout": layout,
                "seeds": spec.seeds,
                "folds": spec.folds if layout != "train/test" else None,
                "conditions": [c.name for c in spec.conditions],
                "command": spec.command,
                "versions": versions(),
                "engine": engine_of(spec).name,
                "threads_per_run": _effective_threads(engine_of(spec)),
            },
        )
        return _run_all(spec, out, layout, summary_data, replicates, warn)


def start_engine(spec: ExperimentSpec, out: Path | None):
    """The study's engine, with --jobs auto resolved (for `out`'s stored runs) and started."""
    engine = engine_of(spec)
    if isinstance(engine, LocalEngine):
        engine.settle(spec.device, None if spec.force else out)
    engine.start()
    return engine


def _effective_threads(engine) -> int:
    return engine.threads_per_run() or torch.get_num_threads()


def _run_all(spec: ExperimentSpec, out: Path, layout: str, summary_data, replicates, warn) -> dict:
    tasks = study_tasks(spec, layout, summary_data.fingerprint, replicates)
    stored = stored_runs(out, tasks, warn)
    todo = pending_tasks(tasks, stored)
    gans: dict[str, float | None] = {}
    if not spec.quiet and todo:
        plan = study_plan(spec, tasks, stored, replicates)
        print(plan_text(plan), file=sys.stderr, flush=True)
        gans = plan["gan_seconds"]
    started = time.perf_counter()
    stored.update(run_tasks(engine_of(spec), todo, len(stored), spec.quiet, out, gans=gans))
    results = [{**(stored[task["key"]] or {}), "condition": task["condition"]["name"]} for task in tasks]
    return write_report(
        spec, layout, summary_data, replicates, results, ran=len(todo), seconds=time.perf_counter() - started
    )


def run_tasks(
    engine,
    todo: list[dict],
    total: int,
    quiet: bool,
    out: Path,
    desc: str = "experiment",
    gans: dict[str, float | None] | None = None,
) -> dict[str, dict]:
    """Run `todo` on `engine` with a progress bar; {key: stored result}. Ctrl-C keeps what finished
    (each run is stored as it ends) and says how to go on. `gans` ({GAN key: remembered seconds or None},
    study_plan's gan_seconds): the GANs the runs will train first; the bar shows them as work left
    (a run that trains its GAN takes minutes, not seconds) until a run of each has finished."""
    bar = progress_bar(total, total - len(todo), quiet, desc=desc, unit="run")
    done: dict[str, dict] = {}
    untrained = dict(gans or {})
    tasks = {task["key"]: task for task in todo}

    def finished(stored: dict, remaining: list[dict]) -> None:
        done[stored["key"]] = stored
        untrained.pop(_gan_key(tasks[stored["key"]]) or "", None)  # its GAN is trained and stored now
        bar.update(1)
        if remaining:
            bar.set_postfix(_postfix(remaining, engine.parallel(), untrained), refresh=True)

    try:
        if todo:
            bar.set_postfix(_postfix(todo, engine.parallel(), untrained), refresh=True)
        engine.run(todo, finished)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; the finished runs are stored in {out / 'runs'}. Run the same command "
            "again to continue with the rest"
        ) from None
    finally:
        bar.close()
    return done


def _postfix(remaining: list[dict], parallel: int, untrained_gans: dict[str, float | None]) -> dict:
    """The bar's next condition, the GANs still to train, and the time left, re-estimated after every
    run from the times measured so far (this study's first runs included; work_estimate): tqdm's own
    ETA assumes every run takes as long as the average, and before, the bar sat at 0 runs for minutes
    while GANs trained, with no word of them."""
    postfix = {"condition": remaining[0]["condition"]["name"]}
    if untrained_gans:
        postfix["GANs"] = f"{len(untrained_gans)} to train first"
    times = recall("run", [run_timing_key(other) for other in remaining])
    left = estimate_text(work_estimate(times, list(untrained_gans.values()), parallel))
    if left is not None:
        postfix["left"] = left
    return postfix


# ----------------------------------------------------------------------------------------------
# Engines: how the runs of a study are executed. An engine has start() (called before anything is
# written), threads_per_run(), parallel(), run(todo, finished), which calls finished(stored result,
# runs not yet finished) once per run, after the run is stored, and close(). The local engine is here; pasture.study.ray_engine has the Ray one.


def engine_of(spec: ExperimentSpec):
    if spec.engine is None:
        spec.engine = LocalEngine(spec.jobs)
    return spec.engine


AUTO_JOBS = "auto"
AUTO_JOBS_MAX = 8  # each worker process holds its own torch, data and model (about 0.5 GB each)
GPU_MEMORY_PER_JOB = 4 * 2**30  # a CUDA context plus the largest built-in model's training, with room


def auto_jobs(device: str, out: Path | None = None) -> int:
    """How many runs `--jobs auto` (the default) runs at once.

    On a CPU, one single-threaded run per core this process may use (up to 8; core.runtime.usable_cores): small models gain more from
    running side by side than from more threads each. On 2 cores the paper study took 131 s as two
    one-thread runs against 187 s as one two-thread run (warm, benchmarks/engines.py), and 588 s
    against 647 s cold with AVX2 kernels.

    On a CUDA GPU, the runs share the device: as many as the cores allow, up to 8 and one per 4 GiB of
    GPU memory. pasture's small runs leave a GPU mostly idle between kernel launches: the paper study
    on an H100 (16 cores) took 150 s one run at a time, 89 s with 4 and 76 s with 8, with the same
    accuracy in all 50 runs (a GPU's numbers do not depend on the CPU threads). Apple's MPS: 1.

    On a CPU, a study folder that already holds runs keeps the threads per run its experiment.json
    records, so extending an old study does not mix runs of different float summation orders."""
    cores = usable_cores()
    if device.startswith("cuda"):
        memory = torch.cuda.get_device_properties(torch.device(device)).total_memory
        return max(1, min(cores, AUTO_JOBS_MAX, memory // GPU_MEMORY_PER_JOB))
    if device != "cpu":
        return 1
    recorded = _recorded_threads(out) if out is not None else None
    if recorded is not None:
        for jobs in range(1, cores + 1):
            if _effective_threads(LocalEngine(jobs)) == recorded:
                return jobs
    return min(cores, AUTO_JOBS_MAX)


def _recorded_threads(out: Path) -> int | None:
    """Threads per run of the runs stored in study folder `out` (None: no runs, or not recorded)."""
    try:
        recorded = json.loads((out / "experiment.json").read_text(encoding="utf-8")).get("threads_per_run")
    except (OSError, ValueError, AttributeError):
        return None
    has_runs = (out / "runs").is_dir() and any((out / "runs").glob("*/result.json"))
    return recorded if has_runs and isinstance(recorded, int) else None


class LocalEngine:
    """Runs on this machine: one after another, or (jobs > 1) in `jobs` processes with cores/jobs torch
    threads each, so that the workers do not oversubscribe the cores."""

    name = "local"

    def __init__(self, jobs: int | str = 1):
        if jobs != AUTO_JOBS and (not isinstance(jobs, int) or jobs < 1):
            raise UserError(f"--jobs {jobs}: give a whole number of at least 1, or auto")
        self.requested = jobs
        self.jobs: int = jobs if isinstance(jobs, int) else 1  # auto: settled by settle()

    def settle(self, device: str, out: Path | None) -> None:
        """Resolve --jobs auto for this device and study folder (before any task is made)."""
        if self.requested == AUTO_JOBS:
            self.jobs = auto_jobs(device, out)

    def threads_per_run(self) -> int:
        return max(1, usable_cores() // self.jobs) if self.jobs > 1 else 0  # 0: the process's default

    def parallel(self) -> int:
        return self.jobs

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, todo: list[dict], finished) -> None:
        if self.jobs == 1 or len(todo) <= 1:
            for position, task in enumerate(todo):
                finished(execute_run(task), todo[position + 1 :])
            return
        self._run_parallel(todo, finished)

    def _run_parallel(self, todo: list[dict], finished) -> None:
        """Runs in `jobs` processes, in dependency order: the first run of each GAN (which trains it)
        starts first, the runs that need no GAN fill the other workers meanwhile, and the other runs of
        a GAN are queued when that GAN is stored, so two processes never train the same GAN and no
        worker waits idle for a GAN it does not need. (Before, every run waited for every GAN: with
        AVX2 kernels on 2 cores, one worker sat idle for 2 of the paper study's 11 minutes.)"""
        leaders: dict[str, dict] = {}
        waiting: dict[str, list[dict]] = {}
        free = []
        for task in todo:
            key = _gan_key(task)
            if key is None:
                free.append(task)
            elif key not in leaders:
                leaders[key] = task
            else:
                waiting.setdefault(key, []).append(task)
        remaining = {task["key"]: task for task in todo}
        context = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=context) as pool:
            running = {pool.submit(execute_run, task): task for task in [*leaders.values(), *free]}
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        task = running.pop(future)
                        result = future.result()
                        gan_key = _gan_key(task)
                        if gan_key is not None and leaders.get(gan_key) is task:  # its GAN is stored: the rest can run
                            for follower in waiting.pop(gan_key, []):
                                running[pool.submit(execute_run, follower)] = follower
                        remaining.pop(result["key"], None)
                        finished(result, list(remaining.values()))
            except BaseException:
                for future in running:
                    future.cancel()
                raise


def _gan_key(task: dict) -> str | None:
    """Which GAN a run needs (None: none): runs with the same key share one GAN. Made of what
    gan_location keys by (the resolved preset's content, the seed, the training part), without hashing
    the images, which are the same for every run of one study: two spellings of one GAN's overrides
    (ngf=4,iterations=5 and iterations=5,ngf=4) are one GAN, with one leader."""
    if not task["condition"]["gan_preset"]:
        return None
    replicate = task["replicate"]
    return _hash(
        {
            "preset": _gan_preset_of(task["condition"]).to_dict(),
            "seed": gan_seed(replicate),
            "fold": replicate["fold"],
            "folds": replicate.get("folds"),
            "group": replicate.get("group"),
        }
    )
