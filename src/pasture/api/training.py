"""train: a run folder from a folder of photos (the recipe, its teacher or synthetic photos, resume)."""

from __future__ import annotations

import os
from pathlib import Path

from pasture.api.options import sort_options
from pasture.classify.finish import finish_run
from pasture.classify.fit import check_eval_every, train_classifier
from pasture.classify.recipes import (
    Recipe,
    recipe_alias_note,
    recipe_line,
    resolve_recipe,
    scratch_warning,
)
from pasture.classify.transfer import synthetic_for_run, teacher_bank_for_run
from pasture.core.defaults import (
    DataOptions,
    Warn,
    warn_to_stderr,
)
from pasture.core.device import device_info, effective_precision, resolve_device
from pasture.core.errors import UserError
from pasture.core.paths import check_outside
from pasture.core.record import record_problem
from pasture.core.runs import (
    check_output_folder,
    opened_run,
)
from pasture.data import (
    load_dataset,
)


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
    overrides, options = sort_options("train", Recipe, overrides, data_options, fields)
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
