"""Leave-one-source-out on cowhorse-dev and cowhorse-sources combined: the accuracy users need.

The two sets are joined, as links, into one DATA/<class>/<source>/ tree (sources from cowhorse-dev's
`source_repo` and cowhorse-sources' `source` columns), and `pasture experiment --folds groups --groups
subfolders` holds out each source in turn: every model is scored on photos from a source it never saw.

    python benchmarks/loso.py [--seeds 3] [--conditions scratch probe probe-lite0 ...] [--out DIR] [--jobs N|auto]

Prints the experiment's table (balanced accuracy and accuracy per held-out source) and writes
DIR/report.md, report.html and results.json (default benchmarks/results/loso/).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from _common import HERE, RESULTS, data_or_exit

SHARED = HERE.parent.parent / "shared" / "data"
# The default probe (Lite0 + Lite2), each backbone alone, the from-scratch recipes, and fine-tuning
# with LP-FT alone and with WiSE-FT (alpha 0.5). Each is a condition a user could also run.
CONDITIONS = {
    "probe": "probe",
    "probe-lite0": "probe-lite0:recipe=probe,model=effnet-lite0",
    "probe-lite1": "probe-lite1:recipe=probe,model=effnet-lite1",
    "probe-lite2": "probe-lite2:recipe=probe,model=effnet-lite2",
    "scratch": "scratch",
    "small-data": "small-data",
    "finetune": "finetune",
    "finetune-wise": "finetune-wise:recipe=finetune,wise_alpha=0.5",
    # Candidates for a tiny deployable model (issue 29): Lite0 alone, and the default pair, at lower
    # input sizes (the default reads 260 px).
    **{
        f"probe-lite0-{size}": f"probe-lite0-{size}:recipe=probe,model=effnet-lite0,image_size={size}"
        for size in (224, 192, 160, 128)
    },
    **{f"probe-{size}": f"probe-{size}:recipe=probe,image_size={size}" for size in (192, 160)},
}
DEFAULT_CONDITIONS = ["probe", "probe-lite0", "probe-lite1", "probe-lite2", "scratch"]


def link_sources(target: Path) -> dict[str, int]:
    """DATA/<class>/<source>/<file> links to both photo sets; returns images per source."""
    counts: dict[str, int] = {}
    for folder, column in ((SHARED / "cowhorse-dev", "source_repo"), (SHARED / "cowhorse-sources", "source")):
        data_or_exit(str(folder))
        with open(folder / "MANIFEST.csv", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                source = row[column].replace("/", "__")  # owner/repo -> one folder name
                link = target / row["label"] / source / f"{folder.name}__{Path(row['file']).name}"
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to((folder / row["file"]).resolve())
                counts[source] = counts.get(source, 0) + 1
    return counts


def run_loso(conditions: list[str], seeds: int, out: str, command: list[str], jobs: int | str = "auto") -> dict:
    """The leave-one-source-out experiment of `conditions` (runs stored in `out` are reused)."""
    from pasture import api

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        counts = link_sources(data)
        print("sources:", ", ".join(f"{name} {count}" for name, count in sorted(counts.items())), flush=True)
        return api.experiment(
            data,
            out,
            conditions=conditions,
            seeds=seeds,
            folds="groups",
            groups="subfolders",
            command=command,
            jobs=jobs,
        )


def run_held_out(conditions: list[str], sources: list[str], out: str, seed: int = 0) -> dict:
    """A cheaper look for costly conditions (fine-tuning on 2 cores): only the named sources are held out,
    one seed. Each condition trains with `pasture train` on the other sources' photos (5% of them kept
    aside as its own test split) and `pasture evaluate` scores it on the held-out source. Returns
    {condition: {source: balanced accuracy}}; finished runs in `out` are reused."""
    import shutil

    from pasture import api
    from pasture.study.conditions import parse_condition

    scores: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        everything = Path(scratch) / "all"
        link_sources(everything)
        for source in sources:
            train, held = Path(scratch) / source / "train", Path(scratch) / source / "held"
            for link in everything.glob("*/*/*"):
                target = (held if link.parent.name == source else train) / link.parent.parent.name / link.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(link.resolve())
            for text in conditions:
                condition = parse_condition(text)
                run = Path(out) / f"{condition.name}__{source}"
                if not (run / "metrics.json").is_file():
                    api.train(
                        train,
                        run,
                        recipe=condition.recipe,
                        seed=seed,
                        quiet=True,
                        test_fraction=0.05,
                        resume=run.exists(),
                        **dict(condition.overrides),
                    )
                report = api.evaluate(run, held)
                recalls = [value["accuracy"] for value in report["per_class"].values()]
                scores.setdefault(condition.name, {})[source] = sum(recalls) / len(recalls)
                print(
                    f"{condition.name} on {source}: {scores[condition.name][source]:.1%} (n={report['n']})", flush=True
                )
            shutil.rmtree(Path(scratch) / source)
    return scores


def print_table(results: dict) -> None:
    groups = list(results["conditions"][0]["per_group"])
    print()
    print(
        f"| condition | balanced accuracy on unseen sources (mean over {len(groups)} sources, 95% CI over sources) | "
        + " | ".join(groups)
        + " |"
    )
    print("|---|---|" + "---|" * len(groups))
    for row in results["conditions"]:
        balanced = row["balanced_over_groups"]
        print(
            f"| {row['condition']} | {balanced['mean']:.1%} ({balanced['ci95'][0]:.1%}-{balanced['ci95'][1]:.1%}) | "
            + " | ".join(f"{row['per_group'][group]['mean']:.0%}" for group in groups)
            + " |"
        )
    for comparison in results["comparisons"]:
        print(
            f"{comparison['condition']} vs {comparison['baseline']}: {comparison['mean_difference']:+.1%} "
            f"({comparison['ci95'][0]:+.1%} to {comparison['ci95'][1]:+.1%}, p={comparison['p_value']:.3f}, "
            f"{comparison['n_pairs']} sources paired): {comparison['verdict']}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--conditions", nargs="+", default=DEFAULT_CONDITIONS)
    parser.add_argument("--out", default=str(RESULTS / "loso"))
    parser.add_argument(
        "--hold-out",
        nargs="+",
        metavar="SOURCE",
        help="hold out only these sources, one seed, with pasture train (for conditions too costly for "
        "all 8 on 2 cores, e.g. --conditions finetune finetune-wise --hold-out racing-tv chute-video)",
    )
    parser.add_argument(
        "--jobs",
        default="auto",
        type=lambda text: text if text == "auto" else int(text),
        help="runs at once (auto: one single-threaded run per core; a study with runs keeps theirs)",
    )
    args = parser.parse_args()
    conditions = [CONDITIONS.get(name, name) for name in args.conditions]
    if args.hold_out:
        scores = run_held_out(conditions, args.hold_out, args.out)
        print("\n| condition | " + " | ".join(args.hold_out) + " |\n|---|" + "---|" * len(args.hold_out))
        for name, row in scores.items():
            print(f"| {name} | " + " | ".join(f"{row[source]:.1%}" for source in args.hold_out) + " |")
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "held_out.json").write_text(json.dumps(scores, indent=2) + "\n")
        return 0
    results = run_loso(
        conditions, args.seeds, args.out, ["python", "benchmarks/loso.py", *sys.argv[1:]], jobs=args.jobs
    )
    print_table(results)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
