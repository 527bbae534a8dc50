"""Experiments: conditions x replicates (seeds, or repeated stratified folds), paired, resumable.

Every condition runs on the same replicates (same split and seed), so conditions can be compared
pair by pair, which removes the split-to-split and seed-to-seed noise they share. Each finished run
is stored under DIR/runs/<hash of its settings>/result.json; running the same experiment again skips
what is stored, and adding a condition runs only the new runs. A GAN condition trains its GAN on the
replicate's training part only (the fold's or the fixed training split), stored under DIR/gans/.

Conditions are data (Condition); a few are named (CONDITIONS), others are written on the command
line as NAME:key=value,key=value (see parse_condition).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pasture.errors import Interrupted, UserError

RESULT_FORMAT = 1


@dataclass(frozen=True)
class Condition:
    name: str
    recipe: str = "default"
    overrides: tuple = ()  # ((recipe field, value), ...)
    gan_preset: str | None = None  # synthetic images from this GAN preset, trained per replicate
    gan_overrides: tuple = ()  # ((GanPreset field, value), ...)
    synthetic_per_class: int = 500
    synthetic_ratio: float | None = None  # None: as if the images were added to the training folder
    synthetic_dir: str | None = None  # a fixed synthetic set (from `gan sample`) instead of a GAN per split
    description: str = ""

    def settings(self) -> dict:
        """What makes the runs of this condition what they are (its name and description excluded)."""
        data = dataclasses.asdict(self)
        data.pop("name")
        data.pop("description")
        data["overrides"] = [list(pair) for pair in self.overrides]
        data["gan_overrides"] = [list(pair) for pair in self.gan_overrides]
        return data


CONDITIONS: dict[str, Condition] = {
    condition.name: condition
    for condition in (
        Condition("paper", recipe="paper", description="the report's CNN and recipe, no augmentation"),
        Condition("paper+transforms", recipe="paper", overrides=(("augment", "paper"),),
                  description="the report's random transforms"),
        Condition("paper+dcgan", recipe="paper", gan_preset="paper", synthetic_per_class=500,
                  description="the report's DCGAN: 500 synthetic images per class added to training"),
        Condition("default", recipe="default", description="pasture's tuned recipe for the report's CNN"),
        Condition("default+gan", recipe="default", gan_preset="default", synthetic_per_class=500,
                  synthetic_ratio=0.3,
                  description="pasture's conditional DiffAugment GAN, 30% of each batch synthetic"),
        Condition("small-data", recipe="small-data", description="best from-scratch recipe (small ResNet)"),
        Condition("probe", recipe="probe", description="EfficientNet-Lite0 ImageNet features + linear head"),
        Condition("finetune", recipe="finetune", description="EfficientNet-Lite0 fine-tuned (LP-FT)"),
    )
}
PAPER_EXPERIMENT = ("paper", "paper+transforms", "paper+dcgan", "default", "default+gan")
# The report's own numbers, beside which `experiment paper` prints pasture's.
REPORT_NUMBERS = {
    "paper": "95% train / 55% test",
    "paper+transforms": "test +5% (about 60%)",
    "paper+dcgan": "no change",
}

_RECIPE_KEYS = {"model", "image_size", "augment", "optimizer", "lr", "momentum", "weight_decay", "batch_size",
                "epochs", "schedule", "warmup_epochs", "label_smoothing", "mixup_alpha", "cutmix_alpha",
                "ema_decay", "tta", "ensemble", "selfsup_epochs", "precision", "balance_classes"}
_GAN_KEYS = {"image_size_gan": "image_size", "nz": "nz", "ngf": "ngf", "ndf": "ndf", "iterations": "iterations",
             "gan_batch_size": "batch_size", "diffaugment": "diffaugment", "conditional": "conditional",
             "loss": "loss", "ada": "ada"}


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_condition(text: str, recipe: str | None = None, model: str | None = None) -> Condition:
    """'default' (a named condition) or 'NAME:key=value,...' with keys recipe, gan, per_class, ratio,
    synthetic, any recipe field (augment, epochs, lr, model, ...) and GAN fields (iterations, nz, ngf,
    ndf, diffaugment, conditional, loss, ada, image_size_gan, gan_batch_size).

    `recipe` and `model` (the experiment's --recipe/--model) apply to written conditions that do not
    name their own; named conditions keep theirs."""
    if ":" not in text:
        if text not in CONDITIONS:
            raise UserError(f"--conditions {text}: unknown condition; choose from {', '.join(CONDITIONS)} "
                            "or write NAME:key=value,...")
        return CONDITIONS[text]
    name, _, spec = text.partition(":")
    if not name:
        raise UserError(f"--conditions {text}: give the condition a name before the colon")
    fields: dict = {"name": name}
    if recipe is not None:
        fields["recipe"] = recipe
    overrides, gan_overrides = [], []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, equals, raw = item.partition("=")
        if not equals:
            raise UserError(f"--conditions {text}: {item!r} is not key=value")
        value = _parse_value(raw)
        if key == "recipe":
            fields["recipe"] = str(value)
        elif key == "gan":
            fields["gan_preset"] = str(value)
        elif key == "per_class":
            fields["synthetic_per_class"] = int(value)
        elif key == "ratio":
            fields["synthetic_ratio"] = float(value)
        elif key == "synthetic":
            fields["synthetic_dir"] = str(Path(str(value)).resolve())
        elif key in _RECIPE_KEYS:
            overrides.append((key, value))
        elif key in _GAN_KEYS:
            gan_overrides.append((_GAN_KEYS[key], value))
        else:
            raise UserError(f"--conditions {text}: unknown key {key!r}")
    if model is not None and "model" not in dict(overrides):
        overrides.append(("model", model))
    return Condition(overrides=tuple(overrides), gan_overrides=tuple(gan_overrides), **fields)


@dataclass(frozen=True)
class Replicate:
    """One split + seed that every condition is run on."""

    index: int
    seed: int
    repeat: int = 0
    fold: int | None = None  # None: the fixed train/test split
    folds: int | None = None

    def label(self) -> str:
        return f"seed {self.seed}" if self.fold is None else f"repeat {self.repeat} fold {self.fold + 1}/{self.folds}"


def plan_replicates(layout: str, seeds: int, folds: int | None) -> list[Replicate]:
    if layout == "train/test":
        if folds:
            raise UserError("--folds: DATA has a fixed train/test split; folds need DATA/<class>/ folders")
        return [Replicate(index=i, seed=i) for i in range(seeds)]
    k = folds or 5
    return [Replicate(index=r * k + f, seed=r, repeat=r, fold=f, folds=k) for r in range(seeds) for f in range(k)]


def _hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class ExperimentSpec:
    data: str
    out: str
    conditions: list[Condition]
    seeds: int = 5
    folds: int | None = None
    classes: list[str] | None = None
    min_image_size: int = 16
    jobs: int = 1
    eval_every: int = 1  # test-split curve points every K epochs; results are the same (not in the run key)
    quiet: bool = False
    title: str = "pasture experiment"
    report_numbers: dict = field(default_factory=dict)
    command: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Data per replicate (cached per process: workers load once)

_DATA_CACHE: dict = {}


def _data_at(spec_data: str, image_size: int, layout: str, classes, min_image_size: int):
    from pasture.data import load_dataset, load_pool

    key = (spec_data, image_size, layout, tuple(classes or ()), min_image_size)
    if key not in _DATA_CACHE:
        quiet = lambda message: None  # noqa: E731  (skips are reported once, in the data summary)
        if layout == "train/test":
            _DATA_CACHE[key] = load_dataset(spec_data, image_size, classes=classes, min_image_size=min_image_size,
                                            warn=quiet)
        else:
            _DATA_CACHE[key] = load_pool(spec_data, image_size, classes=classes, min_image_size=min_image_size,
                                         warn=quiet)
    return _DATA_CACHE[key]


def replicate_dataset(task: dict, image_size: int):
    """The Dataset of a replicate at `image_size`: the fixed split, or fold `fold` of repeat `repeat`."""
    from pasture.data import fold_dataset, stratified_folds

    data = _data_at(task["data"], image_size, task["layout"], task["classes"], task["min_image_size"])
    replicate = task["replicate"]
    if replicate["fold"] is None:
        return data
    folds = stratified_folds(data.train.labels, replicate["folds"], seed=replicate["repeat"])
    return fold_dataset(data, folds[replicate["fold"]])


# ----------------------------------------------------------------------------------------------
# One run


def gan_seed(replicate: dict) -> int:
    """GANs are trained once per training split, with the repeat number as seed: on a fixed train/test
    split every classifier seed shares one GAN (as the report had one); each fold has its own."""
    return int(replicate["repeat"])


def _gan_for(task: dict, recipe_size: int):
    """Train (or reuse) the replicate's GAN and return its synthetic images at the classifier's size."""
    from pasture.gan.trainer import build_samplers, generate, get_gan_preset, train_gan
    from pasture.runs import atomic_write_json, load_checkpoint
    from pasture.synth import resize_uint8

    import torch

    condition = task["condition"]
    preset = dataclasses.replace(get_gan_preset(condition["gan_preset"]),
                                 **{key: value for key, value in condition["gan_overrides"]})
    replicate = task["replicate"]
    dataset = replicate_dataset(task, preset.image_size)
    seed = gan_seed(replicate)
    gan_key = _hash({"preset": preset.to_dict(), "seed": seed, "fingerprint": task["fingerprint"],
                     "train_files": dataset.train.files})
    gan_dir = Path(task["out"]) / "gans" / gan_key
    if (gan_dir / "summary.json").is_file():
        units = load_checkpoint(gan_dir / "checkpoint.pt")["units"]
    else:
        gan_dir.mkdir(parents=True, exist_ok=True)
        resume = (gan_dir / "checkpoint.pt").is_file()
        # The replicate's training part only: the fold's test images never reach the GAN.
        result = train_gan(dataset.train, preset, seed, out=gan_dir, resume=resume, quiet=True)
        units = result["units"]
        atomic_write_json(gan_dir / "summary.json", {"preset": preset.to_dict(), "seed": seed,
                                                     "diversity_vs_real": result["diversity"]})
    samplers = build_samplers(preset, len(dataset.classes), units)
    generator = torch.Generator().manual_seed(replicate["seed"])
    images, labels = [], []
    for class_index in range(len(dataset.classes)):
        made = generate(preset, samplers, class_index, condition["synthetic_per_class"], generator)
        images.append(resize_uint8(made, recipe_size))
        labels.append(torch.full((len(made),), class_index, dtype=torch.long))
    from pasture.data import ImageSet

    synthetic = ImageSet(torch.cat(images), torch.cat(labels), [], dataset.classes, split="synthetic")
    return synthetic, str(gan_dir)


def execute_run(task: dict) -> dict:
    """Run one (condition, replicate) and store its result; returns the result dict."""
    import torch

    from pasture.api import resolve_recipe
    from pasture.evaluate import evaluate_model
    from pasture.runs import atomic_write_json
    from pasture.train import train_classifier

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    condition = task["condition"]
    overrides = {key: value for key, value in condition["overrides"]}
    recipe = resolve_recipe(condition["recipe"], **overrides)
    dataset = replicate_dataset(task, recipe.image_size)
    started = time.perf_counter()
    synthetic, gan_dir, ratio = None, None, 0.0
    if condition["gan_preset"]:
        synthetic, gan_dir = _gan_for(task, recipe.image_size)
    elif condition.get("synthetic_dir"):
        from pasture.data import load_synthetic

        synthetic, _ = load_synthetic(condition["synthetic_dir"], dataset.classes, recipe.image_size)
    if synthetic is not None:
        ratio = condition["synthetic_ratio"] or len(synthetic) / (len(synthetic) + len(dataset.train))
    result = train_classifier(dataset, recipe, task["replicate"]["seed"], synthetic=synthetic, synthetic_ratio=ratio,
                              eval_every=task.get("eval_every", 1))
    test = evaluate_model(result.model, dataset.test.images, dataset.test.labels, dataset.classes, tta=recipe.tta)
    train = evaluate_model(result.model, dataset.train.images, dataset.train.labels, dataset.classes)
    record = {
        "format": RESULT_FORMAT, "key": task["key"], "condition": condition["name"],
        "condition_settings": {k: v for k, v in condition.items() if k not in ("name", "description")},
        "replicate": task["replicate"], "recipe": recipe.to_dict(),
        "test_accuracy": test["accuracy"], "correct": test["correct"], "n": test["n"],
        "test_per_class": test["per_class"], "confusion": test["confusion"],
        "train_accuracy": train["accuracy"], "n_train": train["n"], "classes": dataset.classes,
        "history": result.history, "gan_dir": gan_dir, "synthetic_ratio": ratio,
        "n_synthetic": len(synthetic) if synthetic is not None else 0,
        "seconds": time.perf_counter() - started,
    }
    run_dir = Path(task["out"]) / "runs" / task["key"]
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "result.json", record)
    return record


# ----------------------------------------------------------------------------------------------
# The whole experiment


def _folder_fingerprint(folder: str | None) -> str | None:
    """Content id of a fixed synthetic set, so that a re-sampled set at the same path is not reused."""
    if folder is None:
        return None
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--conditions synthetic={folder}: no such folder; give the --out of `pasture gan sample`")
    listing = sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())
    return _hash({"files": listing})


def _tasks(spec: ExperimentSpec, layout: str, fingerprint: str, replicates: list[Replicate], threads: int):
    tasks = []
    for condition in spec.conditions:
        for replicate in replicates:
            settings = {"condition": condition.settings(), "replicate": dataclasses.asdict(replicate),
                        "fingerprint": fingerprint, "classes": spec.classes, "min_image_size": spec.min_image_size,
                        "synthetic_fingerprint": _folder_fingerprint(condition.synthetic_dir)}
            tasks.append({
                "key": _hash(settings), "data": spec.data, "out": spec.out, "layout": layout,
                "classes": spec.classes, "min_image_size": spec.min_image_size, "fingerprint": fingerprint,
                "condition": {**dataclasses.asdict(condition), "overrides": list(condition.overrides),
                              "gan_overrides": list(condition.gan_overrides)},
                "replicate": dataclasses.asdict(replicate), "threads": threads, "eval_every": spec.eval_every,
            })
    return tasks


def _check_out(out: Path) -> None:
    marker = out / "experiment.json"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise UserError(f"{out}: folder is not empty and holds no pasture experiment; choose a new --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "runs").mkdir(exist_ok=True)
    except OSError as error:
        raise UserError(f"{out}: cannot write here ({error.strerror}); choose another --out") from None


def run_experiment(spec: ExperimentSpec, warn=None) -> dict:
    """Run every condition on every replicate (skipping stored runs), then write the report.

    Returns the results dict (also DIR/results.json)."""
    from pasture.data import detect_layout, load_dataset, load_pool
    from pasture.report import write_report
    from pasture.runs import atomic_write_json, read_json, versions
    from pasture.train import check_eval_every, progress_bar

    if not spec.conditions:
        raise UserError("--conditions: give at least one condition")
    names = [condition.name for condition in spec.conditions]
    if len(set(names)) != len(names):
        raise UserError(f"--conditions: names must differ ({', '.join(names)})")
    if spec.seeds < 1:
        raise UserError(f"--seeds {spec.seeds}: must be at least 1")
    if spec.jobs < 1:
        raise UserError(f"--jobs {spec.jobs}: must be at least 1")
    check_eval_every(spec.eval_every)
    root = Path(spec.data)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; give the folder that holds your class folders")
    layout = detect_layout(root)
    # Validate every condition's recipe before any work starts.
    from pasture.api import resolve_recipe
    from pasture.gan.trainer import get_gan_preset

    for condition in spec.conditions:
        resolve_recipe(condition.recipe, **dict(condition.overrides))
        if condition.gan_preset:
            get_gan_preset(condition.gan_preset)
    size = resolve_recipe(spec.conditions[0].recipe, **dict(spec.conditions[0].overrides)).image_size
    if layout == "train/test":
        summary_data = load_dataset(root, size, classes=spec.classes, min_image_size=spec.min_image_size, warn=warn or (lambda m: None))
    else:
        summary_data = load_pool(root, size, classes=spec.classes, min_image_size=spec.min_image_size, warn=warn or (lambda m: None))
    replicates = plan_replicates(layout, spec.seeds, spec.folds)
    out = Path(spec.out)
    _check_out(out)
    cores = os.cpu_count() or 1
    threads = max(1, cores // spec.jobs)
    tasks = _tasks(spec, layout, summary_data.fingerprint, replicates, threads if spec.jobs > 1 else 0)
    stored = {task["key"]: out / "runs" / task["key"] / "result.json" for task in tasks}
    # Runs are stored by settings, not by condition name: two names for the same settings share runs.
    todo = list({task["key"]: task for task in tasks if not stored[task["key"]].is_file()}.values())
    atomic_write_json(out / "experiment.json", {
        "title": spec.title, "data": str(root.resolve()), "layout": layout, "seeds": spec.seeds,
        "folds": spec.folds if layout != "train/test" else None, "conditions": [c.name for c in spec.conditions],
        "command": spec.command, "versions": versions(),
    })
    started = time.perf_counter()
    bar = progress_bar(len(stored), len(stored) - len(todo), spec.quiet, desc="experiment", unit="run")
    try:
        if spec.jobs == 1 or len(todo) <= 1:
            for task in todo:
                bar.set_postfix({"condition": task["condition"]["name"]}, refresh=False)
                execute_run(task)
                bar.update(1)
        else:
            _run_parallel(todo, spec.jobs, bar)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the finished runs are stored in {out / 'runs'}. Run the same command "
                          "again to continue with the rest") from None
    finally:
        bar.close()
    results = [{**read_json(stored[task["key"]]), "condition": task["condition"]["name"]} for task in tasks]
    return write_report(spec, layout, summary_data, replicates, results, ran=len(todo),
                        seconds=time.perf_counter() - started)


def _run_parallel(todo: list[dict], jobs: int, bar) -> None:
    """Independent runs in `jobs` processes, each with cores/jobs torch threads (no oversubscription).

    GAN conditions train their GANs in a first wave, so two runs never train the same GAN at once."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    gan_first = [task for task in todo if task["condition"]["gan_preset"]]
    seen, first_wave, second_wave = set(), [], []
    for task in todo:
        gan_key = (json.dumps(task["condition"]["gan_overrides"]), task["condition"]["gan_preset"],
                   task["replicate"]["repeat"], task["replicate"]["fold"])
        if task in gan_first and gan_key not in seen:
            seen.add(gan_key)
            first_wave.append(task)
        else:
            second_wave.append(task)
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        for wave in (first_wave, second_wave):
            futures = [pool.submit(execute_run, task) for task in wave]
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
