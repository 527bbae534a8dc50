"""Studies: an experiment over conditions and seeds, a recipe search, the demo data."""

from __future__ import annotations

import os
from pathlib import Path

from pasture.core.defaults import Warn, warn_to_stderr
from pasture.core.errors import UserError
from pasture.core.paths import check_outside
from pasture.study.conditions import PAPER_EXPERIMENT, REPORT_NUMBERS, parse_condition
from pasture.study.demo import write_demo_data
from pasture.study.experiment import (
    ExperimentOptions,
    ExperimentSpec,
    run_experiment,
    run_on_engine,
    spec_from_options,
    study_device,
    with_fields,
)
from pasture.study.tune import TuneOptions, TuneSpec, run_tune


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
    spec = spec_from_options(
        ExperimentSpec,
        chosen,
        data=str(data),
        out=str(out),
        conditions=[parse_condition(name, recipe=chosen.recipe, model=chosen.model) for name in names],
        title=title,
        report_numbers=numbers,
        device=study_device(chosen.device, chosen.engine),
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
    device = study_device(chosen.device, chosen.engine)
    spec = spec_from_options(
        TuneSpec,
        chosen,
        data=str(data),
        out=str(out),
        space=str(chosen.space),
        recipe=str(chosen.recipe),
        device=device,
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
