"""How the `default` recipe was chosen: candidates scored on validation splits of the dev TRAIN split.

The dev test split is never loaded for scoring here. Prints a table and writes JSON.

    python benchmarks/tune_default.py [--data ../shared/data/cowhorse-dev] [--splits 3] [--seeds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time


from pasture.data import load_dataset, validation_split
from pasture.classify.evaluate import evaluate_model
from pasture.classify.recipes import get_recipe
from pasture.classify.fit import train_classifier

from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

PAPER = get_recipe("paper")
CANDIDATES = {
    "paper": PAPER,
    "sgd-0.9-aug": dataclasses.replace(PAPER, name="sgd-0.9-aug", momentum=0.9, nesterov=True, weight_decay=5e-4,
                                       batch_size=16, epochs=60, schedule="cosine", warmup_epochs=3,
                                       augment="paper"),
    "sgd-0.05-aug": dataclasses.replace(PAPER, name="sgd-0.05-aug", lr=0.05, momentum=0.9, nesterov=True,
                                        weight_decay=5e-4, batch_size=16, epochs=60, schedule="cosine",
                                        warmup_epochs=3, augment="paper", label_smoothing=0.1),
    "adamw-aug": dataclasses.replace(PAPER, name="adamw-aug", optimizer="adamw", lr=1e-3, weight_decay=0.05,
                                     batch_size=16, epochs=60, schedule="cosine", warmup_epochs=3,
                                     label_smoothing=0.1, augment="paper"),
    "adamw-noaug": dataclasses.replace(PAPER, name="adamw-noaug", optimizer="adamw", lr=1e-3, weight_decay=0.05,
                                       batch_size=16, epochs=60, schedule="cosine", warmup_epochs=3,
                                       label_smoothing=0.1, augment="none"),
    "adamw-3e-4-aug": dataclasses.replace(PAPER, name="adamw-3e-4-aug", optimizer="adamw", lr=3e-4,
                                          weight_decay=0.05, batch_size=16, epochs=100, schedule="cosine",
                                          warmup_epochs=3, label_smoothing=0.1, augment="paper"),
    "adamw-2e-3-aug-120": dataclasses.replace(PAPER, name="adamw-2e-3-aug-120", optimizer="adamw", lr=2e-3,
                                              weight_decay=0.05, batch_size=16, epochs=120, schedule="cosine",
                                              warmup_epochs=3, label_smoothing=0.1, augment="paper"),
    "adamw-aug-b32": dataclasses.replace(PAPER, name="adamw-aug-b32", optimizer="adamw", lr=1e-3,
                                         weight_decay=0.05, batch_size=32, epochs=100, schedule="cosine",
                                         warmup_epochs=3, label_smoothing=0.1, augment="paper"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--out", default=str(RESULTS / "tune_default.json"))
    args = parser.parse_args()
    data_or_exit(args.data)
    full = load_dataset(args.data, 64)
    rows = []
    names = args.only.split(",") if args.only else list(CANDIDATES)
    for name in names:
        recipe = CANDIDATES[name]
        scores, started = [], time.perf_counter()
        for split in range(args.splits):
            folds = validation_split(full, 0.3, seed=100 + split)
            for seed in range(args.seeds):
                result = train_classifier(folds, recipe, seed)
                report = evaluate_model(result.model, folds.test.images, folds.test.labels, folds.classes)
                scores.append(report["accuracy"])
        rows.append({"recipe": name, "val_mean": statistics.fmean(scores), "val_std": statistics.stdev(scores),
                     "runs": len(scores), "n_val": len(folds.test), "seconds": time.perf_counter() - started})
        print(f"{name:16s} val {rows[-1]['val_mean']:.3f} +/- {rows[-1]['val_std']:.3f}  "
              f"({len(scores)} runs, n_val={len(folds.test)}, {rows[-1]['seconds']:.0f}s)", flush=True)
    write_results(args.out, {"data": str(args.data), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
