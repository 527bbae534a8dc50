"""Distillation on unseen sources, and with unlabeled photos of the place the model will be used.

A user who needs a tiny model for one camera (a feedlot, a chute) can usually collect photos from it
without labelling them. This measures what those photos are worth to a distilled student, on
cowhorse-dev + cowhorse-sources joined (benchmarks/loso.py's 8 sources), leaving each source out in
turn. The held-out source's photos are split in two halves by a hash of their names:

- half A: `--unlabeled` photos for the student (labels never read; the teacher labels them);
- half B: the test photos, which no model ever sees in training.

For every held-out source and seed it trains, on the other 7 sources:
    default          paper-cnn from scratch (pasture's default recipe)
    probe            the teacher (EfficientNet-Lite0 features + linear head)
    distill          a paper-cnn student of that probe
    distill+target   the same student with half A as unlabeled transfer photos
and scores each on half B. It also scores the teacher on half B decoded at the student's 64 px (then
scaled back up by the teacher's own loader): how much of the teacher's accuracy survives with only
the pixels a 64 px student gets.

Every source holds one class, so accuracy on a source is that class's recall; the summary is the mean
over the 8 sources with a 95% interval over sources (n=8), and paired differences over sources.

    python benchmarks/distill_target.py [--seeds 1] [--out DIR]

Runs are stored in DIR (default benchmarks/results/distill_target/), each fold's scores in
DIR/rows.json as it finishes; run again (or with more --seeds), only what is missing is computed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, write_results
from loso import link_sources

CONDITIONS = ("default", "probe", "distill", "distill+target")
STUDENT_SIZE = 64
# The folds' link trees, at a fixed place: a run's identity holds its data folder's path, so a stored
# run is reused only when the next invocation builds its folder at the same path.
SCRATCH = Path(tempfile.gettempdir()) / "pasture-distill-target"


def halves(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(unlabeled half A, test half B) of one source's photos, by a hash of each file name: stable,
    and independent of the order the files are listed in."""
    ranked = sorted(files, key=lambda path: hashlib.sha256(path.name.encode()).hexdigest())
    middle = len(ranked) // 2
    return ranked[:middle], ranked[middle:]


def build_fold(pool: Path, held_out: str, folder: Path) -> dict:
    """folder/data/train/<class>/ (the other sources), folder/unlabeled/ (half A), folder/test/<class>/
    (half B) and folder/test64/<class>/ (half B at the student's size) for the fold that holds out
    source `held_out`."""
    from PIL import Image

    from pasture.data.decode import decode_image_and_size

    counts = {"train": 0, "unlabeled": 0, "test": 0}
    for class_folder in sorted(path for path in pool.iterdir() if path.is_dir()):
        for source in sorted(path for path in class_folder.iterdir() if path.is_dir()):
            photos = sorted(source.iterdir())
            if source.name != held_out:
                for photo in photos:
                    _link(photo, folder / "data" / "train" / class_folder.name / photo.name)
                counts["train"] += len(photos)
                continue
            unlabeled, test = halves(photos)
            for photo in unlabeled:
                _link(photo, folder / "unlabeled" / photo.name)
            for photo in test:
                _link(photo, folder / "test" / class_folder.name / photo.name)
                small = folder / "test64" / class_folder.name / f"{photo.stem}.png"
                small.parent.mkdir(parents=True, exist_ok=True)
                pixels = decode_image_and_size(photo, STUDENT_SIZE)[0]  # what the student is given
                Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(small)
            counts["unlabeled"], counts["test"] = len(unlabeled), len(test)
    # `train` wants both classes in a train/test layout's test split, and the held-out source has one:
    # its test split is two photos of each class from the training part, a placeholder that only
    # draws the runs' curves. Every figure here is `evaluate` on half B.
    for class_folder in sorted((folder / "data" / "train").iterdir()):
        for photo in sorted(class_folder.iterdir())[:2]:
            _link(photo, folder / "data" / "test" / class_folder.name / photo.name)
    return counts


def _link(photo: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(photo.resolve())


def run_fold(folder: Path, runs: Path, seed: int) -> dict[str, float]:
    """Accuracy on half B of each condition (and of the teacher on half B at 64 px) for one fold and seed."""
    from pasture import api

    data, quiet = folder / "data", {"device": "cpu", "warn": lambda message: None}
    common = {"seed": seed, "quiet": True, **quiet}
    teacher = runs / "probe"
    api.train(data, teacher, recipe="probe", **common)
    api.train(data, runs / "default", **common)
    api.train(data, runs / "distill", teacher=teacher, **common)
    api.train(data, runs / "distill+target", teacher=teacher, unlabeled=folder / "unlabeled", **common)
    accuracy = {
        name: api.evaluate(runs / name, folder / "test", **quiet)["accuracy"]
        for name in ("default", "probe", "distill", "distill+target")
    }
    accuracy["probe@64px"] = api.evaluate(teacher, folder / "test64", **quiet)["accuracy"]
    return accuracy


def summarise(table: dict[str, dict[str, list[float]]]) -> dict:
    """Per condition: mean over sources (seeds averaged within a source) with its 95% interval over
    sources; paired differences over sources."""
    from pasture.core.stats import mean_interval, paired_comparison

    sources = sorted(table)
    means = {
        condition: [sum(table[s][condition]) / len(table[s][condition]) for s in sources]
        for condition in table[sources[0]]
    }
    summary = {
        "n_sources": len(sources),
        "sources": sources,
        "per_source": means,
        "conditions": {condition: mean_interval(values) for condition, values in means.items()},
    }
    pairs = [
        ("distill", "default"),
        ("distill+target", "distill"),
        ("distill+target", "default"),
        ("distill+target", "probe"),
        ("probe@64px", "probe"),
    ]
    summary["paired"] = [{"condition": a, "baseline": b, **paired_comparison(means[a], means[b])} for a, b in pairs]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "distill_target"))
    args = parser.parse_args()
    from pasture.core.runs import atomic_write_json

    out = Path(args.out)
    rows_file = out / "rows.json"
    rows = json.loads(rows_file.read_text()) if rows_file.is_file() else {}  # {source: {seed: {condition: acc}}}
    shutil.rmtree(SCRATCH, ignore_errors=True)
    pool = SCRATCH / "pool"
    counts = link_sources(pool)
    for held_out in sorted(counts):
        folder = SCRATCH / "folds" / held_out
        sizes = build_fold(pool, held_out, folder)
        for seed in range(args.seeds):
            if str(seed) not in rows.get(held_out, {}):
                rows.setdefault(held_out, {})[str(seed)] = run_fold(
                    folder, out / "runs" / held_out / f"seed{seed}", seed
                )
                atomic_write_json(rows_file, rows)
            accuracy = rows[held_out][str(seed)]
            print(
                f"{held_out} seed {seed} (train {sizes['train']}, unlabeled {sizes['unlabeled']}, test "
                f"{sizes['test']}): " + ", ".join(f"{c} {v:.0%}" for c, v in accuracy.items()),
                flush=True,
            )
    shutil.rmtree(SCRATCH, ignore_errors=True)
    table = {
        source: {
            condition: [rows[source][str(seed)][condition] for seed in range(args.seeds)]
            for condition in rows[source]["0"]
        }
        for source in sorted(counts)
    }
    summary = summarise(table)
    print(
        f"\n| condition | accuracy on the held-out half of an unseen source (mean over {summary['n_sources']} "
        "sources, 95% CI over sources) |\n|---|---|"
    )
    for condition, row in summary["conditions"].items():
        print(f"| {condition} | {row['mean']:.1%} ({row['ci95'][0]:.1%}-{row['ci95'][1]:.1%}), n={row['n']} |")
    for pair in summary["paired"]:
        print(
            f"{pair['condition']} vs {pair['baseline']}: {pair['mean_difference']:+.1%} ({pair['ci95'][0]:+.1%} to "
            f"{pair['ci95'][1]:+.1%}, p={pair['p_value']:.3f})"
        )
    write_results(out / "distill_target.json", {"seeds": args.seeds, "table": table, **summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
