"""Does the familiarity score tell photos of other animals from new photos of cows and horses? (issue 41)

Trains the default recipe on cowhorse-dev (or reuses --run), then scores with the run's own threshold
(chosen on its training photos alone; nothing here is tuned on these photos):
- new cows and horses from other collections (cowhorse-sources, per source): the share flagged, and the
  accuracy on the photos flagged and not flagged;
- photos of none of the classes (shared/data/others: cats, dogs, sheep from Animal-Pose, the same
  collection as 80 of the cowhorse-sources photos): the share caught;
- AUROC of "other animal" against the new cow/horse photos, for the familiarity score and for the head's
  maximum probability (the baseline every tool uses);
- seconds per photo for predict with and without the familiarity score (one backbone pass either way).

    python benchmarks/unknown.py [--run RUN] [--out benchmarks/results/unknown.json]
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import time
from pathlib import Path

import torch
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture import api
from pasture.core.stats import wilson_interval
from pasture.data.layouts import decode_files

SHARED = DEFAULT_DATA.parent
WEB_SOURCES = ("animalpose-part2", "horse-web-coco")  # collections like the training photos' (web photos)


def labelled(folder: Path, column: str) -> list[tuple[Path, str, str]]:
    """(file, label, group) of every photo in a MANIFEST.csv."""
    with (folder / "MANIFEST.csv").open() as handle:
        return [(folder / row["file"], row["label"], row[column]) for row in csv.DictReader(handle)]


def auroc(positives: list[float], negatives: list[float]) -> float:
    """P(score of a positive > score of a negative), ties counted half: the area under the ROC curve."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def share(flags: list[bool]) -> dict:
    low, high = wilson_interval(sum(flags), len(flags))
    return {"share": sum(flags) / len(flags), "ci95": [low, high], "n": len(flags)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--run", help="a run of the default recipe on --data (trained into --work if absent)")
    parser.add_argument("--work", default="/tmp/pasture-unknown")
    parser.add_argument("--out", default=str(RESULTS / "unknown.json"))
    args = parser.parse_args()
    data = data_or_exit(args.data)
    run = Path(args.run or Path(args.work) / "default")
    if not (run / "metrics.json").is_file():
        api.train(data, run, quiet=True)
    model = api.load(run, device="cpu")
    assert model.familiarity is not None, f"{run}: no familiarity bank (train it with this pasture)"

    sets = {
        "sources": labelled(SHARED / "cowhorse-sources", "source"),
        "others": labelled(SHARED / "others", "label"),
    }
    scored = {}
    for name, rows in sets.items():
        images = decode_files([path for path, _, _ in rows], model.image_size)
        probabilities, found = model.scores(images)
        assert found is not None
        scored[name] = [
            {
                "label": label,
                "group": group,
                "predicted": model.classes[int(p.argmax())],
                "max_probability": float(p.max()),
                "familiarity": float(f),
                "distance": float(d),
                "familiar": bool(k),
            }
            for (_, label, group), p, f, d, k in zip(
                rows, probabilities, found["familiarity"], found["distance"], found["familiar"]
            )
        ]

    per_source = {}
    for source in sorted({row["group"] for row in scored["sources"]}):
        rows = [row for row in scored["sources"] if row["group"] == source]
        kept = [row["predicted"] == row["label"] for row in rows if row["familiar"]]
        flagged = [row["predicted"] == row["label"] for row in rows if not row["familiar"]]
        per_source[source] = {
            "flagged": share([not row["familiar"] for row in rows]),
            "accuracy_familiar": share(kept) if kept else None,
            "accuracy_unfamiliar": share(flagged) if flagged else None,
            "accuracy_all": share([row["predicted"] == row["label"] for row in rows]),
        }
    caught = {
        animal: share([not row["familiar"] for row in scored["others"] if row["label"] == animal])
        for animal in sorted({row["label"] for row in scored["others"]})
    }
    caught["all"] = share([not row["familiar"] for row in scored["others"]])
    web = [row for row in scored["sources"] if row["group"] in WEB_SOURCES]
    areas = {}
    for against, known in (("web collections", web), ("every new source", scored["sources"])):
        areas[against] = {
            "familiarity (k-NN distance)": auroc(
                [row["distance"] for row in scored["others"]], [row["distance"] for row in known]
            ),
            "max probability (baseline)": auroc(
                [1 - row["max_probability"] for row in scored["others"]], [1 - row["max_probability"] for row in known]
            ),
        }

    # cost: 64 photos through the probabilities alone, and through probabilities + familiarity
    batch = decode_files([path for path, _, _ in sets["sources"][:64]], model.image_size)
    torch.set_num_threads(2)
    timings = {"probabilities": [], "probabilities + familiarity": []}
    for _ in range(3):
        for name, work in (("probabilities", model.probabilities), ("probabilities + familiarity", model.scores)):
            started = time.perf_counter()
            work(batch)
            timings[name].append((time.perf_counter() - started) / len(batch))
    seconds = {name: statistics.median(values) for name, values in timings.items()}

    print(
        f"run {run}: threshold {model.familiarity.threshold:.3f} ({model.familiarity.folds}, kept {model.familiarity.kept:.0%})"
    )
    print("\nphotos of other animals caught (flagged unfamiliar):")
    for animal, row in caught.items():
        print(f"  {animal:8} {row['share']:6.1%}  (95% CI {row['ci95'][0]:.1%}-{row['ci95'][1]:.1%}, n={row['n']})")
    print("\nnew cow/horse photos, per source: flagged | accuracy on familiar | on unfamiliar | all")
    for source, row in per_source.items():

        def cell(value):
            return "-" if value is None else f"{value['share']:.0%} (n={value['n']})"

        print(
            f"  {source:18} {cell(row['flagged']):>12} | {cell(row['accuracy_familiar']):>12} | "
            f"{cell(row['accuracy_unfamiliar']):>12} | {cell(row['accuracy_all'])}"
        )
    print("\nAUROC, other animals against new cow/horse photos:")
    for against, row in areas.items():
        print(f"  vs {against:18} " + ", ".join(f"{name} {value:.3f}" for name, value in row.items()))
    print("\nseconds per photo (batch of 64, 2 threads): " + ", ".join(f"{k} {v:.4f}" for k, v in seconds.items()))
    write_results(
        args.out,
        {
            "run": str(run),
            "cpu": platform.processor() or platform.machine(),
            "threshold": model.familiarity.summary(),
            "others_caught": caught,
            "per_source": per_source,
            "auroc": areas,
            "seconds_per_photo": seconds,
        },
    )


if __name__ == "__main__":
    main()
