"""Fit a new camera with networks that train their weights (issue 43): a from-scratch run and a distilled
student, trained on cowhorse-dev and scored on all 240 photos of cowhorse-sources (a new camera; its
labels are hidden from every method and used only to score).

What it measures:
- the from-scratch run (`--recipe scratch`) unadapted, and the premise of consistency self-training
  (FixMatch) on it: how many of the new camera's photos it labels with confidence >= 0.8, 0.9 and 0.95
  (FixMatch's threshold), and how many of those labels are right;
- students (`--recipe distill`, the report's CNN) of the default probe with the new photos as
  `--unlabeled`: of the probe as trained, and of the probe after `pasture adapt` to the same photos;
- a fine-tuned run (`--recipe finetune`, EfficientNet-Lite0 end to end), the same premise on it, and
  `pasture adapt` of it (classify.self_training: the recipe trained again with the new photos it labels
  at >= 0.95 added to its training photos under those labels).
Accuracies with their 95% Wilson interval and n; students against the scratch run and against each other
with the exact McNemar test on the same photos (paired). The new photos are the students' unlabeled pool
and their test set (transductive, as benchmarks/adapt.py's (a)).

    python benchmarks/adapt_networks.py [--work /tmp/pasture-adapt-networks] [--out benchmarks/results/adapt_networks.json]

About 7 minutes on 2 cores (a fine-tuning of 70 s and its adaptation of 170 s, two students of 40 s).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from _common import DEFAULT_DATA, RESULTS, write_results

from pasture import api
from pasture.core.stats import exact_mcnemar, wilson_interval

TARGET = DEFAULT_DATA.parent / "cowhorse-sources"
THRESHOLDS = (0.8, 0.9, 0.95)  # FixMatch keeps a pseudo-label at 0.95 (Sohn et al. 2020)


def scored(run: Path) -> tuple[list[dict], list[bool]]:
    """The run's rows on the new camera's photos, and whether each is right (its class folder)."""
    rows = api.predict(run, [TARGET])
    return rows, [row["label"] == Path(row["file"]).parent.name for row in rows]


def accuracy(right: list[bool]) -> dict:
    hits, n = sum(right), len(right)
    return {"accuracy": hits / n, "ci95": list(wilson_interval(hits, n)), "n": n}


def pseudo_labels(rows: list[dict], right: list[bool]) -> list[dict]:
    """What a confidence threshold keeps of the run's own labels on the new photos, and how many are right."""
    table = []
    for threshold in THRESHOLDS:
        kept = [(row, ok) for row, ok in zip(rows, right) if row["probability"] >= threshold]
        labels = [row["label"] for row, _ in kept]
        table.append(
            {
                "threshold": threshold,
                "kept": len(kept),
                "right": sum(ok for _, ok in kept),
                "shares": {name: labels.count(name) for name in sorted(set(labels))},
            }
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/pasture-adapt-networks")
    parser.add_argument("--out", default=str(RESULTS / "adapt_networks.json"))
    args = parser.parse_args()
    work = Path(args.work)
    seconds: dict[str, float] = {}

    def timed(name: str, call) -> None:
        started = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - started

    common = {"quiet": True, "force": True}
    timed("scratch", lambda: api.train(DEFAULT_DATA, work / "scratch", recipe="scratch", **common))
    timed("probe", lambda: api.train(DEFAULT_DATA, work / "probe", **common))
    timed("adapt", lambda: api.adapt(work / "probe", TARGET, work / "adapted", force=True))
    for teacher in ("probe", "adapted"):
        timed(
            f"student of {teacher}",
            lambda teacher=teacher: api.train(
                DEFAULT_DATA, work / f"student-{teacher}", teacher=work / teacher, unlabeled=TARGET, **common
            ),
        )
    timed("finetune", lambda: api.train(DEFAULT_DATA, work / "finetune", recipe="finetune", **common))
    timed("finetune, adapted", lambda: api.adapt(work / "finetune", TARGET, work / "finetune-adapted", force=True))
    names = ["scratch", "probe", "adapted", "student-probe", "student-adapted", "finetune", "finetune-adapted"]
    results = {name: scored(work / name) for name in names}
    right = {name: hits for name, (_, hits) in results.items()}
    payload = {
        "cpu": platform.processor() or platform.machine(),
        "target": str(TARGET),
        "accuracy": {name: accuracy(hits) for name, hits in right.items()},
        "scratch_pseudo_labels": pseudo_labels(*results["scratch"]),
        "finetune_pseudo_labels": pseudo_labels(*results["finetune"]),
        "paired": {
            "student of the adapted probe vs scratch": exact_mcnemar(right["scratch"], right["student-adapted"]),
            "student of the adapted probe vs student of the probe": exact_mcnemar(
                right["student-probe"], right["student-adapted"]
            ),
            "student of the probe vs scratch": exact_mcnemar(right["scratch"], right["student-probe"]),
            "finetune adapted vs finetune": exact_mcnemar(right["finetune"], right["finetune-adapted"]),
        },
        "seconds": seconds,
    }
    print(f"new camera: {TARGET} (labels used only to score)")
    for name, row in payload["accuracy"].items():
        low, high = row["ci95"]
        print(f"  {name:16s} {row['accuracy']:6.1%}  (95% CI {low:.1%}-{high:.1%}, n={row['n']})")
    for run in ("scratch", "finetune"):
        print(f"the {run} run's own labels on the new photos, kept by confidence (FixMatch's premise):")
        for row in payload[f"{run}_pseudo_labels"]:
            share = row["right"] / row["kept"] if row["kept"] else float("nan")
            print(
                f"  >= {row['threshold']:.2f}: {row['kept']:3d} kept, {row['right']:3d} right ({share:.0%}), {row['shares']}"
            )
    for name, row in payload["paired"].items():
        print(f"  {name}: +{row['gained']} / -{row['lost']} photos, exact McNemar p = {row['p_value']:.2g}")
    print("seconds: " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))
    write_results(args.out, payload)


if __name__ == "__main__":
    main()
