"""The functions a notebook calls. The CLI and the app (pasture.app) are thin layers over these; nothing
below them (core, data, models, classify, gan, study, doctor) imports this module.

    from pasture import api
    metrics = api.train("DATA", "runs/first", recipe="paper", seed=1)
    metrics = api.train("DATA", "runs/long", overrides={"epochs": 120}, data_options=api.DataOptions(split_seed=3))
    report = api.evaluate("runs/first", "OTHER_PHOTOS")
    rows = api.predict("runs/first", ["photo.jpg"])

Options are data: `overrides` holds recipe fields (pasture.classify.recipes.Recipe; GAN preset fields
for gan_train), `data_options` a DataOptions. As a shorthand, any of those fields may also be given
as a keyword (`epochs=3`, `classes=["horse", "cow"]`).

Every function raises UserError (one line, names the file or option) for input a user can fix, and
Interrupted when Ctrl-C stopped a training run after its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from pasture.classify.calibration import calibration
from pasture.classify.evaluate import (
    accuracy_report,
    group_reports,
)
from pasture.classify.explain import explain_images, write_evaluation
from pasture.classify.familiarity import familiarity_report, others_report
from pasture.classify.finish import finish_run
from pasture.classify.fit import check_eval_every, train_classifier
from pasture.classify.new_camera import adapt, ask
from pasture.classify.recipes import (
    Recipe,
    recipe_alias_note,
    recipe_line,
    resolve_recipe,
    scratch_warning,
)
from pasture.classify.trained import Classifier, LoadedRun, load_run, predict_files, run_config_problem
from pasture.classify.transfer import synthetic_for_run, teacher_bank_for_run
from pasture.core.defaults import (
    DEFAULT_MIN_IMAGE_SIZE,
    DataOptions,
    Warn,
    option_fields,
    warn_to_stderr,
)
from pasture.core.device import device_info, effective_precision, resolve_device
from pasture.core.errors import Interrupted, UserError
from pasture.core.imagefile import datasets_holding
from pasture.core.paths import check_outside
from pasture.core.record import record_problem
from pasture.core.runs import (
    atomic_write_json,
    check_output_folder,
    check_writable,
    opened_run,
    read_checked_json,
)
from pasture.data import (
    class_index_map,
    decode_files,
    image_files_in,
    load_dataset,
    load_labelled_folder,
    load_synthetic,
)
from pasture.doctor.examine import examine
from pasture.export.formats import EXPORT_FORMATS, export_run
from pasture.export.onnx_runner import EXPORTED_SUFFIXES, predict_onnx
from pasture.gan.presets import GanPreset, get_gan_preset
from pasture.gan.synth import SCORING_RECIPE, sample_images, score_synthetic, write_class_grids, write_synthetic
from pasture.gan.trainer import gan_summary, summary_problem, train_gan, validate_gan_preset
from pasture.study.conditions import PAPER_EXPERIMENT, REPORT_NUMBERS, parse_condition
from pasture.study.demo import write_demo_data
from pasture.study.experiment import (
    ExperimentOptions,
    ExperimentSpec,
    run_experiment,
    run_on_engine,
    study_device,
    with_fields,
)
from pasture.study.ray_predict import predict_on_ray
from pasture.study.tune import TuneOptions, TuneSpec, run_tune

__all__ = [
    "EXPORT_FORMATS",
    "Classifier",  # the old name of LoadedRun, kept for a release
    "LoadedRun",
    "DataOptions",
    "ExperimentOptions",
    "TuneOptions",
    "Interrupted",
    "UserError",
    "adapt",
    "ask",
    "demo",
    "doctor",
    "evaluate",
    "experiment",
    "explain",
    "export",
    "gan_sample",
    "gan_score",
    "gan_train",
    "load",
    "load_run",
    "predict",
    "resolve_recipe",
    "train",
]

_DATA_FIELDS = {f.name for f in dataclasses.fields(DataOptions)}


def _options(
    function: str, settings_type, overrides: dict | None, data_options: DataOptions | None, fields: dict
) -> tuple[dict, DataOptions]:
    """Sort keyword shorthands into (settings overrides, DataOptions): a field of `settings_type`
    (Recipe, GanPreset) goes to the overrides, a DataOptions field to the data options."""
    known = {f.name for f in option_fields(settings_type)}
    overrides = dict(overrides or {})
    data_changes = {}
    for key, value in fields.items():
        if key in known:
            overrides[key] = value
        elif key in _DATA_FIELDS:
            data_changes[key] = value
        else:
            raise TypeError(f"{function}() got an unexpected keyword argument {key!r}")
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{function}(): unknown fields in overrides: {', '.join(unknown)}")
    options = data_options or DataOptions()
    return overrides, dataclasses.replace(options, **data_changes) if data_changes else options


def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe: str | None = None,
    overrides: dict | None = None,
    data_options: DataOptions | None = None,
    synthetic: str | os.PathLike | None = None,
    synthetic_ratio: float | None = None,
    seed: int = 0,
    eval_every: int = 1,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    device: str = "auto",
    warn: Warn = warn_to_stderr,
    command: list[str] | None = None,
    teacher: str | os.PathLike | None = None,
    unlabeled: str | os.PathLike | None = None,
    **fields,
) -> dict:
    """Train a classifier on DATA and write the run folder `out`; returns metrics.json's dict (a RunRecord).

    With `teacher` (a finished run folder: probe, finetune, an ensemble, ...), the model is a student that
    learns to match the teacher's outputs (pasture.classify.distill; the recipe defaults to "distill");
    `unlabeled` (a folder of photos, labels ignored) and `synthetic` (GAN samples) then join the transfer
    set, labelled by the teacher.

    `recipe` names a preset (pasture.classify.recipes.RECIPES); None is the default, the pretrained probe
    (or the preset that fits what else was asked: finetune, scratch for a from-scratch --model, distill
    with a teacher). Unless `quiet`, the first line printed names the recipe, model and size. `overrides` (or keyword shorthands such as
    epochs=3, pretrained="probe") replace its fields; `data_options` (or classes=, test_fraction=, ...)
    say how DATA is read and split. The test split is evaluated after every epoch for the record
    (every `eval_every`-th epoch, plus the first and last, when that is more than 1), never used to
    choose anything. `synthetic` images (a `gan sample` folder) take `synthetic_ratio` of each batch.
    `device` is auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, cuda:N or mps.
    """
    check_eval_every(eval_every)
    check_outside(out, data)
    overrides, options = _options("train", Recipe, overrides, data_options, fields)
    if unlabeled is not None and teacher is None:
        raise UserError("--unlabeled: needs --teacher RUN, which labels those photos")
    if teacher is not None and recipe is None:
        recipe = "distill"
    if recipe is not None and (note := recipe_alias_note(recipe)):
        warn(note)
    chosen = resolve_recipe(recipe, **overrides)
    where = resolve_device(device)
    precision = effective_precision(chosen.precision, where, warn)
    dataset = load_dataset(data, chosen.image_size, warn=warn, **options.load_kwargs())
    # Said once the data loaded: a refused command stays one line.
    if not quiet:
        print(recipe_line(chosen, recipe), flush=True)
    if teacher is None and (warning := scratch_warning(chosen)):
        warn(warning)
    bank, teacher_info = None, None
    if teacher is not None:
        if synthetic_ratio is not None:
            raise UserError(
                "--synthetic-ratio: with --teacher, synthetic images join the teacher's transfer set; "
                "drop --synthetic-ratio"
            )
        # A folder that is not ours is refused now, not after minutes of teacher outputs.
        check_output_folder(Path(out), None if force else "config.json", "run")
        bank, teacher_info = teacher_bank_for_run(
            teacher, unlabeled, synthetic, chosen, data, options, dataset, where, quiet, warn
        )
        synthetic_images, synthetic_ratio, synthetic_info = None, None, None
    else:
        synthetic_images, synthetic_ratio, synthetic_info = synthetic_for_run(
            synthetic, synthetic_ratio, chosen, dataset, warn
        )
    identity = {
        "synthetic": synthetic_info,
        "recipe": chosen.to_dict(),
        "seed": seed,
        **options.identity(data, dataset),
    }
    if teacher_info is not None:  # only when set, so that runs made before distillation keep their identity
        identity["teacher"] = {key: teacher_info[key] for key in ("checkpoint", "transfer")}
    out = Path(out)
    config = {
        "model": chosen.model,
        "image_size": chosen.image_size,
        "classes": dataset.classes,
        "seed": seed,
        "recipe": chosen.to_dict(),
        "data_summary": dataset.summary(),
        "eval_every": eval_every,
        "device": device_info(where, precision),
        **({"teacher": teacher_info} if teacher_info else {}),
    }
    resumable = f"{out / 'checkpoint.pt'} holds the last finished epoch. Run the same command with --resume to continue"
    with opened_run(
        out,
        identity,
        config,
        what="run",
        result_file="metrics.json",
        done_check=record_problem,
        resume=resume,
        force=force,
        command=command,
        warn=warn,
        on_interrupt=resumable,
    ) as opened:
        if opened.finished is not None:
            return opened.finished
        result = train_classifier(
            dataset,
            chosen,
            seed,
            run_dir=out,
            resume=opened.resuming,
            quiet=quiet,
            synthetic=synthetic_images,
            synthetic_ratio=synthetic_ratio or 0.0,
            eval_every=eval_every,
            device=where,
            precision=precision,
            bank=bank,
        )
        if result.nonfinite_loss:
            warn(
                "the training loss became NaN or infinite (the recipe diverged); the accuracies below "
                "describe a broken model"
            )
        return finish_run(out, result, dataset, chosen)


def evaluate(
    run: str | os.PathLike,
    data: str | os.PathLike,
    *,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    strict: bool = False,
    groups: str | None = None,
    group_column: str = "group",
    device: str = "auto",
    out: str | os.PathLike | None = None,
    others: str | os.PathLike | None = None,
    warn: Warn = warn_to_stderr,
) -> dict:
    """Accuracy of a trained run on DATA (its test split, or every image of DATA/<class>/), with its
    calibration (classify.calibration) and, for a probe run, the familiarity of the photos; `others` (a
    folder of photos of none of the classes): the share caught as unfamiliar and the AUROC.

    Classes are matched by name; a class in DATA that the model does not know is a UserError.
    Returns accuracy, ci95, n, per_class, confusion (over the model's classes) and classes; with
    `groups` (a CSV with columns file and `group_column`, or "subfolders" for DATA/<class>/<group>/),
    also per_group: accuracy, ci95, n and per-class counts of each group (photo source). With `out`,
    writes OUT/evaluation.json (the report), confusion.png and top_losses.png (the photos the model got
    most confidently wrong, with Grad-CAM heatmaps when Captum is installed).
    """
    check_outside(out, data)
    if out is not None:
        check_output_folder(Path(out), "evaluation.json", "evaluation")
    loaded = LoadedRun(run, resolve_device(device))
    if others is not None and loaded.familiarity is None:  # said before any photo is read
        raise UserError(f"--others: {run} keeps no training photos' features (a probe run does); nothing to compare")
    model, config, model_classes = loaded.model, loaded.config, loaded.classes
    images, skipped = load_labelled_folder(
        data, config["image_size"], min_image_size, strict, warn, groups=groups, group_column=group_column
    )
    to_model_index = class_index_map(images.classes, model_classes, f"{data}: class folders")
    labels = to_model_index[images.labels]
    probabilities, found = loaded.scores(images.images)
    predicted = probabilities.argmax(1)
    report = accuracy_report(predicted, labels, model_classes)
    if images.groups is not None:
        report["per_group"] = group_reports(predicted, labels, images.groups, model_classes)
    report["skipped"], report["calibration"] = skipped, calibration(probabilities, labels)
    if found is not None:
        report["familiarity"] = familiarity_report(found, predicted == labels, labels, model_classes, images.groups)
        if others is not None:
            report["others"] = others_report(loaded.scores, loaded.image_size, others, found, probabilities)
    if out is not None:
        write_evaluation(Path(out), report, model, images, labels, probabilities, {"run": str(run), "data": str(data)})
    return report


def predict(
    run: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    *,
    device: str = "auto",
    csv: str | os.PathLike | None = None,
    quiet: bool = True,
    unknown: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
) -> list[dict] | dict:
    """Label and probabilities for each image file (folders are searched for images). `run` is a run
    folder, or a file written by `export` (run with ONNX Runtime alone). A run that keeps its training
    photos' features (the default probe) adds familiarity and familiar (classify.familiarity); with
    `unknown`, an unfamiliar photo is labelled "unknown".

    With `csv`, any number of images are streamed to that CSV file with bounded memory (one row per
    image, or the reason it was skipped) and a progress bar unless `quiet`; returns the counts. With
    `engine="ray"`, in shards on a Ray cluster (`ray_address`), resumable (study.ray_predict)."""
    if engine != "local":  # the engine's name and what it needs are checked there
        return predict_on_ray(run, paths, csv, engine=engine, address=ray_address, quiet=quiet, unknown=unknown)
    if str(run).endswith(EXPORTED_SUFFIXES):  # an exported file: its runtime alone, no torch
        return predict_onnx(run, paths, csv=csv, quiet=quiet, unknown=unknown)
    return predict_files(load(run, device=device), image_files_in(paths), csv, quiet, unknown)


def load(run: str | os.PathLike, *, device: str = "auto") -> LoadedRun:
    """A finished run loaded once, for many predictions: `.label(uint8 N x 3 x S x S, names)` gives
    predict's rows, `.probabilities(images)` the array; `.classes`, `.image_size` (S)."""
    return LoadedRun(run, resolve_device(device))


NEAREST = 3  # training photos shown beside an explanation


def explain(
    run: str | os.PathLike, paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, device: str = "auto"
) -> list[dict]:
    """Where the model looked, for each image: its label and probability, and OUT/<n>_<name>.png with the
    photo, its Grad-CAM heatmap (last convolutional layer) and its occlusion map (no gradients), and for a
    run that keeps its training photos' features, the 3 nearest training photos (class, distance),
    written with OUT/explanations.json. Needs the extra .[explain] (Captum)."""
    check_outside(out, [*paths, *datasets_holding(paths)])
    loaded = load(run, device=device)
    files = image_files_in(paths)
    if not files:
        raise UserError("explain: give at least one image file or folder")
    check_output_folder(Path(out), "explanations.json", "explanation folder")
    images = decode_files(files, loaded.image_size)
    nearest = None
    if loaded.familiarity is not None:
        nearest = [row.get("nearest", []) for row in loaded.label(images, [str(f) for f in files], nearest=NEAREST)]
    return explain_images(loaded.model, loaded.config, files, images, out, nearest=nearest)


def doctor(
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    label_model: str = "auto",
    duplicate_distance: int = 6,
    seed: int = 0,
    data_options: DataOptions | None = None,
    device: str = "auto",
    quiet: bool = True,
    warn: Warn = warn_to_stderr,
    **fields,
) -> dict:
    """Check DATA before training: counts and imbalance, skipped files, sizes, near-duplicates (across
    the split a run would use, and across classes), a shortcut probe (can trivial image statistics
    predict the class?), sources that hold one class only (with groups), and likely label errors
    (cleanlab on out-of-fold probabilities of the pretrained probe, or of a from-scratch recipe).

    Returns the report; `report["findings"]` holds its headline lines. With `out`, writes
    OUT/doctor.json and OUT/doctor.html (thumbnails of each finding). Needs the extra .[doctor].
    `fields` are DataOptions fields as keywords (groups="subfolders", split_by_group=True)."""
    check_outside(out, data)
    options = dataclasses.replace(data_options or DataOptions(), **fields)
    return examine(
        data,
        out,
        options=options,
        label_model=label_model,
        duplicate_distance=duplicate_distance,
        seed=seed,
        device=resolve_device(device),
        quiet=quiet,
        warn=warn,
    )


def export(run: str | os.PathLike, out: str | os.PathLike | None = None, *, format: str = "onnx") -> dict:
    """Write RUN's model as one self-contained file (ONNX: uint8 images in, class probabilities out, with
    classes, input size, precision and the test accuracy with its interval in its metadata), checked
    against the run with ONNX Runtime on its test images. `format`: onnx (fp32, RUN/model.onnx: the
    same probabilities to 1e-4) or onnx-int8 (RUN/model.int8.onnx: calibrated on the run's training
    photos, written only when it gives the fp32 model's label on at least 99% of its test photos) or
    openvino (RUN/openvino/model.xml + model.bin, checked to 1e-4 with the OpenVINO runtime) or coreml
    (RUN/model.mlpackage: an image in, probabilities out; checked against the run on Apple systems, as a
    specification elsewhere).
    Returns file, format, bytes, what it was checked on and how, metadata (export.formats.export_run:
    never inside the run's data folder, under a reader's lock on the run)."""
    return export_run(run, out, format)


# ----------------------------------------------------------------------------------------------
# GANs


def gan_train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str = "default",
    overrides: dict | None = None,
    data_options: DataOptions | None = None,
    seed: int = 0,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    device: str = "auto",
    warn: Warn = warn_to_stderr,
    command: list[str] | None = None,
    **fields,
) -> dict:
    """Train a GAN on the TRAINING split of DATA and write GAN_DIR (`out`); returns summary.json's dict.

    `overrides` (or keyword shorthands such as iterations=300, conditional=False) replace fields of the
    GAN preset (pasture.gan.trainer.GanPreset). GAN_DIR holds config.json, checkpoint.pt,
    gan_log.jsonl (losses, D(x), D(G(z)) per iteration), gan_losses.png, samples_uN_XXXXX.png (fixed
    noise), grid_<class>.png (32 samples of each class) and summary.json (diversity, time).
    """
    check_outside(out, data)
    overrides, options = _options("gan_train", GanPreset, overrides, data_options, fields)
    chosen = dataclasses.replace(
        get_gan_preset(preset), **{key: value for key, value in overrides.items() if value is not None}
    )
    validate_gan_preset(chosen)
    where = resolve_device(device)
    precision = effective_precision(chosen.precision, where, warn)
    dataset = load_dataset(data, chosen.image_size, warn=warn, **options.load_kwargs())
    identity = {"kind": "gan", "preset": chosen.to_dict(), "seed": seed, **options.identity(data, dataset)}
    out = Path(out)
    config = {
        "kind": "gan",
        "preset": chosen.to_dict(),
        "classes": dataset.classes,
        "seed": seed,
        "data_summary": dataset.summary(),
        "device": device_info(where, precision),
    }
    resumable = f"{out / 'checkpoint.pt'} holds the last sample point. Run the same command with --resume to continue"
    with opened_run(
        out,
        identity,
        config,
        what="GAN",
        result_file="summary.json",
        done_check=summary_problem,
        resume=resume,
        force=force,
        command=command,
        warn=warn,
        on_interrupt=resumable,
    ) as opened:
        if opened.finished is not None:
            return opened.finished
        # Only the training split is handed over; train_gan refuses any other split.
        result = train_gan(
            dataset.train,
            chosen,
            seed,
            out=out,
            resume=opened.resuming,
            quiet=quiet,
            warn=warn,
            device=where,
            precision=precision,
        )
        write_class_grids(out, chosen, dataset.classes, result["units"], seed)
        summary = gan_summary(result, chosen, dataset)
        atomic_write_json(out / "summary.json", summary)
        return summary


def gan_sample(
    gan_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    per_class: int = 500,
    seed: int = 0,
    truncation: float | None = None,
    filter_run: str | os.PathLike | None = None,
    min_confidence: float = 0.5,
    force: bool = False,
    device: str = "auto",
    warn: Warn = warn_to_stderr,
) -> dict:
    """Write `per_class` generated images per class to out/<class>/*.png with out/synth.json."""
    synthetic, info = sample_images(
        gan_dir,
        per_class,
        seed=seed,
        truncation=truncation,
        filter_run=filter_run,
        min_confidence=min_confidence if filter_run is not None else 0.0,
        warn=warn,
        device=resolve_device(device),
    )
    write_synthetic(synthetic, info, out, force=force)
    return info


def gan_score(
    source: str | os.PathLike,
    data: str | os.PathLike,
    *,
    run: str | os.PathLike | None = None,
    per_class: int | None = None,
    seed: int = 0,
    write: bool = True,
    device: str = "auto",
    warn: Warn = warn_to_stderr,
) -> dict:
    """KID, GAN-test (per class too), GAN-train and memorisation of a GAN folder (sampled here) or a
    synthetic set folder.

    Writes SOURCE/score.json. The real test split of DATA is only evaluated on.
    """
    source = Path(source)
    where = resolve_device(device)
    if write:  # score.json goes into SOURCE: find out now, not after minutes of training
        check_writable(source, "score it with write=False (--json prints the score) or copy the folder")
    size = (
        read_checked_json(Path(run) / "config.json", run_config_problem, what="run folder")["image_size"]
        if run is not None
        else resolve_recipe(SCORING_RECIPE).image_size
    )
    dataset = load_dataset(data, size, warn=warn)
    if (source / "synth.json").is_file():
        synthetic, _ = load_synthetic(source, dataset.classes, size, warn)
        made_at = read_checked_json(source / "synth.json", what="synthetic set").get("image_size")
        origin: dict[str, object] = {"synthetic_set": str(source.resolve())}
    else:
        count = per_class or max(dataset.train.counts().values())
        synthetic, info = sample_images(source, count, seed=seed, warn=warn, device=where)
        if synthetic.classes != dataset.classes:
            raise UserError(f"{source}: the GAN's classes {synthetic.classes} differ from DATA's {dataset.classes}")
        origin, made_at = {"gan": info["gan"], "per_class": count}, info["image_size"]
    if not isinstance(made_at, int) or not 16 <= made_at <= size:
        made_at = size  # a synthetic set without a readable size: compare at the scoring size
    score = {
        **origin,
        **score_synthetic(synthetic, dataset, run=run, seed=seed, device=where, gan_image_size=made_at),
    }
    if write:
        atomic_write_json(source / "score.json", score)
    return score


# ----------------------------------------------------------------------------------------------
# Experiments and the demo


def experiment(
    data: str | os.PathLike,
    out: str | os.PathLike,
    options: ExperimentOptions | None = None,
    *,
    warn: Warn = warn_to_stderr,
    **fields,
) -> dict:
    """Run conditions x replicates (paired) on DATA and write DIR/report.md, report.html, results.*.

    `options` (an ExperimentOptions), or a keyword per field of it (`conditions=[...]`, `seeds=10`):
    `conditions` are names from pasture.study.conditions.CONDITIONS or 'NAME:key=value,...' specs; the
    first is the baseline every other one is compared with; `recipe`/`model` apply to written conditions
    that name none (e.g. "aug:augment=strong" with recipe="small-data"). `paper=True` runs the report's
    table (paper, +transforms, +DCGAN) with pasture's default recipe and GAN for contrast. `folds=k` is
    repeated stratified k-fold on DATA/<class>/; `folds="groups"` with `groups` (a CSV with columns file
    and `group_column`, or "subfolders") holds out each group (photo source) in turn.
    `dry_run=True` returns only {"plan", "plan_text"}: the runs, stored runs, GANs to train or reuse
    from the shared GAN store, and the time remembered for such runs on this machine.
    `force` first removes pasture's own files (stored runs, GANs, reports) from DIR, never others.

    `engine="local"` runs on this machine (`jobs` processes); `engine="ray"` runs every run as a Ray
    task (pasture.study.ray_engine), on a Ray instance started for the study or, with `ray_address`
    ("auto" or HOST:PORT), on that cluster, `threads_per_run` CPUs per task (default 1). Both store
    the same runs under the same keys.
    """
    chosen = with_fields(options or ExperimentOptions(), "experiment", fields)
    check_outside(out, data)
    if chosen.paper:
        names = list(chosen.conditions or PAPER_EXPERIMENT)
        title, numbers = "The report's experiment, re-run with intervals", REPORT_NUMBERS
    else:
        names = list(chosen.conditions or ["scratch", "small-data"])
        title, numbers = "pasture experiment", {}
    spec = ExperimentSpec(
        data=str(data),
        out=str(out),
        conditions=[parse_condition(name, recipe=chosen.recipe, model=chosen.model) for name in names],
        seeds=chosen.seeds,
        folds=chosen.folds,
        groups=chosen.groups,
        group_column=chosen.group_column,
        classes=chosen.classes,
        min_image_size=chosen.min_image_size,
        jobs=chosen.jobs,
        eval_every=chosen.eval_every,
        quiet=chosen.quiet,
        title=title,
        report_numbers=numbers,
        command=list(chosen.command or []),
        force=chosen.force,
        device=study_device(chosen.device, chosen.engine),
        dry_run=chosen.dry_run,
    )
    return run_on_engine(run_experiment, spec, warn, chosen)


def tune(
    data: str | os.PathLike,
    out: str | os.PathLike,
    options: TuneOptions | None = None,
    *,
    warn: Warn = warn_to_stderr,
    **fields,
) -> dict:
    """Search recipe fields (`space`, a JSON file: {field: [choices] or {"low", "high", "log"?, "step"?}})
    from `recipe` with Optuna, every candidate scored on the same `folds` x `seeds` folds of DATA's
    training split (never its test split), then compare the best with `recipe` on fresh folds. Writes
    DIR/best_recipe.json (for `train --recipe`), tune.json, tune.md and trials.csv; returns tune.json's
    contents. `options` (a TuneOptions) or a keyword per field of it. See pasture.study.tune."""
    chosen = with_fields(options or TuneOptions(), "tune", fields)
    if chosen.space is None:
        raise UserError("--space: give SPACE.json, the fields to search and their ranges")
    check_outside(out, data)
    spec = TuneSpec(
        data=str(data),
        out=str(out),
        space=str(chosen.space),
        recipe=str(chosen.recipe),
        trials=chosen.trials,
        folds=chosen.folds,
        seeds=chosen.seeds,
        batch=chosen.batch,
        seed=chosen.seed,
        classes=chosen.classes,
        min_image_size=chosen.min_image_size,
        test_fraction=chosen.test_fraction,
        split_seed=chosen.split_seed,
        device=study_device(chosen.device, chosen.engine),
        quiet=chosen.quiet,
        force=chosen.force,
        command=list(chosen.command or []),
    )
    return run_on_engine(run_tune, spec, warn, chosen)


def demo(
    out: str | os.PathLike = "pasture-demo",
    *,
    seeds: int = 3,
    quick: bool = False,
    quiet: bool = False,
    jobs: int | str = "auto",
    device: str = "auto",
    command: list[str] | None = None,
) -> dict:
    """Draw the procedural two-class image set into out/data and run baseline, +transforms and +GAN on it.

    `quick` shrinks everything (for tests); the full demo takes a few minutes on 2 CPU cores.
    """
    out = Path(out)
    data = out / "data"
    if not data.is_dir():
        write_demo_data(data, per_class=24, size=32, seed=0)
    epochs = 4 if quick else 30
    iterations = 20 if quick else 300
    conditions = [
        f"baseline:recipe=default,augment=none,image_size=32,epochs={epochs}",
        f"transforms:recipe=default,augment=paper,image_size=32,epochs={epochs}",
        f"gan:recipe=default,augment=paper,image_size=32,epochs={epochs},gan=default,image_size_gan=32,"
        f"iterations={iterations},per_class={50 if quick else 200},ratio=0.3,ngf=16,ndf=16",
    ]
    return experiment(
        data, out / "report", conditions=conditions, seeds=seeds, quiet=quiet, jobs=jobs, device=device, command=command
    )
