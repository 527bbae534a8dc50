"""Command line: argument parsing, messages and exit codes only. All work is in pasture.api.

Exit codes: 0 success, 2 user error or an OS error such as a full disk (one line on stderr naming the path,
no traceback), 130 interrupted by Ctrl-C.
torch is imported only when a command runs, so `pasture --help` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from pasture import __version__
from pasture.classify.recipes import RECIPE_ALIASES, RECIPES, Recipe
from pasture.core.defaults import (
    DEFAULT_MIN_IMAGE_SIZE,
    DEFAULT_RECIPE,
    DEFAULT_TEST_FRACTION,
    DataOptions,
    option_fields,
)
from pasture.core.errors import MACHINE_ERRNOS, Interrupted, UserError, WriteFailed
from pasture.core.paths import TEMP_NAME, printable_name
from pasture.gan.presets import GAN_PRESETS, GanPreset

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _jobs_choice(text: str) -> int | str:
    """An argparse type for --jobs: a whole number of at least 1, or auto."""
    return text if text == "auto" else _positive_int(text)


JOBS_HELP = (
    "runs at once on this machine, each in its own process with cores/N threads; auto (the default): one "
    "single-threaded run per core, up to 8 (on a CUDA GPU, which they share, also one per 4 GiB of its "
    "memory); a study that already holds runs keeps their threads per run"
)


def _recipe_choice(text: str) -> str:
    """An argparse type: a named recipe, or a recipe file (FILE.json, as `pasture tune` writes)."""
    if text in RECIPES or text in RECIPE_ALIASES or text.endswith(".json"):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: choose one of {', '.join(RECIPES)} or give a recipe file (.json)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def _folds(text: str) -> int | str:
    """--folds: a whole number of folds (2 or more), or the word groups."""
    return "groups" if text == "groups" else _int_at_least(2)(text)


def _class_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: name at least two classes, comma-separated")
    return names


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, and "(default: X)" only where X tells the reader something: not on a
    required option or a switch, not where the default is "not given", and not twice."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.required
            # by identity: `0 in (None, False)` is true, and a default of 0 (--seed) does tell something
            or any(action.default is unset for unset in (None, False, argparse.SUPPRESS))
            or not action.option_strings
            or "default" in text
        ):
            return text
        return super()._get_help_string(action)


TRAIN_EXAMPLES = """examples:
  pasture train photos/ --out runs/first                         # the default: the pretrained probe
  pasture train photos/ --out runs/paper --recipe paper          # the report's exact experiment
  pasture train photos/ --out runs/paper-aug --recipe paper --augment paper
  pasture train photos/ --out runs/scratch --recipe scratch --seed 3   # the report's CNN, tuned recipe
  pasture train photos/ --out runs/report-labels --classes horse,cow   # horse=0, cow=1 as the report
  pasture train photos/ --out runs/scratch --recipe scratch --seed 3 --resume   # continue after Ctrl-C
  pasture train photos/ --out runs/small --recipe small-data     # best from-scratch recipe
  pasture train photos/ --out runs/lite0 --model effnet-lite0    # one backbone: smaller, a little less robust
  pasture train photos/ --out runs/ft --pretrained finetune      # the whole network fine-tuned (minutes)
  pasture train photos/ --out runs/ens --recipe small-data --ensemble 5
  pasture train photos/ --out runs/tiny --teacher runs/probe                 # paper-cnn distilled from the probe
  pasture train photos/ --out runs/tiny+ --teacher runs/probe --unlabeled more_photos/ --synthetic synth/cond

DATA is DATA/train/<class>/* + DATA/test/<class>/*, or DATA/<class>/* (split with --test-fraction).
"""

EVALUATE_EXAMPLES = """examples:
  pasture evaluate runs/default new_photos/           # new_photos/<class>/*.jpg
  pasture evaluate runs/default photos/ --groups photos/MANIFEST.csv --group-column source   # per source
  pasture evaluate runs/default by_source/ --groups subfolders      # by_source/<class>/<source>/*.jpg
  pasture evaluate runs/default field/ --out field-check/   # + top_losses.png: most confidently wrong photos
  pasture evaluate runs/default photos/ --json        # photos/test/<class>/* when photos/ has train/ and test/
"""

DOCTOR_EXAMPLES = """examples:
  pasture doctor photos/                              # before the first pasture train photos/
  pasture doctor photos/ --out checkup/               # checkup/doctor.html with thumbnails
  pasture doctor photos/ --groups photos/MANIFEST.csv --group-column source   # which sources hold one class
  pasture doctor photos/ --json --label-model none    # no model, statistics only
"""

EXPORT_EXAMPLES = """examples:
  pasture export runs/default                         # runs/default/model.onnx
  pasture export runs/probe --out cowhorse.onnx
  pasture predict cowhorse.onnx field/                # ONNX Runtime alone, no torch
"""

PREDICT_EXAMPLES = """examples:
  pasture predict runs/default field/IMG_0042.jpg
  pasture predict runs/default field/ --json          # every image under field/
  pasture predict cowhorse.onnx field/                # an exported model, with ONNX Runtime alone
  pasture predict runs/default camera_trap/ --csv labels.csv   # thousands of images, streamed
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pasture",
        description="Grow good image classifiers from very little data, and measure honestly what helps.",
        epilog="Run `pasture COMMAND --help` for each command's options and examples.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"pasture {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        usage="pasture train DATA --out RUN [--recipe RECIPE] [recipe fields] [options]",
        help="train a classifier and write a run folder",
        epilog=TRAIN_EXAMPLES,
        formatter_class=_Formatter,
        description="Train a classifier on DATA; writes RUN/config.json, history.jsonl, metrics.json, "
        "checkpoint.pt, curves.png, confusion.png and top_losses.png (the test photos it got most confidently "
        "wrong, with heatmaps).",
    )
    train.set_defaults(command_handler=_run_train)  # the command's handler, beside its parser
    train.add_argument("data", metavar="DATA", help="folder with train/ and test/ class folders, or class folders")
    train.add_argument("--out", required=True, metavar="RUN", help="run folder to write")
    train.add_argument(
        "--recipe",
        default=None,
        type=_recipe_choice,
        metavar="RECIPE|FILE.json",
        help=f"a named preset ({', '.join(RECIPES)}; `pasture recipes` describes each) or a recipe file (as "
        f"`pasture tune` writes). Default: {DEFAULT_RECIPE} (finetune with --pretrained finetune, scratch with "
        "a from-scratch --model)",
    )
    _add_settings_flags(train, Recipe, "recipe")
    train.add_argument(
        "--eval-every",
        type=_positive_int,
        default=1,
        metavar="K",
        help="score the test split for the curves after every K-th epoch (and the first and last) "
        "instead of every epoch; the final metrics are the same",
    )
    train.add_argument(
        "--teacher",
        metavar="TEACHER_RUN",
        help="distil: train a small student (recipe distill unless --recipe says otherwise) to match this "
        "finished run's outputs on the same augmented views (teacher outputs cached)",
    )
    train.add_argument(
        "--unlabeled",
        metavar="DIR",
        help="with --teacher: photos without labels that the teacher labels "
        "for the student (any folder of images); photos from where "
        "the model will be used help most",
    )
    train.add_argument(
        "--synthetic",
        metavar="SYNTH_DIR",
        help="mix these synthetic images (gan sample) into training; with --teacher, the teacher labels them instead",
    )
    train.add_argument(
        "--synthetic-ratio",
        type=_fraction,
        metavar="R",
        help="expected synthetic share of each batch (default: as if added to the train folder)",
    )
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order, augmentation")
    _add_data_options(train)
    _add_device_flag(train)
    _add_run_folder_flags(train, "RUN")

    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy of a trained run on labelled images",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=_Formatter,
        description="Accuracy with its 95%% interval and n, per class, and the confusion matrix. Class "
        "folders are matched to the model's classes by name.",
    )
    evaluate.set_defaults(command_handler=_run_evaluate)  # the command's handler, beside its parser
    evaluate.add_argument("run", metavar="RUN", help="a finished run folder")
    evaluate.add_argument("data", metavar="DATA", help="class folders, or a train/test layout (its test split)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    evaluate.add_argument(
        "--out",
        metavar="DIR",
        help="also write DIR/evaluation.json, confusion.png and top_losses.png "
        "(the photos it got most confidently wrong, with heatmaps)",
    )
    evaluate.add_argument(
        "--min-image-size",
        type=_positive_int,
        default=DEFAULT_MIN_IMAGE_SIZE,
        help="pixels: smaller images are skipped",
    )
    evaluate.add_argument("--strict", action="store_true", help="unusable files are an error")
    evaluate.add_argument(
        "--groups",
        metavar="FILE.csv|subfolders",
        help="the photo source (group) of each image: a CSV with columns file (relative to DATA) and "
        "--group-column, or subfolders for DATA/<class>/<group>/*; adds accuracy per group",
    )
    evaluate.add_argument(
        "--group-column",
        default="group",
        metavar="COLUMN",
        help="the CSV column that holds the group (e.g. source, source_repo in MANIFEST.csv)",
    )
    _add_device_flag(evaluate)

    predict = commands.add_parser(
        "predict",
        help="label new images with a trained run",
        epilog=PREDICT_EXAMPLES,
        formatter_class=_Formatter,
        description="Label and probability for each image.",
    )
    predict.set_defaults(command_handler=_run_predict)  # the command's handler, beside its parser
    predict.add_argument("run", metavar="RUN", help="a finished run folder, or FILE.onnx from `pasture export`")
    predict.add_argument("paths", metavar="IMAGE_OR_FOLDER", nargs="+", help="image files or folders of images")
    predict.add_argument("--json", action="store_true", help="print JSON (a list of objects)")
    predict.add_argument(
        "--csv",
        metavar="OUT.csv",
        help="stream any number of images to this CSV (bounded memory, a progress bar): one row per "
        "image with its label and a probability per class, or the reason it was skipped",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar (with --csv)")
    _add_device_flag(predict)
    explain = commands.add_parser(
        "explain",
        help="where a run's model looked, per image",
        formatter_class=_Formatter,
        epilog="examples:\n  pasture explain runs/default field/ --out why/\n",
        description="For each image: the label and probability, and OUT/<n>_<name>.png with the photo, its Grad-CAM "
        "heatmap (last convolutional layer) and its occlusion map (model-agnostic). Needs the extra: "
        'pip install -e ".[explain]" (Captum)',
    )
    explain.set_defaults(command_handler=_run_explain)  # the command's handler, beside its parser
    explain.add_argument("run", metavar="RUN", help="a finished run folder")
    explain.add_argument("paths", metavar="IMAGE_OR_FOLDER", nargs="+", help="image files or folders of images")
    explain.add_argument("--out", required=True, metavar="DIR", help="folder for the heatmaps and explanations.json")
    _add_device_flag(explain)
    doctor = commands.add_parser(
        "doctor",
        help="check a dataset before training: duplicates, shortcuts, sources, label errors",
        formatter_class=_Formatter,
        epilog=DOCTOR_EXAMPLES,
        description="Counts and imbalance, unusable files, sizes; near-duplicate photos (perceptual hashes) across "
        "classes and across the train/test split a run would use; a shortcut probe (how well trivial image "
        "statistics predict the class, cross-validated, with its interval); with --groups, sources that "
        "hold one class only; likely label errors (cleanlab on out-of-fold probabilities). Needs the "
        'extra: pip install -e ".[doctor]"',
    )
    doctor.set_defaults(command_handler=_run_doctor)  # the command's handler, beside its parser
    doctor.add_argument("data", metavar="DATA", help="folder with train/ and test/ class folders, or class folders")
    doctor.add_argument(
        "--out", metavar="DIR", help="write DIR/doctor.html (thumbnails of each finding) and doctor.json"
    )
    doctor.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    doctor.add_argument(
        "--label-model",
        default="auto",
        choices=["auto", "probe", "scratch", "none"],
        help="out-of-fold model for label errors: the pretrained probe (seconds; auto when installed), "
        "a from-scratch recipe trained per fold (minutes), or none",
    )
    doctor.add_argument(
        "--duplicate-distance",
        type=_nonnegative_int,
        default=6,
        metavar="BITS",
        help="pHash bits (of 64) two photos may differ by and still count as near-duplicates",
    )
    doctor.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    doctor.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_options(doctor)
    _add_device_flag(doctor)
    export = commands.add_parser(
        "export",
        help="write a run's model as one ONNX file, checked against the run",
        formatter_class=_Formatter,
        epilog=EXPORT_EXAMPLES,
        description="One self-contained ONNX file: uint8 RGB images N x 3 x S x S (S: the run's input size; resize "
        "and centre-crop outside) in, class probabilities out; normalisation, ensemble members, TTA and "
        "the probe head inside; classes, size and the run's test accuracy in its metadata. Needs the "
        'extra: pip install -e ".[export]"',
    )
    export.set_defaults(command_handler=_run_export)  # the command's handler, beside its parser
    export.add_argument("run", metavar="RUN", help="a finished run folder")
    export.add_argument("--format", default="onnx", choices=["onnx"], help="the file format")
    export.add_argument("--out", metavar="FILE", help="the file to write (default: RUN/model.onnx)")
    app = commands.add_parser(
        "app",
        help="a local web app: teach, test, runs",
        formatter_class=_Formatter,
        description="Teach a classifier from photos dropped in a browser, test it on new ones, open runs, download "
        "their ONNX export. Serves 127.0.0.1 (this machine only) unless --host says otherwise, and "
        "prints a link with a token made for this launch: only a browser that opened that link can use "
        'the app, and no other web site can drive it. Needs the extra: pip install -e ".[app]"',
    )
    app.set_defaults(command_handler=_run_app)  # the command's handler, beside its parser
    app.add_argument("--runs", default="runs", metavar="DIR", help="the folder of run folders it lists and writes")
    app.add_argument("--port", type=_int_at_least(1), default=7860, help="the port it listens on")
    app.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address it listens on; 0.0.0.0 makes it reachable from other machines (the token still "
        "guards it, but the traffic is not encrypted: prefer an SSH tunnel)",
    )
    app.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the browser will use to reach it (behind a proxy, say); repeatable",
    )
    app.add_argument(
        "--no-token",
        action="store_true",
        help="no launch token: any program or user on this machine can use the app (Host and Origin checks stay)",
    )
    _add_gan_commands(commands)
    _add_experiment_commands(commands)
    _add_tune_command(commands)
    recipes = commands.add_parser(
        "recipes",
        help="list recipes, models, augmentations, GAN presets and conditions",
        formatter_class=_Formatter,
        description="Every named preset pasture has, with what it is.",
    )
    recipes.set_defaults(command_handler=_run_recipes)  # the command's handler, beside its parser
    return parser


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


def _add_experiment_commands(commands) -> None:
    experiment = commands.add_parser(
        "experiment",
        help="compare conditions over seeds/folds, paired, with a report",
        epilog=EXPERIMENT_EXAMPLES,
        formatter_class=_Formatter,
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
        type=_positive_int,
        default=5,
        help="seeds (train/test layout) or repeats of the k-fold split (class folders)",
    )
    experiment.add_argument(
        "--folds",
        type=_folds,
        metavar="K|groups",
        help="k of the stratified k-fold, or groups: leave each group (photo source, see --groups) "
        "out in turn (DATA/<class>/ only)",
    )
    experiment.add_argument(
        "--groups",
        metavar="FILE.csv|subfolders",
        help="the group (photo source) of each image: a CSV with columns file (relative to DATA) "
        "and --group-column, or subfolders for DATA/<class>/<group>/*",
    )
    experiment.add_argument("--group-column", default="group", metavar="COLUMN", help="the --groups table's column")
    experiment.add_argument(
        "--recipe",
        type=_recipe_choice,
        metavar="RECIPE|FILE.json",
        help="recipe of written conditions that name none (e.g. aug:augment=strong)",
    )
    experiment.add_argument("--model", help="model of written conditions that name none")
    experiment.add_argument(
        "--classes", type=_class_list, help="class order, e.g. horse,cow (alphabetical when not given)"
    )
    experiment.add_argument(
        "--min-image-size",
        type=_positive_int,
        default=DEFAULT_MIN_IMAGE_SIZE,
        help="pixels: smaller images are skipped",
    )
    experiment.add_argument("--jobs", type=_jobs_choice, default="auto", metavar="N|auto", help=JOBS_HELP)
    _add_engine_flags(experiment)
    experiment.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (runs, stored runs, GANs to train or reuse) and the time it should take "
        "on this machine, then stop: nothing is trained or written",
    )
    experiment.add_argument(
        "--eval-every",
        type=_positive_int,
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
    _add_device_flag(experiment)
    experiment.add_argument("--quiet", action="store_true", help="no plan and no progress bar")

    demo = commands.add_parser(
        "demo",
        help="the whole study on images pasture draws itself",
        formatter_class=_Formatter,
        description="Writes a procedural two-class image set (stripes vs spots) and runs "
        "baseline, +transforms and +GAN on it; prints where the report is.",
    )
    demo.set_defaults(command_handler=_run_demo)  # the command's handler, beside its parser
    demo.add_argument("--out", default="pasture-demo", metavar="DIR", help="folder for the drawn images and the study")
    demo.add_argument("--seeds", type=_positive_int, default=3, help="runs per condition")
    demo.add_argument("--quick", action="store_true", help="tiny settings: seconds instead of minutes")
    demo.add_argument("--jobs", type=_jobs_choice, default="auto", metavar="N|auto", help=JOBS_HELP)
    _add_device_flag(demo)
    demo.add_argument("--quiet", action="store_true", help="no plan and no progress bar")


def _add_engine_flags(parser) -> None:
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this machine (--jobs processes); ray: every run a Ray task, on a Ray instance "
        "started for the study or on the cluster at --ray-address (needs the ray extra)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="auto|HOST:PORT",
        help="join this Ray cluster (auto: the one started on this machine with `ray start --head`)",
    )
    parser.add_argument(
        "--threads-per-run",
        type=_positive_int,
        metavar="N",
        help="with --engine ray: CPUs (and torch threads) per run (default 1)",
    )


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
        formatter_class=_Formatter,
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
        type=_recipe_choice,
        metavar="RECIPE|FILE.json",
        help="where the search starts, and what the best is compared with (default: scratch; the "
        "probe's one setting, its head's C, is already chosen by cross-validation)",
    )
    tune.add_argument("--trials", type=_positive_int, default=20, help="candidates to try")
    tune.add_argument("--folds", type=_int_at_least(2), default=3, help="K of the K-fold split of the training split")
    tune.add_argument("--seeds", type=_positive_int, default=2, help="repeats of that split, each with its own seed")
    tune.add_argument(
        "--batch",
        type=_positive_int,
        metavar="B",
        help="candidates proposed at once (default: enough to keep the engine busy)",
    )
    tune.add_argument("--seed", type=int, default=0, help="the search's seed")
    tune.add_argument("--classes", type=_class_list, help="class order, e.g. horse,cow (alphabetical when not given)")
    tune.add_argument(
        "--test-fraction",
        type=_fraction,
        default=DEFAULT_TEST_FRACTION,
        help="DATA/<class>/ only: the split `train` makes, whose test part the search never sees",
    )
    tune.add_argument("--split-seed", type=int, default=0, help="seed of the folds the trials are scored on")
    tune.add_argument(
        "--min-image-size",
        type=_positive_int,
        default=DEFAULT_MIN_IMAGE_SIZE,
        help="pixels: smaller images are skipped",
    )
    tune.add_argument("--jobs", type=_jobs_choice, default="auto", metavar="N|auto", help=JOBS_HELP)
    _add_engine_flags(tune)
    tune.add_argument("--force", action="store_true", help="start again: remove pasture's own files from DIR first")
    _add_device_flag(tune)
    tune.add_argument("--quiet", action="store_true", help="no plan and no progress bar")


def _run_tune(args) -> int:
    from pasture import api
    from pasture.study.tune import tune_text

    result = api.tune(
        args.data,
        args.out,
        space=args.space,
        recipe=args.recipe,
        trials=args.trials,
        folds=args.folds,
        seeds=args.seeds,
        batch=args.batch,
        seed=args.seed,
        classes=args.classes,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        min_image_size=args.min_image_size,
        engine=args.engine,
        jobs=args.jobs,
        ray_address=args.ray_address,
        threads_per_run=args.threads_per_run,
        device=args.device,
        quiet=args.quiet,
        force=args.force,
        command=args.command_line,
    )
    print(tune_text(result), end="")
    return 0


def _print_experiment(results: dict, out: str) -> None:
    for row in results["conditions"]:
        low, high = row["test"]["ci95"]
        print(
            f"{row['condition']:>20}: {row['test']['mean']:.1%} +/- {row['test']['std']:.1%} "
            f"(95% CI {low:.1%}-{high:.1%}, {row['runs']} runs x {row['n_per_run']} test images)"
        )
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
            f"[{comparison['ci95'][0]:+.1%}, {comparison['ci95'][1]:+.1%}], p={comparison['p_value']:.3f}: "
            f"{comparison['verdict']}"
        )
    print(f"report: {Path(out) / 'report.html'} (and report.md, results.csv, results.json)")


def _run_experiment(args) -> int:
    from pasture import api

    paper = len(args.target) == 2 and args.target[0] == "paper"
    if len(args.target) != 1 and not paper:
        raise UserError("experiment: give DATA, or `paper DATA`")
    results = api.experiment(
        args.target[-1],
        args.out,
        conditions=args.conditions,
        seeds=args.seeds,
        folds=args.folds,
        groups=args.groups,
        group_column=args.group_column,
        recipe=args.recipe,
        model=args.model,
        classes=args.classes,
        min_image_size=args.min_image_size,
        jobs=args.jobs,
        eval_every=args.eval_every,
        quiet=args.quiet,
        paper=paper,
        force=args.force,
        device=args.device,
        command=args.command_line,
        dry_run=args.dry_run,
        engine=args.engine,
        ray_address=args.ray_address,
        threads_per_run=args.threads_per_run,
    )
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


GAN_EXAMPLES = """examples:
  pasture gan train photos/ --out gans/paper --preset paper      # the report's DCGAN, one per class
  pasture gan train photos/ --out gans/cond                      # conditional + DiffAugment + EMA
  pasture gan sample gans/cond --per-class 500 --out synth/cond
  pasture gan sample gans/cond --per-class 200 --out synth/kept --filter-run runs/default --min-confidence 0.8
  pasture gan score gans/cond photos/ --json                     # GAN-test, GAN-train, memorisation
  pasture train photos/ --out runs/with-gan --synthetic synth/cond --synthetic-ratio 0.3
"""


def command_parsers(parser: argparse.ArgumentParser | None = None, name: str = "pasture"):
    """(full command, its parser) for pasture and every subcommand, nested ones too, in --help order:
    what the docs' CLI reference is generated from, so it cannot drift from --help."""
    parser = parser or build_parser()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub_parser in action.choices.items():
                yield from command_parsers(sub_parser, f"{name} {sub_name}")


def _add_settings_flags(parser: argparse.ArgumentParser, settings_type, preset_word: str) -> None:
    """One flag per field of a settings dataclass (Recipe, GanPreset), built from the field's type and
    its help metadata, so a new field needs no edit here. A flag left out keeps the preset's value."""
    group = parser.add_argument_group(
        f"{preset_word} fields",
        f"each flag overrides that field of the {preset_word}; left out, the {preset_word}'s value",
    )
    for setting in option_fields(settings_type):
        flag = "--" + setting.name.replace("_", "-")
        meta = setting.metadata
        help_text = meta.get("help", "")
        if setting.type == "bool":
            group.add_argument(
                flag,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        if setting.type == "int":
            kind = _int_at_least(meta["minimum"]) if meta.get("minimum") is not None else int
        elif setting.type == "float":
            kind = float
        else:
            kind = str
        group.add_argument(
            flag,
            dest=setting.name,
            type=kind,
            choices=meta.get("choices"),
            default=argparse.SUPPRESS,
            metavar=setting.name.upper() if meta.get("choices") is None else None,
            help=help_text,
        )


def _settings_overrides(args, settings_type) -> dict:
    """The settings fields given on the command line (flags left out keep the preset's values)."""
    return {f.name: getattr(args, f.name) for f in option_fields(settings_type) if hasattr(args, f.name)}


def _data_options(args) -> DataOptions:
    return DataOptions(
        classes=args.classes,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        min_image_size=args.min_image_size,
        strict=args.strict,
        groups=args.groups,
        group_column=args.group_column,
        split_by_group=args.split_by_group,
    )


def _add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto (a CUDA GPU, else Apple MPS, else the CPU), cpu, cuda, cuda:N or mps",
    )


def _add_run_folder_flags(parser: argparse.ArgumentParser, folder: str) -> None:
    parser.add_argument("--resume", action="store_true", help=f"continue {folder} from its last checkpoint")
    parser.add_argument(
        "--force", action="store_true", help=f"overwrite a different run already in {folder} (only pasture's own files)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", type=_class_list, help="class order, e.g. horse,cow (alphabetical when not given)")
    parser.add_argument(
        "--test-fraction",
        type=_fraction,
        default=DEFAULT_TEST_FRACTION,
        help="share of each class held out for testing (DATA/<class>/ layout only)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of that split; fixed apart from --seed so seeds share one test set",
    )
    parser.add_argument(
        "--min-image-size",
        type=_positive_int,
        default=DEFAULT_MIN_IMAGE_SIZE,
        help="images with a shorter side below this many px are unusable",
    )
    parser.add_argument("--strict", action="store_true", help="unusable files are an error instead of a warning")
    parser.add_argument(
        "--groups",
        metavar="FILE.csv|subfolders",
        help="the group (photo source) of each image: a CSV with columns file (relative to DATA) and "
        "--group-column, or subfolders for DATA/<class>/<group>/*",
    )
    parser.add_argument("--group-column", default="group", metavar="COLUMN", help="the --groups table's column")
    parser.add_argument(
        "--split-by-group",
        action="store_true",
        help="hold out whole groups for the test split (DATA/<class>/ only): the test accuracy is then "
        "the accuracy on sources the model never saw",
    )


def _add_gan_commands(commands) -> None:
    gan = commands.add_parser(
        "gan",
        help="train GANs, sample synthetic images, score them",
        epilog=GAN_EXAMPLES,
        formatter_class=_Formatter,
        description="GANs that make training images, trained on the training split only.",
    )
    gan.set_defaults(command_handler=_run_gan)  # the command's handler, beside its parser
    gan_commands = gan.add_subparsers(dest="gan_command", metavar="GAN_COMMAND")
    train = gan_commands.add_parser(
        "train",
        usage="pasture gan train DATA --out GAN_DIR [--preset PRESET] [preset fields] [options]",
        help="train a GAN on DATA's training split",
        epilog=GAN_EXAMPLES,
        formatter_class=_Formatter,
        description="Writes GAN_DIR/config.json, checkpoint.pt, gan_log.jsonl, gan_losses.png, samples_*.png.",
    )
    train.add_argument("data", metavar="DATA", help="class folders, or a train/test layout (its train split)")
    train.add_argument("--out", required=True, metavar="GAN_DIR", help="GAN folder to write")
    train.add_argument(
        "--preset",
        default="default",
        choices=sorted(GAN_PRESETS),
        metavar="PRESET",
        help="named GAN preset: " + "; ".join(f"{name}: {preset.description}" for name, preset in GAN_PRESETS.items()),
    )
    _add_settings_flags(train, GanPreset, "preset")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation, sampling and augmentation")
    _add_data_options(train)
    _add_device_flag(train)
    _add_run_folder_flags(train, "GAN_DIR")

    sample = gan_commands.add_parser(
        "sample",
        help="write synthetic images in the class-folder layout",
        epilog=GAN_EXAMPLES,
        formatter_class=_Formatter,
        description="Writes SYNTH_DIR/<class>/*.png and SYNTH_DIR/synth.json.",
    )
    sample.add_argument("gan_dir", metavar="GAN_DIR", help="a GAN folder (pasture gan train --out)")
    sample.add_argument("--per-class", type=_positive_int, default=500, help="images per class")
    sample.add_argument("--out", required=True, metavar="SYNTH_DIR", help="folder for SYNTH_DIR/<class>/*.png")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent draws")
    sample.add_argument("--truncation", type=_positive_float, help="resample latent values beyond this magnitude")
    sample.add_argument("--filter-run", metavar="RUN", help="keep samples this classifier assigns to their class")
    sample.add_argument("--min-confidence", type=float, default=0.5, help="with --filter-run")
    sample.add_argument("--force", action="store_true", help="replace an existing synthetic set")
    _add_device_flag(sample)

    score = gan_commands.add_parser(
        "score",
        help="GAN-test, GAN-train and memorisation",
        epilog=GAN_EXAMPLES,
        formatter_class=_Formatter,
        description="How useful are the samples? Writes SOURCE/score.json.",
    )
    score.add_argument("source", metavar="GAN_DIR|SYNTH_DIR", help="a GAN folder, or sampled images")
    score.add_argument("data", metavar="DATA", help="the real data (train/test layout or class folders)")
    score.add_argument("--run", metavar="RUN", help="classifier trained on real images, for GAN-test")
    score.add_argument("--per-class", type=_positive_int, help="samples per class when SOURCE is a GAN")
    score.add_argument("--seed", type=int, default=0, help="seed of the samples and of the scoring runs")
    score.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    _add_device_flag(score)


def _run_gan(args) -> int:
    from pasture import api

    if args.gan_command == "train":
        summary = api.gan_train(
            args.data,
            args.out,
            preset=args.preset,
            overrides=_settings_overrides(args, GanPreset),
            data_options=_data_options(args),
            seed=args.seed,
            resume=args.resume,
            force=args.force,
            quiet=args.quiet,
            device=args.device,
            command=args.command_line,
        )
        print(f"GAN written to {args.out} ({summary['units']} unit(s), {summary['seconds']:.0f} s)")
        for unit, final in summary["final"].items():
            print(
                f"  unit {unit}: D loss {final['loss_d']:.3f}, G loss {final['loss_g']:.3f}, "
                f"D(x) {final['d_real']:.2f}, D(G(z)) {final['d_fake']:.2f}"
            )
        return 0
    if args.gan_command == "sample":
        info = api.gan_sample(
            args.gan_dir,
            args.out,
            per_class=args.per_class,
            seed=args.seed,
            truncation=args.truncation,
            filter_run=args.filter_run,
            min_confidence=args.min_confidence,
            force=args.force,
            device=args.device,
        )
        counts = ", ".join(f"{name}: {count}" for name, count in info["counts"].items())
        print(f"synthetic set written to {args.out} ({counts})")
        return 0
    if args.gan_command == "score":
        score = api.gan_score(
            args.source, args.data, run=args.run, per_class=args.per_class, seed=args.seed, device=args.device
        )
        if args.json:
            print(json.dumps(score))
            return 0
        for key, label in (
            ("gan_test", "GAN-test (real-trained classifier on samples)"),
            ("gan_train", "GAN-train (sample-trained classifier on real test)"),
            ("real_train_reference", "reference (real-trained classifier on real test)"),
        ):
            row = score[key]
            print(_accuracy_line(f"{label}: ", row["accuracy"], row["ci95"], row["n"]))
        memo = score["memorisation"]
        print(
            f"near-copies of training images: {memo['near_copy_fraction']:.1%} "
            f"(95% CI {memo['near_copy_ci95'][0]:.1%}-{memo['near_copy_ci95'][1]:.1%}, n={memo['n']})"
        )
        return 0
    raise UserError("gan: give a command: train, sample or score (see pasture gan --help)")


def _accuracy_line(label: str, accuracy: float, ci95: list[float], n: int) -> str:
    return f"{label}{accuracy:.1%}  (95% CI {ci95[0]:.1%}-{ci95[1]:.1%}, n={n})"


def _run_train(args) -> int:
    from pasture import api

    metrics = api.train(
        args.data,
        args.out,
        recipe=args.recipe,
        overrides=_settings_overrides(args, Recipe),
        data_options=_data_options(args),
        synthetic=args.synthetic,
        synthetic_ratio=args.synthetic_ratio,
        seed=args.seed,
        eval_every=args.eval_every,
        resume=args.resume,
        force=args.force,
        quiet=args.quiet,
        device=args.device,
        command=args.command_line,
        teacher=args.teacher,
        unlabeled=args.unlabeled,
    )
    print(f"run written to {args.out}")
    print(_accuracy_line("train accuracy: ", metrics["train_accuracy"], metrics["train_ci95"], metrics["n_train"]))
    print(_accuracy_line("test accuracy:  ", metrics["test_accuracy"], metrics["test_ci95"], metrics["n_test"]))
    low, high = metrics["test_ci95"]
    print(
        f"(with {metrics['n_test']} test images, accuracies within about {50 * (high - low):.0f} points of "
        "each other cannot be told apart; repeat over seeds before comparing recipes)"
    )
    unseen = metrics.get("unseen")
    if unseen:
        print(
            _accuracy_line(
                f"on sources the model never saw ({', '.join(map(printable_name, unseen['groups']))}): ",
                unseen["accuracy"],
                unseen["ci95"],
                unseen["n"],
            )
        )
        if unseen.get("gap_beyond_intervals"):
            seen = unseen["seen"]
            print(
                f"warning: on sources it never saw the model scores {unseen['accuracy']:.0%}, below the interval of "
                f"its score on test photos from sources it trained on ({seen['accuracy']:.0%}, 95% CI "
                f"{seen['ci95'][0]:.0%}-{seen['ci95'][1]:.0%}, n={seen['n']}): it learned the photo sources as well "
                "as the classes",
                file=sys.stderr,
            )
    return 0


def _run_evaluate(args) -> int:
    from pasture import api

    report = api.evaluate(
        args.run,
        args.data,
        min_image_size=args.min_image_size,
        strict=args.strict,
        groups=args.groups,
        group_column=args.group_column,
        device=args.device,
        out=args.out,
    )
    if args.json:
        keys = ("accuracy", "ci95", "n", "per_class", "confusion", "classes", "per_group", "top_losses")
        print(json.dumps({key: report[key] for key in keys if key in report}))
        return 0
    print(_accuracy_line("accuracy: ", report["accuracy"], report["ci95"], report["n"]))
    for name, row in report["per_class"].items():
        print(_accuracy_line(f"  {name}: ", row["accuracy"], row["ci95"], row["n"]))
    if "per_group" in report:
        print("per group (photo source):")
        for name, row in report["per_group"].items():
            classes = ", ".join(f"{cls} {cell['n']}" for cls, cell in row["per_class"].items())
            print(_accuracy_line(f"  {printable_name(name)} ({classes}): ", row["accuracy"], row["ci95"], row["n"]))
    width = max(len(name) for name in report["classes"])
    print("confusion (rows: true, columns: predicted)")
    print(" " * (width + 2) + " ".join(f"{name:>{width}}" for name in report["classes"]))
    for name, row in zip(report["classes"], report["confusion"]):
        print(f"  {name:>{width}}" + " ".join(f"{count:>{width}}" for count in row))
    if args.out is not None:
        print(f"top losses: {Path(args.out) / 'top_losses.png'}")
    return 0


def _run_predict(args) -> int:
    if args.run.endswith(".onnx"):  # ONNX Runtime alone: torch is never imported
        from pasture.classify.onnx_runner import predict_onnx

        rows = predict_onnx(args.run, args.paths, csv=args.csv, quiet=args.quiet)
    else:
        from pasture import api

        rows = api.predict(args.run, args.paths, device=args.device, csv=args.csv, quiet=args.quiet)
    if args.csv is not None:
        print(
            f"{rows['images']} images: {rows['predicted']} predicted, {rows['skipped']} skipped (reason in the "
            f"CSV) -> {args.csv}"
        )
        return 0
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(f"{printable_name(row['file'])}\t{row['label']}\t{row['probability']:.3f}")
    return 0


def _run_recipes(args) -> int:
    from pasture.classify.augment import AUGMENT_PRESETS
    from pasture.models import get_spec, list_models
    from pasture.study.conditions import CONDITIONS

    print("recipes (pasture train --recipe NAME; every field can be overridden with its flag):")
    for name, recipe in RECIPES.items():
        print(f"  {name:12} {recipe.description}{' [default]' if name == DEFAULT_RECIPE else ''}")
        if recipe.pretrained == "probe":
            c = "chosen by cross-validation" if recipe.head_c == 0 else recipe.head_c
            print(f"  {'':12} model {recipe.model}, {recipe.image_size} px, logistic head solved to convergence, C {c}")
        else:
            print(
                f"  {'':12} model {recipe.model}, {recipe.image_size} px, augment {recipe.augment}, "
                f"{recipe.optimizer} lr {recipe.lr}, batch {recipe.batch_size}, {recipe.epochs} epochs"
            )
    for old, new in RECIPE_ALIASES.items():
        print(f"  {old:12} old name of {new}, accepted until pasture 0.3")
    print("models:")
    for name in list_models():
        print(f"  {name:12} {get_spec(name).description}")
    print("augmentation:")
    for name, preset in AUGMENT_PRESETS.items():
        print(f"  {name:12} {preset.description}")
    print("GAN presets (pasture gan train --preset NAME):")
    for name, preset in GAN_PRESETS.items():
        print(f"  {name:12} {preset.description}")
    print("experiment conditions (pasture experiment --conditions NAME ...):")
    for name, condition in CONDITIONS.items():
        print(f"  {name:17} {condition.description}")
    return 0


def _run_explain(args) -> int:
    from pasture import api

    rows = api.explain(args.run, args.paths, args.out, device=args.device)
    for row in rows:
        print(
            f"{printable_name(row['file'])}\t{row['label']}\t{row['probability']:.3f}\t{Path(args.out) / row['heatmap']}"
        )
    return 0


def _run_doctor(args) -> int:
    from pasture import api
    from pasture.doctor.report import text_report

    report = api.doctor(
        args.data,
        args.out,
        label_model=args.label_model,
        duplicate_distance=args.duplicate_distance,
        seed=args.seed,
        data_options=_data_options(args),
        device=args.device,
        quiet=args.quiet or args.json,
    )
    if args.json:
        print(json.dumps(report))
        return 0
    print(text_report(report))
    if args.out is not None:
        print(f"report: {Path(args.out) / 'doctor.html'}")
    return 0


def _run_export(args) -> int:
    from pasture import api

    info = api.export(args.run, args.out, format=args.format)
    print(
        f"{info['file']}: {info['bytes'] / 1e6:.2f} MB, ONNX opset {info['opset']}; max |p_torch - p_onnxruntime| = "
        f"{info['parity_max_abs']:.1e} on {info['checked_on']}"
    )
    print(f"input: {info['metadata']['input']}; classes: {', '.join(json.loads(info['metadata']['classes']))}")
    return 0


def _run_app(args) -> int:
    from pasture.core.extras import require_extra

    require_extra("app", "pasture app", {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"})
    from pasture.app.server import serve

    serve(
        args.runs,
        host=args.host,
        port=args.port,
        token=not args.no_token,
        allow_hosts=tuple(args.allow_host),
        say=lambda line: print(line, flush=True),
        warn=lambda message: print(f"warning: {message}", file=sys.stderr, flush=True),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["pasture", *argv]  # recorded in config.json and reports: what was asked, exactly
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.command_handler(args)
    except WriteFailed as error:
        print(f"pasture: error: {error}; {_after_write_failure(args)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except UserError as error:
        print(f"pasture: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Interrupted as stopped:
        print(f"pasture: {stopped}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("pasture: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        if error.errno not in MACHINE_ERRNOS:
            return _bug()
        # Disk full, read-only, permissions where no write site said it itself: the machine's state.
        where = printable_name(_user_path(error.filename)) if error.filename is not None else "pasture"
        print(f"pasture: error: {where}: {error.strerror or error}; {_after_write_failure(args)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception:
        return _bug()


def _bug() -> int:
    """A bug in pasture: its traceback, and one line that says so."""
    traceback.print_exc()
    print(
        "pasture: this is a bug in pasture, not a problem with what you asked; please report it with the lines above",
        file=sys.stderr,
    )
    return EXIT_BUG


def _user_path(filename) -> str:
    """The user's file for a temporary one of an atomic write (".model.onnx.a1b2c3d4.tmp" -> "model.onnx")."""
    path = Path(str(filename))
    temporary = TEMP_NAME.match(path.name)
    return str(path.with_name(temporary.group(1))) if temporary else str(path)


def _after_write_failure(args) -> str:
    """What to do after a failed write, and only what is true for this command."""
    if args.command == "train" or (args.command == "gan" and getattr(args, "gan_command", None) == "train"):
        return "free some space or fix the permission, then run the same command with --resume (the last checkpoint is kept)"
    if args.command in ("experiment", "tune", "demo"):
        return "free some space or fix the permission, then run the same command again (finished runs are kept)"
    return "free some space or fix the permission, then run the same command again"


if __name__ == "__main__":
    sys.exit(main())
