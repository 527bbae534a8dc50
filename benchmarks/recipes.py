"""Beyond the report: from-scratch and pretrained recipes on cowhorse-dev.

Two modes:
  --tune     candidates scored on validation splits carved out of the dev TRAIN split (3 splits x 2
             seeds); this is how `small-data` was chosen. The test split is never loaded.
  (default)  the final table: paper-cnn/paper, paper-cnn/default, small-data, effnet-lite0 probe and
             finetune, 5 seeds each, test accuracy mean +/- std, pooled Wilson 95% interval, s/run.

    python benchmarks/recipes.py [--data ../shared/data/cowhorse-dev] [--seeds 5] [--only a,b]
    python benchmarks/recipes.py --tune [--only a,b]

Prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture.classify.evaluate import evaluate_model
from pasture.classify.fit import train_classifier
from pasture.classify.recipes import get_recipe
from pasture.core.stats import mean_interval, wilson_interval
from pasture.data import load_dataset, validation_split

SMALL = get_recipe("small-data")
FINAL = {
    "paper-cnn/paper": get_recipe("paper"),
    "paper-cnn/default": get_recipe("default"),
    "small-data": SMALL,
    "effnet-lite0 probe": get_recipe("probe"),
    "effnet-lite0 finetune": get_recipe("finetune"),
}
# Candidates for the from-scratch recipe (scored with --tune on validation splits only).
TUNE = {
    "resnet/strong/mix (small-data)": SMALL,
    "resnet/strong/no-mix": dataclasses.replace(SMALL, mixup_alpha=0.0, cutmix_alpha=0.0),
    "resnet/paper/no-mix": dataclasses.replace(SMALL, augment="paper", mixup_alpha=0.0, cutmix_alpha=0.0),
    "resnet/strong/mix/96px": dataclasses.replace(SMALL, image_size=96),
    "resnet/strong/mix/32px": dataclasses.replace(SMALL, image_size=32),
    "resnet/strong/mix/no-ema-tta": dataclasses.replace(SMALL, ema_decay=0.0, tta=False),
    "resnet/strong/mix/240ep": dataclasses.replace(SMALL, epochs=240),
    "resnet/strong/mix/selfsup200": dataclasses.replace(SMALL, selfsup_epochs=200),
    "resnet/strong/mix/selfsup400": dataclasses.replace(SMALL, selfsup_epochs=400),
    "paper-cnn/default": get_recipe("default"),
    "resnet/strong/mix/ensemble3": dataclasses.replace(SMALL, ensemble=3),
    "paper-cnn/default/ensemble5": dataclasses.replace(get_recipe("default"), ensemble=5),
}


def score(dataset, recipe, seed, device="cpu"):
    started = time.perf_counter()
    model = train_classifier(dataset, recipe, seed, device=device).model
    seconds = time.perf_counter() - started
    report = evaluate_model(model, dataset.test.images, dataset.test.labels, dataset.classes, tta=recipe.tta)
    return report, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tune", action="store_true", help="score TUNE candidates on validation splits of train")
    parser.add_argument("--only", help="comma-separated row names")
    parser.add_argument("--out")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (s/run is then that device's)")
    args = parser.parse_args()
    from pasture.core.device import resolve_device

    device = resolve_device(args.device)
    data_or_exit(args.data)
    os.environ.setdefault("PASTURE_CACHE_DIR", tempfile.mkdtemp(prefix="pasture-cache-"))
    table = TUNE if args.tune else FINAL
    names = args.only.split(",") if args.only else list(table)
    rows, loaded = [], {}
    for name in names:
        recipe = table[name]
        if recipe.image_size not in loaded:
            loaded[recipe.image_size] = load_dataset(args.data, recipe.image_size, warn=lambda message: None)
        full = loaded[recipe.image_size]
        if args.tune:
            plans = [(validation_split(full, 0.3, seed=100 + split), seed) for split in range(3) for seed in range(2)]
        else:
            plans = [(full, seed) for seed in range(args.seeds)]
        accuracies, correct, n_total, seconds = [], 0, 0, []
        for dataset, seed in plans:
            report, elapsed = score(dataset, recipe, seed, device)
            accuracies.append(report["accuracy"])
            correct += report["correct"]
            n_total += report["n"]
            seconds.append(elapsed)
        summary = mean_interval(accuracies)
        rows.append(
            {
                "name": name,
                "recipe": recipe.to_dict(),
                "split": "validation" if args.tune else "test",
                "accuracy": summary,
                "pooled_wilson95": list(wilson_interval(correct, n_total)),
                "per_run": accuracies,
                "n_per_run": plans[0][0].test.labels.shape[0],
                "runs": len(plans),
                "seconds_per_run": sum(seconds) / len(seconds),
            }
        )
        print(
            f"{name:32s} {rows[-1]['split']} {summary['mean']:.3f} +/- {summary['std']:.3f}  "
            f"(runs={len(plans)}, n={rows[-1]['n_per_run']}, {rows[-1]['seconds_per_run']:.1f}s/run)",
            flush=True,
        )
    print()
    print(
        f"| recipe | {'validation' if args.tune else 'test'} accuracy (mean +/- std) | pooled 95% CI | runs x n | s/run |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        low, high = row["pooled_wilson95"]
        print(
            f"| {row['name']} | {row['accuracy']['mean']:.1%} +/- {row['accuracy']['std']:.1%} | {low:.1%}-{high:.1%} | "
            f"{row['runs']} x {row['n_per_run']} | {row['seconds_per_run']:.1f} |"
        )
    write_results(
        args.out or RESULTS / ("recipes_tune.json" if args.tune else "recipes.json"),
        {"data": str(args.data), "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
