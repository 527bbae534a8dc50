"""train: a run folder from a folder of photos (the recipe, its teacher or synthetic photos, resume)."""

from __future__ import annotations

import os
from pathlib import Path

from pasture.api.options import sort_options
from pasture.classify.finish import finish_run
from pasture.classify.fit import check_eval_every, train_classifier
from pasture.classify.recipes import Recipe, recipe_alias_note, recipe_line, resolve_recipe, scratch_warning
from pasture.classify.transfer import Transfer, transfer_for_run
from pasture.core.defaults import DataOptions, Warn, warn_to_stderr
from pasture.core.device import device_info, effective_precision, resolve_device
from pasture.core.errors import UserError
from pasture.core.paths import check_outside
from pasture.core.record import RUN_FOLDER
from pasture.core.runs import opened_run
from pasture.data import load_dataset


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

    `recipe` names a preset (RECIPES); None is the default, the pretrained probe, or what else asked for
    needs (finetune, scratch for a from-scratch --model, distill with a teacher). `overrides` (or keyword
    shorthands: epochs=3, pretrained="probe") replace its fields; `data_options` (or classes=,
    test_fraction=, ...) say how DATA is read and split. The test split is scored every `eval_every`-th
    epoch for the record, never used to choose anything. `synthetic` images (a `gan sample` folder) take
    `synthetic_ratio` of each batch. With `teacher` (a finished run), the model is a student that matches
    its outputs (classify.distill), and `unlabeled` photos and `synthetic` ones join the transfer set.
    `device`: auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps.
    """
    check_eval_every(eval_every)
    check_outside(out, data)
    overrides, options = sort_options("train", Recipe, overrides, data_options, fields)
    chosen = _chosen_recipe(recipe, overrides, teacher, unlabeled, warn)
    where = resolve_device(device)
    precision = effective_precision(chosen.precision, where, warn)
    dataset = load_dataset(data, chosen.image_size, options, warn=warn)
    if not quiet:  # said once the data loaded: a refused command stays one line
        print(recipe_line(chosen, recipe or ("distill" if teacher else None)), flush=True)
    if teacher is None and (warning := scratch_warning(chosen)):
        warn(warning)
    extra = transfer_for_run(
        teacher, unlabeled, synthetic, synthetic_ratio, chosen, data, options, dataset, where, out, force, quiet, warn
    )
    identity = {"synthetic": extra.synthetic_info, "recipe": chosen.recorded(), "seed": seed}
    identity.update(**options.identity(data, dataset), **extra.teacher_identity())
    out = Path(out)
    config = _run_config(chosen.recorded(), dataset, seed, eval_every, device_info(where, precision), extra)
    hint = f"{out / 'checkpoint.pt'} holds the last finished epoch. Run the same command with --resume to continue"
    with opened_run(
        out, identity, config, RUN_FOLDER, resume=resume, force=force, command=command, warn=warn, on_interrupt=hint
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
            synthetic=extra.synthetic,
            synthetic_ratio=extra.synthetic_ratio,
            eval_every=eval_every,
            device=where,
            precision=precision,
            bank=extra.bank,
        )
        if result.nonfinite_loss:
            warn(DIVERGED)
        return finish_run(out, result, dataset, chosen)


DIVERGED = (
    "the training loss became NaN or infinite (the recipe diverged); the accuracies below describe a broken model"
)


def _chosen_recipe(recipe: str | None, overrides: dict, teacher, unlabeled, warn: Warn) -> Recipe:
    """The recipe `train` was asked for: "distill" by default with a teacher, its old name said."""
    if unlabeled is not None and teacher is None:
        raise UserError("--unlabeled: needs --teacher RUN, which labels those photos")
    if teacher is not None and recipe is None:
        recipe = "distill"
    if recipe is not None and (note := recipe_alias_note(recipe)):
        warn(note)
    return resolve_recipe(recipe, **overrides)


def _run_config(recipe: dict, dataset, seed: int, eval_every: int, device: dict, extra: Transfer) -> dict:
    """config.json of a classifier's run (opened_run adds the identity, versions, command and time)."""
    return {
        "model": recipe["model"],
        "image_size": recipe["image_size"],
        "classes": dataset.classes,
        "seed": seed,
        "recipe": recipe,
        "data_summary": dataset.summary(),
        "eval_every": eval_every,
        "device": device,
        **({"teacher": extra.teacher_info} if extra.teacher_info else {}),
    }
