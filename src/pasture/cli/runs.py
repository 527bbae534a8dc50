"""Commands of one run: train, explain, export, and recipes (what train can use); evaluate and predict
(cli.scoring) are added between them, in --help's order."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pasture.classify.recipes import RECIPE_ALIASES, RECIPES, Recipe
from pasture.cli.options import (
    HelpFormatter,
    accuracy_line,
    add_data_options,
    add_device_flag,
    add_run_folder_flags,
    add_settings_flags,
    data_options,
    fraction,
    positive_int,
    recipe_choice,
    settings_overrides,
)
from pasture.cli.scoring import add_evaluate, add_predict
from pasture.core.defaults import DEFAULT_RECIPE
from pasture.core.paths import printable_name
from pasture.gan.presets import GAN_PRESETS

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


EXPORT_EXAMPLES = """examples:
  pasture export runs/default                         # runs/default/model.onnx
  pasture export runs/probe --out cowhorse.onnx
  pasture export runs/probe --format onnx-int8        # runs/probe/model.int8.onnx, checked against fp32
  pasture export runs/probe --format openvino         # runs/probe/openvino/model.xml + model.bin
  pasture export runs/probe --format coreml           # runs/probe/model.mlpackage (iPhone, iPad, Mac)
  pasture predict cowhorse.onnx field/                # ONNX Runtime alone, no torch
"""


def _run_train(args) -> int:
    from pasture import api

    metrics = api.train(
        args.data,
        args.out,
        recipe=args.recipe,
        overrides=settings_overrides(args, Recipe),
        data_options=data_options(args),
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
    print(accuracy_line("train accuracy: ", metrics["train_accuracy"], metrics["train_ci95"], metrics["n_train"]))
    print(accuracy_line("test accuracy:  ", metrics["test_accuracy"], metrics["test_ci95"], metrics["n_test"]))
    low, high = metrics["test_ci95"]
    print(
        f"(with {metrics['n_test']} test images, accuracies within about {50 * (high - low):.0f} points of "
        "each other cannot be told apart; repeat over seeds before comparing recipes)"
    )
    unseen = metrics.get("unseen")
    if unseen:
        print(
            accuracy_line(
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


def _run_explain(args) -> int:
    from pasture import api

    rows = api.explain(args.run, args.paths, args.out, device=args.device)
    for row in rows:
        print(
            f"{printable_name(row['file'])}\t{row['label']}\t{row['probability']:.3f}\t{Path(args.out) / row['heatmap']}"
        )
    return 0


def _run_export(args) -> int:
    from pasture import api

    info = api.export(args.run, args.out, format=args.format)
    if info["format"] == "onnx-int8":
        low, high = info["int8_test_ci95"]
        print(
            f"{info['file']}: {info['bytes'] / 1e6:.2f} MB, int8; the fp32 model's label on "
            f"{info['agreement_with_fp32']:.1%} of {info['checked_on']}; int8 test accuracy "
            f"{info['int8_test_accuracy']:.1%} (95% CI {low:.1%}-{high:.1%}, n={info['n_checked']}; in-source: "
            "on photo sources it never saw, see pasture experiment --folds groups)"
        )
    elif info["parity_max_abs"] is None:  # Core ML off Apple systems: the spec only
        print(f"{info['file']}: {info['bytes'] / 1e6:.2f} MB, {info['opset']}; {info['checked_on']}")
    else:
        print(
            f"{info['file']}: {info['bytes'] / 1e6:.2f} MB, {info['opset']}; max |p_torch - p_{info['runtime']}| = "
            f"{info['parity_max_abs']:.1e} on {info['checked_on']}"
        )
    if info.get("familiarity_parity_max_abs") is not None:
        print(
            f"familiarity: outputs familiarity and distance (threshold {float(info['metadata']['familiarity_threshold']):.3f}); "
            f"max |distance difference| = {info['familiarity_parity_max_abs']:.1e}"
        )
    print(f"input: {info['metadata']['input']}; classes: {', '.join(json.loads(info['metadata']['classes']))}")
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
    for name, gan_preset in GAN_PRESETS.items():
        print(f"  {name:12} {gan_preset.description}")
    print("experiment conditions (pasture experiment --conditions NAME ...):")
    for name, condition in CONDITIONS.items():
        print(f"  {name:17} {condition.description}")
    return 0


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train",
        usage="pasture train DATA --out RUN [--recipe RECIPE] [recipe fields] [options]",
        help="train a classifier and write a run folder",
        epilog=TRAIN_EXAMPLES,
        formatter_class=HelpFormatter,
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
        type=recipe_choice,
        metavar="RECIPE|FILE.json",
        help=f"a named preset ({', '.join(RECIPES)}; `pasture recipes` describes each) or a recipe file (as "
        f"`pasture tune` writes). Default: {DEFAULT_RECIPE} (finetune with --pretrained finetune, scratch with "
        "a from-scratch --model)",
    )
    add_settings_flags(train, Recipe, "recipe")
    train.add_argument(
        "--eval-every",
        type=positive_int,
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
        type=fraction,
        metavar="R",
        help="expected synthetic share of each batch (default: as if added to the train folder)",
    )
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order, augmentation")
    add_data_options(train)
    add_device_flag(train)
    add_run_folder_flags(train, "RUN")


def _add_explain(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="where a run's model looked, per image",
        formatter_class=HelpFormatter,
        epilog="examples:\n  pasture explain runs/default field/ --out why/\n",
        description="For each image: the label and probability, and OUT/<n>_<name>.png with the photo, its Grad-CAM "
        "heatmap (last convolutional layer) and its occlusion map (model-agnostic). Needs the extra: "
        'pip install -e ".[explain]" (Captum)',
    )
    explain.set_defaults(command_handler=_run_explain)  # the command's handler, beside its parser
    explain.add_argument("run", metavar="RUN", help="a finished run folder")
    explain.add_argument("paths", metavar="IMAGE_OR_FOLDER", nargs="+", help="image files or folders of images")
    explain.add_argument("--out", required=True, metavar="DIR", help="folder for the heatmaps and explanations.json")
    add_device_flag(explain)


def _add_export(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write a run's model as one ONNX file, checked against the run",
        formatter_class=HelpFormatter,
        epilog=EXPORT_EXAMPLES,
        description="One self-contained ONNX file: uint8 RGB images N x 3 x S x S (S: the run's input size; resize "
        "and centre-crop outside) in, class probabilities out; normalisation, ensemble members, TTA and "
        "the probe head inside; classes, size and the run's test accuracy in its metadata. Needs the "
        'extra: pip install -e ".[export]"',
    )
    export.set_defaults(command_handler=_run_export)  # the command's handler, beside its parser
    export.add_argument("run", metavar="RUN", help="a finished run folder")
    export.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "onnx-int8", "openvino", "coreml", "tflite"],  # classify.formats (torch-free here)
        help="onnx: fp32, the run's probabilities to 1e-4; onnx-int8: about 4x smaller and faster on a CPU, "
        "calibrated on the run's training photos, written only if it gives the fp32 label on >= 99%% of its "
        "test photos; openvino: OpenVINO IR (model.xml + model.bin) for Intel CPUs, GPUs and NPUs (the openvino extra); coreml: an ML Program for iPhones and Macs (the coreml extra); tflite: LiteRT for Android, iOS and small boards (the tflite extra, in its own environment)",
    )
    export.add_argument(
        "--out",
        metavar="FILE",
        help="the file to write (default: RUN/model.onnx, RUN/model.int8.onnx, RUN/openvino/, RUN/model.mlpackage, RUN/model.tflite)",
    )


def _add_recipes(commands) -> None:
    recipes = commands.add_parser(
        "recipes",
        help="list recipes, models, augmentations, GAN presets and conditions",
        formatter_class=HelpFormatter,
        description="Every named preset pasture has, with what it is.",
    )
    recipes.set_defaults(command_handler=_run_recipes)  # the command's handler, beside its parser


def add_commands(commands) -> None:
    """train, evaluate, predict, explain, export, recipes."""
    for add in (_add_train, add_evaluate, add_predict, _add_explain, _add_export, _add_recipes):
        add(commands)
