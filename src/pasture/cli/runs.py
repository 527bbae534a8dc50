"""Commands of one run: train, evaluate, predict, explain, export, and recipes (what train can use)."""

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
    add_group_flags,
    add_run_folder_flags,
    add_settings_flags,
    data_options,
    fraction,
    positive_int,
    recipe_choice,
    settings_overrides,
)
from pasture.core.defaults import (
    DEFAULT_MIN_IMAGE_SIZE,
    DEFAULT_RECIPE,
)
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


EVALUATE_EXAMPLES = """examples:
  pasture evaluate runs/default new_photos/           # new_photos/<class>/*.jpg
  pasture evaluate runs/default photos/ --groups photos/MANIFEST.csv --group-column source   # per source
  pasture evaluate runs/default by_source/ --groups subfolders      # by_source/<class>/<source>/*.jpg
  pasture evaluate runs/default field/ --out field-check/   # + top_losses.png: most confidently wrong photos
  pasture evaluate runs/default photos/ --json        # photos/test/<class>/* when photos/ has train/ and test/
"""


PREDICT_EXAMPLES = """examples:
  pasture predict runs/default field/IMG_0042.jpg
  pasture predict runs/default field/ --json          # every image under field/
  pasture predict cowhorse.onnx field/                # an exported model, with ONNX Runtime alone
  pasture predict runs/default camera_trap/ --csv labels.csv   # thousands of images, streamed
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
        others=args.others,
    )
    if args.json:
        keys = ["accuracy", "ci95", "n", "per_class", "confusion", "classes", "per_group", "top_losses"]
        keys += ["calibration", "familiarity", "others"]
        print(json.dumps({key: report[key] for key in keys if key in report}))
        return 0
    print(accuracy_line("accuracy: ", report["accuracy"], report["ci95"], report["n"]))
    for name, row in report["per_class"].items():
        print(accuracy_line(f"  {name}: ", row["accuracy"], row["ci95"], row["n"]))
    if "per_group" in report:
        print("per group (photo source):")
        for name, row in report["per_group"].items():
            classes = ", ".join(f"{cls} {cell['n']}" for cls, cell in row["per_class"].items())
            print(accuracy_line(f"  {printable_name(name)} ({classes}): ", row["accuracy"], row["ci95"], row["n"]))
    width = max(len(name) for name in report["classes"])
    print("confusion (rows: true, columns: predicted)")
    print(" " * (width + 2) + " ".join(f"{name:>{width}}" for name in report["classes"]))
    for name, row in zip(report["classes"], report["confusion"]):
        print(f"  {name:>{width}}" + " ".join(f"{count:>{width}}" for count in row))
    _print_trust(report)
    if args.out is not None:
        print(
            f"top losses: {Path(args.out) / 'top_losses.png'}; reliability diagram: {Path(args.out) / 'reliability.png'}"
        )
    return 0


def _share(cell: dict) -> str:
    if not cell["n"]:
        return "- (n=0)"
    return f"{cell['share']:.1%} (95% CI {cell['ci95'][0]:.1%}-{cell['ci95'][1]:.1%}, n={cell['n']})"


def _print_trust(report: dict) -> None:
    """evaluate's calibration, familiarity and --others lines."""
    calibrated, coverage = report["calibration"], report["calibration"]["coverage"]
    print(
        f"confidence: expected calibration error {calibrated['ece']:.1%} (n={calibrated['n']}); keeping the "
        f"{coverage['kept']:.0%} most confident photos, accuracy is {_share(coverage)}"
    )
    familiar = report.get("familiarity")
    if familiar:
        print(
            f"unfamiliar photos (unlike every training photo): {_share(familiar['flagged'])}; accuracy on the "
            f"familiar {_share(familiar['accuracy_familiar'])}, on the unfamiliar {_share(familiar['accuracy_unfamiliar'])}"
        )
        for name, cell in {**familiar["flagged_per_class"], **familiar.get("flagged_per_group", {})}.items():
            print(f"  flagged in {printable_name(name)}: {_share(cell)}")
    others = report.get("others")
    if others:
        print(
            f"photos of none of the classes ({printable_name(others['folder'])}): caught {_share(others['caught'])}; "
            f"AUROC against DATA's photos {others['auroc_familiarity']:.3f} (the head's top probability: "
            f"{others['auroc_max_probability']:.3f})"
        )


def _run_predict(args) -> int:
    from pasture.export.onnx_runner import EXPORTED_SUFFIXES

    if args.run.endswith(EXPORTED_SUFFIXES):  # an exported file, its runtime alone: torch is never imported
        from pasture.export.onnx_runner import predict_onnx

        rows = predict_onnx(args.run, args.paths, csv=args.csv, quiet=args.quiet, unknown=args.unknown)
    else:
        if args.engine == "ray":
            from pasture import api

            rows = api.predict(
                args.run,
                args.paths,
                csv=args.csv,
                quiet=args.quiet,
                unknown=args.unknown,
                engine="ray",
                ray_address=args.ray_address,
            )
        else:
            # api.predict's own two steps, without importing the whole API (studies, GANs, the doctor):
            # about 2 s of a 10 s predict on 100 photos went to imports it never uses (issue 42)
            from pasture.classify.trained import LoadedRun, predict_files
            from pasture.core.device import resolve_device
            from pasture.core.imagefile import image_files_in

            model = LoadedRun(args.run, resolve_device(args.device))
            rows = predict_files(model, image_files_in(args.paths), args.csv, args.quiet, args.unknown)
    if isinstance(rows, dict):  # with --csv: the summary of what was written
        print(
            f"{rows['images']} images: {rows['predicted']} predicted, {rows['skipped']} skipped (reason in the "
            f"CSV) -> {args.csv}"
        )
        return 0
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        familiar = f"\tfamiliarity {row['familiarity']:.2f}" if "familiarity" in row else ""
        unfamiliar = "" if row.get("familiar", True) else " (unlike every photo it was taught on)"
        print(f"{printable_name(row['file'])}\t{row['label']}\t{row['probability']:.3f}{familiar}{unfamiliar}")
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


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy of a trained run on labelled images",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=HelpFormatter,
        description="Accuracy with its 95% interval and n, per class, and the confusion matrix. Class "
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
        type=positive_int,
        default=DEFAULT_MIN_IMAGE_SIZE,
        help="pixels: smaller images are skipped",
    )
    evaluate.add_argument("--strict", action="store_true", help="unusable files are an error")
    add_group_flags(evaluate, "adds accuracy per group")
    evaluate.add_argument(
        "--others",
        metavar="DIR",
        help="photos of none of the classes (any layout): the share the run flags as unfamiliar, and the AUROC",
    )
    add_device_flag(evaluate)


def _add_predict(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="label new images with a trained run",
        epilog=PREDICT_EXAMPLES,
        formatter_class=HelpFormatter,
        description="Label and probability for each image.",
    )
    predict.set_defaults(command_handler=_run_predict)  # the command's handler, beside its parser
    predict.add_argument(
        "run", metavar="RUN", help="a finished run folder, or FILE.onnx or model.xml (OpenVINO) from `pasture export`"
    )
    predict.add_argument("paths", metavar="IMAGE_OR_FOLDER", nargs="+", help="image files or folders of images")
    predict.add_argument("--json", action="store_true", help="print JSON (a list of objects)")
    predict.add_argument(
        "--csv",
        metavar="OUT.csv",
        help="stream any number of images to this CSV (bounded memory, a progress bar): one row per "
        "image with its label and a probability per class, or the reason it was skipped",
    )
    predict.add_argument(
        "--unknown",
        action="store_true",
        help="label a photo unlike every training photo 'unknown' (its best class stays in best_class); "
        "runs of the default probe say how familiar each photo is either way",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar (with --csv)")
    predict.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: score the photos in shards on a Ray cluster (with --csv; resumable after a kill: run the same command)",
    )
    predict.add_argument(
        "--ray-address", metavar="HOST:PORT", help="with --engine ray: a Ray head (default: Ray on this machine)"
    )
    add_device_flag(predict)


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
    for add in (_add_train, _add_evaluate, _add_predict, _add_explain, _add_export, _add_recipes):
        add(commands)
