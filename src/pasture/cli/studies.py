"""Commands that compare many runs: experiment, demo, tune."""

from __future__ import annotations

from pathlib import Path

from pasture.cli.options import (
    JOBS_HELP,
    HelpFormatter,
    add_device_flag,
    add_engine_flags,
    add_group_flags,
    class_list,
    folds,
    fraction,
    int_at_least,
    jobs_choice,
    options_from_args,
    positive_int,
    recipe_choice,
)
from pasture.core.defaults import DEFAULT_MIN_IMAGE_SIZE, DEFAULT_TEST_FRACTION
from pasture.core.errors import UserError
from pasture.core.stats import difference_interval_text

EXPERIMENT_EXAMPLES = """examples:
  pasture experiment paper photos/ --out study/paper --seeds 10     # the report's table, with intervals
  pasture experiment photos/ --out study/mine --conditions scratch small-data probe --seeds 6
  pasture experiment photos/ --out study/mine --conditions scratch "aug:recipe=scratch,augment=strong"
  pasture experiment all_photos/ --out study/cv --folds 5 --seeds 2   # DATA/<class>/: repeated 5-fold CV
  pasture demo --out demo/                                          # no data needed

Conditions: named (paper, paper+transforms, paper+dcgan, scratch, scratch+gan, small-data, probe,
finetune) or NAME:key=value,... with recipe=, augment=, epochs=, model=, ..., gan=paper|default,
per_class=, ratio=, iterations=. The first condition is the baseline. Finished runs are stored under
DIR/runs and reused: re-running skips them, adding a condition runs only the new runs.
"""


def _add_experiment_command(commands) -> None:
    experiment = commands.add_parser(
        "experiment",
        help="compare conditions over seeds/folds, paired, with a report",
        epilog=EXPERIMENT_EXAMPLES,
        formatter_class=HelpFormatter,
        description="Runs every condition on the same splits and seeds and writes DIR/report.md, report.html, "
        "results.csv and results.json. `pasture experiment paper DATA` re-runs the report's table.",
    )
    experiment.set_defaults(command_handler=_run_experiment)  # the command's handler, beside its parser
    experiment.add_argument("target", metavar="[paper] DATA", nargs="+", help="DATA, or the word paper then DATA")
    experiment.add_argument(
        "--out", required=True, metavar="DIR", help="study folder: one stored result per run, report.md, results.json"
    )
    experiment.add_argument(
        "--conditions",
        nargs="+",
        metavar="CONDITION",
        help="recipes to compare: a recipe name, name:recipe,field=value,..., or a recipe file (see examples)",
    )
    experiment.add_argument(
        "--seeds",
        type=positive_int,
        default=5,
        help="seeds (train/test layout) or repeats of the k-fold split (class folders)",
    )
    experiment.add_argument(
        "--folds",
        type=folds,
        metavar="K|groups",
        help="k of the stratified k-fold, or groups: leave each group (photo source, see --groups) "
        "out in turn (DATA/<class>/ only)",
    )
    add_group_flags(experiment)
    experiment.add_argument(
        "--recipe",
        type=recipe_choice,
        metavar="RECIPE|FILE.json",
        help="recipe of written conditions that name none (e.g. aug:augment=strong)",
    )
    experiment.add_argument("--model", help="model of written conditions that name none")
    experiment.add_argument(
        "--classes", type=class_list, help="class order, e.g. horse,cow (alphabetical when not given)"
    )
    experiment.add_argument(
        "--min-image-size",
        type=positive_int,
        default=DEFAULT_MIN_IMAGE_SIZE,
        help="pixels: smaller images are skipped",
    )
    experiment.add_argument("--jobs", type=jobs_choice, default="auto", metavar="N|auto", help=JOBS_HELP)
    add_engine_flags(experiment)
    experiment.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (runs, stored runs, GANs to train or reuse) and the time it should take "
        "on this machine, then stop: nothing is trained or written",
    )
    experiment.add_argument(
        "--eval-every",
        type=positive_int,
        default=1,
        metavar="K",
        help="score the test split for each run's curves every K-th epoch (and the first and "
        "last) instead of every epoch; results are the same",
    )
    experiment.add_argument(
        "--force",
        action="store_true",
        help="start again: remove pasture's own files (stored runs, GANs, reports) from DIR first",
    )
    add_device_flag(experiment)
    experiment.add_argument("--quiet", action="store_true", help="no plan and no progress bar")


def _add_demo_command(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="the whole study on images pasture draws itself",
        formatter_class=HelpFormatter,
        description="Writes a procedural two-class image set (stripes vs spots) and runs "
        "baseline, +transforms and +GAN on it; prints where the report is.",
    )
    demo.set_defaults(command_handler=_run_demo)  # the command's handler, beside its parser
    demo.add_argument("--out", default="pasture-demo", metavar="DIR", help="folder for the drawn images and the study")
    demo.add_argument("--seeds", type=positive_int, default=3, help="runs per condition")
    demo.add_argument("--quick", action="store_true", help="tiny settings: seconds instead of minutes")
    demo.add_argument("--jobs", type=jobs_choice, default="auto", metavar="N|auto", help=JOBS_HELP)
    add_device_flag(demo)
    demo.add_argument("--quiet", action="store_true", help="no plan and no progress bar")


TUNE_EXAMPLES = """examples:
  pasture tune photos/ --out tuned --space space.json --trials 20       # from the default recipe
  pasture tune photos/ --out tuned --space space.json --engine ray      # the candidates as Ray tasks
  pasture train photos/ --out runs/tuned --recipe tuned/best_recipe.json

space.json: recipe fields (see `pasture recipes`) with a list of choices or a range:
  {"lr": {"low": 3e-4, "high": 1e-2, "log": true}, "epochs": {"low": 30, "high": 150, "step": 10},
   "augment": ["paper", "strong"]}
"""


def _add_tune_command(commands) -> None:
    tune = commands.add_parser(
        "tune",
        help="search recipe fields on folds of the training split, paired",
        epilog=TUNE_EXAMPLES,
        formatter_class=HelpFormatter,
        description="Optuna proposes candidates; each is trained and scored on the same K folds x S seeds of the "
        "training split (never the test split); the best is compared with --recipe on fresh folds and "
        "written as DIR/best_recipe.json for train --recipe.",
    )
    tune.set_defaults(command_handler=_run_tune)  # the command's handler, beside its parser
    tune.add_argument("data", metavar="DATA", help="class folders, or a train/test layout (its train split)")
    tune.add_argument(
        "--out", required=True, metavar="DIR", help="search folder: trials, the best recipe file, tune.json"
    )
    tune.add_argument("--space", required=True, metavar="SPACE.json", help="the fields to search and their ranges")
    tune.add_argument(
        "--recipe",
        default="scratch",
        type=recipe_choice,
        metavar="RECIPE|FILE.json",
        help="where the search starts, and what the best is compared with (default: scratch; the "
        "probe's one setting, its head's C, is already chosen by cross-validation)",
    )
    tune.add_argument("--trials", type=positive_int, default=20, help="candidates to try")
    tune.add_argument("--folds", type=int_at_least(2), default=3, help="K of the K-fold split of the training split")
    tune.add_argument("--seeds", type=positive_int, default=2, help="repeats of that split, each with its own seed")
    tune.add_argument(
        "--batch",
        type=positive_int,
        metavar="B",
        help="candidates proposed at once (default: enough to keep the engine busy)",
    )
    tune.add_argument("--seed", type=int, default=0, help="the search's seed")
    tune.add_argument("--classes", type=class_list, help="class order, e.g. horse,cow (alphabetical when not given)")
    tune.add_argument(
        "--test-fraction",
        type=fraction,
        default=DEFAULT_TEST_FRACTION,
        help="DATA/<class>/ only: the split `train` makes, whose test part the search never sees",
    )
    tune.add_argument("--split-seed", type=int, default=0, help="seed of the folds the trials are scored on")
    tune.add_argument(
        "--min-image-size",
        type=positive_int,
        default=DEFAULT_MIN_IMAGE_SIZE,
        help="pixels: smaller images are skipped",
    )
    tune.add_argument("--jobs", type=jobs_choice, default="auto", metavar="N|auto", help=JOBS_HELP)
    add_engine_flags(tune)
    tune.add_argument("--force", action="store_true", help="start again: remove pasture's own files from DIR first")
    add_device_flag(tune)
    tune.add_argument("--quiet", action="store_true", help="no plan and no progress bar")


def _run_tune(args) -> int:
    from pasture import api
    from pasture.study.tune import TuneOptions, tune_text

    result = api.tune(args.data, args.out, options_from_args(TuneOptions, args))
    print(tune_text(result), end="")
    return 0


def _print_experiment(results: dict, out: str) -> None:
    for row in results["conditions"]:
        low, high = row["test"]["ci95"]
        if row.get("same_every_seed"):  # one run repeated: the interval of its test images, not of n equal numbers
            low, high = row["pooled_wilson95"]
            spread = f"every one of {row['runs']} seeds the same run; 95% CI {low:.1%}-{high:.1%}, n={row['n_per_run']}"
        elif row["runs"] == 1:  # no spread over one run ("nan%-nan%" before): its test images' interval
            low, high = row["pooled_wilson95"]
            spread = f"one run; 95% CI {low:.1%}-{high:.1%}, n={row['n_per_run']}"
        else:
            spread = f"95% CI {low:.1%}-{high:.1%}, {row['runs']} runs x {row['n_per_run']} test images"
        print(f"{row['condition']:>20}: {row['test']['mean']:.1%} +/- {row['test']['std']:.1%} ({spread})")
        if row.get("per_group"):
            groups = ", ".join(f"{name} {cell['mean']:.0%}" for name, cell in row["per_group"].items())
            print(
                f"{'':>20}  on groups it never saw: balanced {row['balanced']['mean']:.1%} "
                f"+/- {row['balanced']['std']:.1%}; {groups}"
            )
    for comparison in results["comparisons"]:
        if comparison["baseline"] != results["conditions"][0]["condition"]:
            continue  # the other pairs are in the report
        print(
            f"{comparison['condition']:>20} vs {comparison['baseline']}: {comparison['mean_difference']:+.1%} "
            f"[{difference_interval_text(comparison['ci95'], ', ')}], p={comparison['p_value']:.3f}: "
            f"{comparison['verdict']}"
        )
    print(f"report: {Path(out) / 'report.html'} (and report.md, results.csv, results.json)")


def _run_experiment(args) -> int:
    from pasture import api
    from pasture.study.experiment import ExperimentOptions

    paper = len(args.target) == 2 and args.target[0] == "paper"
    if len(args.target) != 1 and not paper:
        raise UserError("experiment: give DATA, or `paper DATA`")
    results = api.experiment(args.target[-1], args.out, options_from_args(ExperimentOptions, args, paper=paper))
    if args.dry_run:
        print(results["plan_text"])
        return 0
    _print_experiment(results, args.out)
    return 0


def _run_demo(args) -> int:
    from pasture import api

    results = api.demo(
        args.out,
        seeds=args.seeds,
        quick=args.quick,
        quiet=args.quiet,
        jobs=args.jobs,
        device=args.device,
        command=args.command_line,
    )
    print(f"demo images (procedural stripes vs spots): {Path(args.out) / 'data'}")
    _print_experiment(results, str(Path(args.out) / "report"))
    return 0


def add_commands(commands) -> None:
    """experiment, demo, tune."""
    for add in (_add_experiment_command, _add_demo_command, _add_tune_command):
        add(commands)
