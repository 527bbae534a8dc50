"""Leave-one-source-out on cowhorse-dev and cowhorse-sources combined: the accuracy users need.

The two sets are joined, as links, into one DATA/<class>/<source>/ tree (sources from cowhorse-dev's
`source_repo` and cowhorse-sources' `source` columns), and `pasture experiment --folds groups --groups
subfolders` holds out each source in turn: every model is scored on photos from a source it never saw.

    python benchmarks/loso.py [--seeds 3] [--conditions default small-data probe finetune] [--out DIR] [--jobs N|auto]

Prints the experiment's table (balanced accuracy and accuracy per held-out source) and writes
DIR/report.md, report.html and results.json (default benchmarks/results/loso/).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

from _common import HERE, RESULTS, data_or_exit

SHARED = HERE.parent.parent / "shared" / "data"


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
        return api.experiment(data, out, conditions=conditions, seeds=seeds, folds="groups", groups="subfolders",
                              command=command, jobs=jobs)


def print_table(results: dict) -> None:
    groups = list(results["conditions"][0]["per_group"])
    print()
    print(f"| condition | balanced accuracy on unseen sources (mean over {len(groups)} sources, 95% CI over sources) | "
          + " | ".join(groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    for row in results["conditions"]:
        balanced = row["balanced_over_groups"]
        print(f"| {row['condition']} | {balanced['mean']:.1%} ({balanced['ci95'][0]:.1%}-{balanced['ci95'][1]:.1%}) | "
              + " | ".join(f"{row['per_group'][group]['mean']:.0%}" for group in groups) + " |")
    for comparison in results["comparisons"]:
        print(f"{comparison['condition']} vs {comparison['baseline']}: {comparison['mean_difference']:+.1%} "
              f"({comparison['ci95'][0]:+.1%} to {comparison['ci95'][1]:+.1%}, p={comparison['p_value']:.3f}, "
              f"{comparison['n_pairs']} sources paired): {comparison['verdict']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--conditions", nargs="+", default=["default", "small-data", "probe", "finetune"])
    parser.add_argument("--out", default=str(RESULTS / "loso"))
    parser.add_argument("--jobs", default="auto", type=lambda text: text if text == "auto" else int(text),
                        help="runs at once (auto: one single-threaded run per core; a study with runs keeps theirs)")
    args = parser.parse_args()
    results = run_loso(args.conditions, args.seeds, args.out, ["python", "benchmarks/loso.py", *sys.argv[1:]],
                       jobs=args.jobs)
    print_table(results)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
