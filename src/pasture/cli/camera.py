"""Commands for a new camera: adapt (a run fitted to its unlabeled photos) and ask (which to label first)."""

from __future__ import annotations

from pasture.cli.options import HelpFormatter, add_device_flag
from pasture.core.paths import printable_name


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items())


def _run_adapt(args) -> int:
    import sys

    from pasture import api

    result = api.adapt(
        args.run,
        args.photos,
        args.out,
        labels=args.labels,
        device=args.device,
        quiet=args.quiet,
        force=args.force,
        command=sys.argv,
    )
    print(
        f"{result['n']} new photos: estimated classes {_shares(result['shares_after'])} (the original said "
        f"{_shares(result['shares_before'])}); {result['changed']:.0%} of their labels changed"
        + (f"; {result['labelled']} labelled by you" if result["labelled"] else "")
        + (f"; {result['confident']} labelled surely by the run itself" if "confident" in result else "")
    )
    if result["kept_original"]:
        print(f"not adapted: {result['why']}; {args.run} stays as it is")
        return 1
    metrics = result["metrics"]
    low, high = metrics["test_ci95"]
    print(
        f"adapted run: {result['run']} (test accuracy on the run's own split {metrics['test_accuracy']:.1%}, 95% CI "
        f"{low:.1%}-{high:.1%}, n={metrics['n_test']}; in-source: score the new camera with `pasture evaluate`)"
    )
    return 0


def _run_ask(args) -> int:
    from pasture import api

    result = api.ask(args.run, args.photos, args.k, args.out, device=args.device)
    print(f"label these {len(result['rows'])} first (in {result['csv']}, fill in the label column):")
    for number, row in enumerate(result["rows"], start=1):
        print(f"  {number}. {printable_name(row['file'])}\tguess {row['guess']} ({row['confidence']:.2f})")
    print(
        f"contact sheet: {result['sheet']}; then: pasture adapt {args.run} {args.photos} --labels {args.out} --out NEW_RUN"
    )
    return 0


def add_commands(commands) -> None:
    """adapt, ask."""
    adapt = commands.add_parser(
        "adapt",
        help="fit a probe or fine-tuned run to a new camera's unlabeled photos (a new run)",
        formatter_class=HelpFormatter,
        description="A new run: RUN's head fitted again on its training photos and the photos in PHOTOS (any "
        "layout, labels unknown), labelled by label spreading on the graph of their features; with --labels, "
        "the photos you labelled join as given. It says the estimated class shares and how many labels "
        "changed, and keeps the original when the adapted model changes most labels or puts every photo in "
        "one class (exit 1). A fine-tuned run (--recipe finetune) is trained again with the new photos it "
        "labels with probability 0.95 or more added to its training photos (self-training).",
        epilog="examples:\n  pasture adapt runs/first ../new-camera/ --out runs/first-adapted\n"
        "  pasture ask runs/first ../new-camera/ --k 10 --out labels.csv   # fill in labels.csv, then\n"
        "  pasture adapt runs/first ../new-camera/ --labels labels.csv --out runs/first-adapted\n",
    )
    adapt.set_defaults(command_handler=_run_adapt)
    adapt.add_argument(
        "run", metavar="RUN", help="a finished run folder of the probe recipe (the default) or of finetune"
    )
    adapt.add_argument("photos", metavar="PHOTOS", help="a folder of the new camera's photos (any layout)")
    adapt.add_argument("--out", required=True, metavar="NEW_RUN", help="the adapted run's folder")
    adapt.add_argument(
        "--labels", metavar="LABELS.csv", help="labels for some photos: columns file,label (pasture ask)"
    )
    adapt.add_argument("--force", action="store_true", help="overwrite a different run already in NEW_RUN")
    adapt.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_flag(adapt)
    ask = commands.add_parser(
        "ask",
        help="which photos of a new camera to label first",
        formatter_class=HelpFormatter,
        description="The K photos of PHOTOS whose label would help most: the least certain (a probe run: after label "
        "spreading; a fine-tuned run: by its own probabilities), spread over the folder. Writes LABELS.csv (file,label,guess,confidence; label empty, in the "
        "order to label) and ask.png beside it; fill in the labels and give it to `pasture adapt --labels`.",
    )
    ask.set_defaults(command_handler=_run_ask)
    ask.add_argument(
        "run", metavar="RUN", help="a finished run folder of the probe recipe (the default) or of finetune"
    )
    ask.add_argument("photos", metavar="PHOTOS", help="a folder of the new camera's photos (any layout)")
    ask.add_argument("--k", type=int, default=10, metavar="K", help="how many photos to ask for (default 10)")
    ask.add_argument("--out", required=True, metavar="LABELS.csv", help="the CSV to write")
    add_device_flag(ask)
