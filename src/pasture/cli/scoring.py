"""Commands that score photos with a run: evaluate (accuracy with its interval, calibration, familiarity,
photos of none of the classes) and predict (labels, streamed to CSV, on a Ray cluster, or by an export)."""

from __future__ import annotations

import json
from pathlib import Path

from pasture.cli.options import HelpFormatter, accuracy_line, add_device_flag, add_group_flags, positive_int
from pasture.core.defaults import DEFAULT_MIN_IMAGE_SIZE
from pasture.core.paths import printable_name

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
    from pasture.export.onnx_runner import EXPORTED_SUFFIXES, predict_onnx, predict_probe_run

    if args.run.endswith(EXPORTED_SUFFIXES):  # an exported file, its runtime alone: torch is never imported
        rows = predict_onnx(args.run, args.paths, csv=args.csv, quiet=args.quiet, unknown=args.unknown)
    elif args.engine == "ray":
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
    else:  # a finished probe run by ONNX Runtime and numpy (classify.probe_file): torch is never imported
        fast = predict_probe_run(args.run, args.paths, args.csv, args.quiet, args.unknown, args.device)
        if fast is not None:
            rows = fast
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


def add_evaluate(commands) -> None:
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


def add_predict(commands) -> None:
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
