"""The functions a notebook calls. The CLI is a thin layer over these.

    from pasture import api
    metrics = api.train("DATA", "runs/first", recipe="paper", seed=1)
    report = api.evaluate("runs/first", "OTHER_PHOTOS")
    rows = api.predict("runs/first", ["photo.jpg"])

Every function raises pasture.errors.UserError (one line, names the file or option) for input a user
can fix, and pasture.errors.Interrupted when Ctrl-C stopped a training run after its last checkpoint.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path

from pasture.defaults import DEFAULT_MIN_IMAGE_SIZE, DEFAULT_RECIPE, DEFAULT_TEST_FRACTION, Warn, warn_to_stderr
from pasture.errors import Interrupted, UserError


def resolve_recipe(recipe: str = DEFAULT_RECIPE, pretrained: str | None = None, **overrides):
    """The Recipe a run will use: the named preset with the given fields overridden, checked.

    `pretrained="probe"|"finetune"` with the default recipe starts from the recipe of that name
    (EfficientNet-Lite0 at its own input size and normalisation); other flags still override it.
    """
    from pasture.augment import get_augment
    from pasture.models import get_spec
    from pasture.recipes import get_recipe, with_overrides

    base = get_recipe(recipe)
    if pretrained is not None and pretrained != "none" and recipe == DEFAULT_RECIPE:
        base = get_recipe(pretrained)
    if overrides.get("weights") is not None:
        overrides["weights"] = str(Path(overrides["weights"]).resolve())
    resolved = with_overrides(base, pretrained=pretrained, **overrides)
    spec = get_spec(resolved.model)
    if spec.pretrained and resolved.pretrained == "none":
        raise UserError(f"--model {spec.name}: a pretrained backbone; add --pretrained probe or --pretrained finetune")
    if not spec.pretrained and resolved.pretrained != "none":
        raise UserError(f"--pretrained {resolved.pretrained}: {spec.name} has no pretrained weights; use "
                        "--model effnet-lite0")
    if not spec.pretrained and resolved.weights is not None:
        raise UserError(f"--weights: {spec.name} is trained from scratch and takes no backbone weights")
    if resolved.weights is not None and not Path(resolved.weights).is_file():
        raise UserError(f"--weights {resolved.weights}: no such file")
    if resolved.image_size < spec.min_image_size:
        raise UserError(
            f"--image-size {resolved.image_size}: too small for {spec.name}; it needs at least "
            f"{spec.min_image_size} px"
        )
    get_augment(resolved.augment)
    return resolved


def _data_identity(data, dataset, test_fraction, split_seed, min_image_size, strict) -> dict:
    """The data side of a run's identity: which files, which split, which filters."""
    split_here = dataset.layout == "class-folders"
    return {
        "data": str(Path(data).resolve()),
        "data_fingerprint": dataset.fingerprint,
        "classes": dataset.classes,
        "layout": dataset.layout,
        "test_fraction": test_fraction if split_here else None,
        "split_seed": split_seed if split_here else None,
        "min_image_size": min_image_size,
        "strict": strict,
    }


def _open_run_dir(out: Path, identity: dict, config: dict, *, what: str, result_file: str, resume: bool,
                  force: bool, command: list[str] | None) -> tuple[str, dict | None]:
    """Prepare a run folder (new, resume or done; see runs.prepare_run_dir). A new run gets config.json:
    `config` plus the identity, versions, command and time. Returns (state, the finished run's
    `result_file` contents when state is "done", else None)."""
    from pasture.runs import atomic_write_json, prepare_run_dir, read_json, versions

    state = prepare_run_dir(out, identity, resume=resume, force=force)
    if state == "done":
        print(f"{out}: this {what} had already finished; nothing to resume", file=sys.stderr)
        return state, read_json(out / result_file)
    if state == "new":
        atomic_write_json(out / "config.json", {
            **config,
            "identity": identity,
            "versions": versions(),
            "command": command if command is not None else list(sys.argv),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
    return state, None


def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe: str = DEFAULT_RECIPE,
    model: str | None = None,
    augment: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    image_size: int | None = None,
    pretrained: str | None = None,
    weights: str | os.PathLike | None = None,
    ensemble: int | None = None,
    tta: bool | None = None,
    selfsup_epochs: int | None = None,
    precision: str | None = None,
    balance_classes: bool | None = None,
    eval_every: int = 1,
    synthetic: str | os.PathLike | None = None,
    synthetic_ratio: float | None = None,
    seed: int = 0,
    classes: list[str] | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_seed: int = 0,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    strict: bool = False,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    warn: Warn = warn_to_stderr,
    command: list[str] | None = None,
) -> dict:
    """Train a classifier on DATA and write the run folder `out`; returns the metrics dict.

    `recipe` names a preset (see pasture.recipes); model/augment/epochs/batch_size/lr/image_size/
    pretrained/weights/ensemble/tta/selfsup_epochs/precision/balance_classes override its fields. The test split is
    evaluated after every epoch for the record (every `eval_every`-th epoch, plus the first and last,
    when that is more than 1), never used to choose anything.
    """
    from pasture.data import load_dataset, load_synthetic
    from pasture.train import check_eval_every, train_classifier

    check_eval_every(eval_every)

    chosen = resolve_recipe(
        recipe, pretrained=pretrained, model=model, augment=augment, epochs=epochs, batch_size=batch_size, lr=lr,
        image_size=image_size, weights=None if weights is None else str(weights), ensemble=ensemble, tta=tta,
        selfsup_epochs=selfsup_epochs, precision=precision, balance_classes=balance_classes,
    )
    dataset = load_dataset(
        data, chosen.image_size, classes=classes, test_fraction=test_fraction, split_seed=split_seed,
        min_image_size=min_image_size, strict=strict, warn=warn,
    )
    synthetic_images, synthetic_info = None, None
    if synthetic is not None:
        if chosen.pretrained == "probe":
            raise UserError("--synthetic: a probe trains on cached features of real images; use --pretrained "
                            "finetune or a from-scratch recipe")
        synthetic_images, synthetic_fingerprint = load_synthetic(synthetic, dataset.classes, chosen.image_size, warn)
        if synthetic_ratio is None:
            synthetic_ratio = len(synthetic_images) / (len(synthetic_images) + len(dataset.train))
        if not 0 < synthetic_ratio < 1:
            raise UserError(f"--synthetic-ratio {synthetic_ratio}: must be between 0 and 1")
        synthetic_info = {"folder": str(Path(synthetic).resolve()), "fingerprint": synthetic_fingerprint,
                          "ratio": synthetic_ratio, "counts": synthetic_images.counts()}
    elif synthetic_ratio is not None:
        raise UserError("--synthetic-ratio: give --synthetic SYNTH_DIR too")
    identity = {
        "synthetic": synthetic_info,
        "recipe": chosen.to_dict(),
        "seed": seed,
        **_data_identity(data, dataset, test_fraction, split_seed, min_image_size, strict),
    }
    out = Path(out)
    state, finished = _open_run_dir(out, identity, {
        "model": chosen.model, "image_size": chosen.image_size, "classes": dataset.classes, "seed": seed,
        "recipe": chosen.to_dict(), "data_summary": dataset.summary(), "eval_every": eval_every,
    }, what="run", result_file="metrics.json", resume=resume, force=force, command=command)
    if finished is not None:
        return finished
    try:
        result = train_classifier(dataset, chosen, seed, run_dir=out, resume=(state == "resume"), quiet=quiet,
                                  synthetic=synthetic_images, synthetic_ratio=synthetic_ratio or 0.0,
                                  eval_every=eval_every)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; {out / 'checkpoint.pt'} holds the last finished epoch. Run the same command "
            "with --resume to continue"
        ) from None
    if result.nonfinite_loss:
        warn("the training loss became NaN or infinite (the recipe diverged); the accuracies below "
             "describe a broken model")
    metrics = finish_run(out, result, dataset, chosen)
    return metrics


def finish_run(out: Path, result, dataset, recipe) -> dict:
    """Evaluate the trained model on both splits and write metrics.json and the figures."""
    from pasture.evaluate import evaluate_model
    from pasture.plots import plot_confusion, plot_curves
    from pasture.runs import atomic_write_json

    train_report = evaluate_model(result.model, dataset.train.images, dataset.train.labels, dataset.classes)
    test_report = evaluate_model(result.model, dataset.test.images, dataset.test.labels, dataset.classes,
                                 tta=recipe.tta)
    metrics = {
        "train_accuracy": train_report["accuracy"],
        "train_ci95": train_report["ci95"],
        "n_train": train_report["n"],
        "test_accuracy": test_report["accuracy"],
        "test_ci95": test_report["ci95"],
        "n_test": test_report["n"],
        "classes": dataset.classes,
        "confusion": test_report["confusion"],
        "per_class": test_report["per_class"],
        "train_confusion": train_report["confusion"],
        "final_train_loss": result.history[-1]["train_loss"] if result.history else None,
        "epochs": len(result.history),
        "model": recipe.model,
        "recipe": recipe.name,
        "train_seconds": result.seconds,
        "diverged": result.nonfinite_loss,
        "tta": recipe.tta,
        "ensemble": recipe.ensemble,
        **result.notes,
    }
    plot_curves(result.history, out / "curves.png", title=f"{recipe.model} / {recipe.name}")
    plot_confusion(test_report["confusion"], dataset.classes, out / "confusion.png",
                   title=f"test: {test_report['correct']}/{test_report['n']} correct")
    # metrics.json last: its presence marks the run as finished.
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def load_run(run: str | os.PathLike):
    """(model in eval mode, config dict) of a finished run folder; an ensemble comes back as one
    module whose output averages its members' probabilities."""
    from pasture.recipes import Recipe
    from pasture.runs import load_checkpoint, read_json
    from pasture.train import build_members

    run = Path(run)
    if not (run / "config.json").is_file():
        raise UserError(f"{run}: not a pasture run folder (no config.json); give the --out of a `pasture train`")
    if not (run / "metrics.json").is_file():
        raise UserError(f"{run}: this run has not finished; continue it with `pasture train ... --resume`")
    config = read_json(run / "config.json")
    state = load_checkpoint(run / "checkpoint.pt")
    try:
        model = build_members(Recipe(**config["recipe"]), len(config["classes"]), state["members"])
    except (KeyError, RuntimeError, TypeError) as error:
        raise UserError(f"{run / 'checkpoint.pt'}: weights do not fit {config['model']} ({error})") from None
    model.eval()
    return model, config


def evaluate(
    run: str | os.PathLike,
    data: str | os.PathLike,
    *,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    strict: bool = False,
    warn: Warn = warn_to_stderr,
) -> dict:
    """Accuracy of a trained run on DATA (its test split, or every image of DATA/<class>/).

    Classes are matched by name; a class in DATA that the model does not know is a UserError.
    Returns accuracy, ci95, n, per_class, confusion (over the model's classes) and classes.
    """
    import torch

    from pasture.data import load_labelled_folder
    from pasture.evaluate import evaluate_model

    model, config = load_run(run)
    model_classes = config["classes"]
    images, skipped = load_labelled_folder(data, config["image_size"], min_image_size, strict, warn)
    unknown = [name for name in images.classes if name not in model_classes]
    if unknown:
        raise UserError(
            f"{data}: class folder(s) {', '.join(unknown)} are not classes this model knows "
            f"({', '.join(model_classes)}); rename or remove them"
        )
    to_model_index = torch.tensor([model_classes.index(name) for name in images.classes])
    report = evaluate_model(model, images.images, to_model_index[images.labels], model_classes,
                            tta=config["recipe"].get("tta", False))
    report["skipped"] = skipped
    return report


def predict(run: str | os.PathLike, paths: list[str | os.PathLike]) -> list[dict]:
    """Label and probabilities for each image file (folders are searched for images)."""
    from pasture.data import decode_files, image_files_in
    from pasture.evaluate import predict_probabilities

    model, config = load_run(run)
    files = image_files_in(paths)
    if not files:
        raise UserError("predict: give at least one image file or folder")
    probabilities = predict_probabilities(model, decode_files(files, config["image_size"]),
                                          tta=config["recipe"].get("tta", False))
    rows = []
    for path, probs in zip(files, probabilities.tolist()):
        best = max(range(len(probs)), key=probs.__getitem__)
        rows.append({
            "file": str(path),
            "label": config["classes"][best],
            "probability": probs[best],
            "probabilities": dict(zip(config["classes"], probs)),
        })
    return rows


# ----------------------------------------------------------------------------------------------
# GANs


def gan_train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str = "default",
    conditional: bool | None = None,
    image_size: int | None = None,
    nz: int | None = None,
    ngf: int | None = None,
    ndf: int | None = None,
    iterations: int | None = None,
    batch_size: int | None = None,
    diffaugment: str | None = None,
    ada: bool | None = None,
    loss: str | None = None,
    ema_decay: float | None = None,
    sample_every: int | None = None,
    precision: str | None = None,
    channels_last: bool | None = None,
    seed: int = 0,
    classes: list[str] | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_seed: int = 0,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    strict: bool = False,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    warn: Warn = warn_to_stderr,
    command: list[str] | None = None,
) -> dict:
    """Train a GAN on the TRAINING split of DATA and write GAN_DIR (`out`); returns summary.json's dict.

    GAN_DIR holds config.json, checkpoint.pt, gan_log.jsonl (losses, D(x), D(G(z)) per iteration),
    gan_losses.png, samples_uN_XXXXX.png (fixed noise) and summary.json (diversity, time).
    """
    import dataclasses

    from pasture.data import load_dataset
    from pasture.gan.trainer import get_gan_preset, train_gan, validate_gan_preset
    from pasture.runs import atomic_write_json

    base = get_gan_preset(preset)
    overrides = dict(conditional=conditional, image_size=image_size, nz=nz, ngf=ngf, ndf=ndf, iterations=iterations,
                     batch_size=batch_size, diffaugment=diffaugment, ada=ada, loss=loss, ema_decay=ema_decay,
                     sample_every=sample_every, precision=precision, channels_last=channels_last)
    chosen = dataclasses.replace(base, **{key: value for key, value in overrides.items() if value is not None})
    validate_gan_preset(chosen)
    dataset = load_dataset(data, chosen.image_size, classes=classes, test_fraction=test_fraction,
                           split_seed=split_seed, min_image_size=min_image_size, strict=strict, warn=warn)
    identity = {
        "kind": "gan", "preset": chosen.to_dict(), "seed": seed,
        **_data_identity(data, dataset, test_fraction, split_seed, min_image_size, strict),
    }
    out = Path(out)
    state, finished = _open_run_dir(out, identity, {
        "kind": "gan", "preset": chosen.to_dict(), "classes": dataset.classes, "seed": seed,
        "data_summary": dataset.summary(),
    }, what="GAN", result_file="summary.json", resume=resume, force=force, command=command)
    if finished is not None:
        return finished
    try:
        # Only the training split is handed over; train_gan refuses any other split.
        result = train_gan(dataset.train, chosen, seed, out=out, resume=(state == "resume"), quiet=quiet, warn=warn)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; {out / 'checkpoint.pt'} holds the last sample point. Run the same command with "
            "--resume to continue"
        ) from None
    last = {}
    for unit in range(len(result["units"])):
        rows = [row for row in result["log"] if row["unit"] == unit]
        if rows:
            last[str(unit)] = {key: rows[-1][key] for key in ("loss_d", "loss_g", "d_real", "d_fake", "p_aug")}
    summary = {
        "preset": chosen.name, "units": len(result["units"]), "iterations": chosen.iterations,
        "diversity_vs_real": result["diversity"], "final": last, "seconds": result["seconds"],
        "n_train": len(dataset.train), "classes": dataset.classes,
    }
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
    warn: Warn = warn_to_stderr,
) -> dict:
    """Write `per_class` generated images per class to out/<class>/*.png with out/synth.json."""
    from pasture.synth import sample_images, write_synthetic

    synthetic, info = sample_images(gan_dir, per_class, seed=seed, truncation=truncation, filter_run=filter_run,
                                    min_confidence=min_confidence if filter_run is not None else 0.0, warn=warn)
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
    warn: Warn = warn_to_stderr,
) -> dict:
    """GAN-test, GAN-train and memorisation of a GAN folder (sampled here) or a synthetic set folder.

    Writes SOURCE/score.json. The real test split of DATA is only evaluated on.
    """
    from pasture.data import load_dataset, load_synthetic
    from pasture.runs import atomic_write_json, read_json
    from pasture.synth import sample_images, score_synthetic

    source = Path(source)
    size = read_json(Path(run) / "config.json")["image_size"] if run is not None else resolve_recipe().image_size
    dataset = load_dataset(data, size, warn=warn)
    if (source / "synth.json").is_file():
        synthetic, _ = load_synthetic(source, dataset.classes, size, warn)
        origin = {"synthetic_set": str(source.resolve())}
    else:
        count = per_class or max(dataset.train.counts().values())
        synthetic, info = sample_images(source, count, seed=seed, warn=warn)
        if synthetic.classes != dataset.classes:
            raise UserError(f"{source}: the GAN's classes {synthetic.classes} differ from DATA's {dataset.classes}")
        origin = {"gan": info["gan"], "per_class": count}
    score = {**origin, **score_synthetic(synthetic, dataset, run=run, seed=seed)}
    if write:
        atomic_write_json(source / "score.json", score)
    return score


# ----------------------------------------------------------------------------------------------
# Experiments and the demo


def experiment(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    conditions: list[str] | None = None,
    seeds: int = 5,
    folds: int | None = None,
    recipe: str | None = None,
    model: str | None = None,
    classes: list[str] | None = None,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    jobs: int = 1,
    eval_every: int = 1,
    quiet: bool = False,
    paper: bool = False,
    warn: Warn = warn_to_stderr,
    command: list[str] | None = None,
) -> dict:
    """Run conditions x replicates (paired) on DATA and write DIR/report.md, report.html, results.*.

    `conditions` are names from pasture.experiment.CONDITIONS or 'NAME:key=value,...' specs; the first
    is the baseline every other one is compared with; `recipe`/`model` apply to written conditions
    that name none (e.g. "aug:augment=strong" with recipe="small-data"). `paper=True` runs the report's table
    (paper, +transforms, +DCGAN) with pasture's default recipe and GAN for contrast.
    """
    from pasture.experiment import PAPER_EXPERIMENT, REPORT_NUMBERS, ExperimentSpec, parse_condition, run_experiment

    if paper:
        names = list(conditions or PAPER_EXPERIMENT)
        title, numbers = "The report's experiment, re-run with intervals", REPORT_NUMBERS
    else:
        names = list(conditions or ["default", "small-data"])
        title, numbers = "pasture experiment", {}
    parsed = [parse_condition(name, recipe=recipe, model=model) for name in names]
    spec = ExperimentSpec(
        data=str(data), out=str(out), conditions=parsed, seeds=seeds, folds=folds, classes=classes,
        min_image_size=min_image_size, jobs=jobs, eval_every=eval_every, quiet=quiet, title=title,
        report_numbers=numbers,
        command=command if command is not None else list(sys.argv),
    )
    return run_experiment(spec, warn=warn)


def demo(out: str | os.PathLike = "pasture-demo", *, seeds: int = 3, quick: bool = False, quiet: bool = False,
         jobs: int = 1, command: list[str] | None = None) -> dict:
    """Draw the procedural two-class image set into out/data and run baseline, +transforms and +GAN on it.

    `quick` shrinks everything (for tests); the full demo takes a few minutes on 2 CPU cores.
    """
    from pasture.demo import write_demo_data

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
    return experiment(data, out / "report", conditions=conditions, seeds=seeds, quiet=quiet, jobs=jobs,
                      command=command)
