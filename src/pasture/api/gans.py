"""GANs: train one, sample it into a folder of synthetic photos, score what it made."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pasture.api.options import sort_options
from pasture.classify.recipes import resolve_recipe
from pasture.classify.trained import run_config_problem
from pasture.core.defaults import DataOptions, Warn, warn_to_stderr
from pasture.core.device import device_info, effective_precision, resolve_device
from pasture.core.errors import UserError
from pasture.core.paths import check_outside
from pasture.core.runs import atomic_write_json, check_writable, opened_run, read_checked_json
from pasture.data import load_dataset, load_synthetic
from pasture.gan.presets import GanPreset, get_gan_preset
from pasture.gan.summary import GAN_FOLDER, gan_summary
from pasture.gan.synth import SCORING_RECIPE, sample_images, score_synthetic, write_class_grids, write_synthetic
from pasture.gan.trainer import train_gan, validate_gan_preset


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
    overrides, options = sort_options("gan_train", GanPreset, overrides, data_options, fields)
    chosen = dataclasses.replace(
        get_gan_preset(preset), **{key: value for key, value in overrides.items() if value is not None}
    )
    validate_gan_preset(chosen)
    where = resolve_device(device)
    precision = effective_precision(chosen.precision, where, warn)
    dataset = load_dataset(data, chosen.image_size, options, warn=warn)
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
        GAN_FOLDER,
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
