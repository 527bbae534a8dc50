"""Commands about a data set before training: doctor."""

from __future__ import annotations

import json
from pathlib import Path

from pasture.cli.options import HelpFormatter, add_data_options, add_device_flag, data_options, nonnegative_int

DOCTOR_EXAMPLES = """examples:
  pasture doctor photos/                              # before the first pasture train photos/
  pasture doctor photos/ --out checkup/               # checkup/doctor.html with thumbnails
  pasture doctor photos/ --groups photos/MANIFEST.csv --group-column source   # which sources hold one class
  pasture doctor photos/ --json --label-model none    # no model, statistics only
"""


def _run_doctor(args) -> int:
    from pasture import api
    from pasture.doctor.report import text_report

    report = api.doctor(
        args.data,
        args.out,
        label_model=args.label_model,
        duplicate_distance=args.duplicate_distance,
        seed=args.seed,
        data_options=data_options(args),
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


def add_commands(commands) -> None:
    """doctor."""
    doctor = commands.add_parser(
        "doctor",
        help="check a dataset before training: duplicates, shortcuts, sources, label errors",
        formatter_class=HelpFormatter,
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
        type=nonnegative_int,
        default=6,
        metavar="BITS",
        help="pHash bits (of 64) two photos may differ by and still count as near-duplicates",
    )
    doctor.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    doctor.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_options(doctor)
    add_device_flag(doctor)
