"""The report's table re-run on cowhorse-dev: paper-cnn x {paper, default} recipe x {none, paper} augmentation.

5 seeds per condition (one shared test split), mean +/- std of train and test accuracy, the pooled
Wilson 95% interval of test accuracy, beside the report's own numbers. Prints a table, writes JSON.

    python benchmarks/paper_table.py [--data ../shared/data/cowhorse-dev] [--seeds 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture.classify.evaluate import evaluate_model
from pasture.classify.fit import train_classifier
from pasture.classify.recipes import get_recipe, with_overrides
from pasture.core.stats import mean_interval, wilson_interval
from pasture.data import load_dataset

CONDITIONS = [("paper", "none"), ("paper", "paper"), ("default", "none"), ("default", "paper")]
REPORT = {("paper", "none"): "95% / 55%", ("paper", "paper"): "test +5% (~60%)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "paper_table.json"))
    args = parser.parse_args()
    data_or_exit(args.data)
    rows = []
    for recipe_name, augment in CONDITIONS:
        recipe = with_overrides(get_recipe(recipe_name), augment=augment)
        dataset = load_dataset(args.data, recipe.image_size, warn=lambda message: None)
        train_acc, test_acc, correct, seconds = [], [], 0, []
        for seed in range(args.seeds):
            started = time.perf_counter()
            model = train_classifier(dataset, recipe, seed).model
            seconds.append(time.perf_counter() - started)
            train_acc.append(
                evaluate_model(model, dataset.train.images, dataset.train.labels, dataset.classes)["accuracy"]
            )
            test = evaluate_model(model, dataset.test.images, dataset.test.labels, dataset.classes)
            test_acc.append(test["accuracy"])
            correct += test["correct"]
        n_pooled = len(dataset.test) * args.seeds
        rows.append(
            {
                "recipe": recipe_name,
                "augment": augment,
                "seeds": args.seeds,
                "n_test": len(dataset.test),
                "train": mean_interval(train_acc),
                "test": mean_interval(test_acc),
                "test_pooled_wilson95": list(wilson_interval(correct, n_pooled)),
                "test_per_seed": test_acc,
                "seconds_per_run": sum(seconds) / len(seconds),
                "report": REPORT.get((recipe_name, augment), ""),
            }
        )
        row = rows[-1]
        print(
            f"{recipe_name:8s} {augment:6s} train {row['train']['mean']:.3f}+/-{row['train']['std']:.3f}  "
            f"test {row['test']['mean']:.3f}+/-{row['test']['std']:.3f}  "
            f"[{row['test_pooled_wilson95'][0]:.3f}, {row['test_pooled_wilson95'][1]:.3f}]  "
            f"{row['seconds_per_run']:.1f}s/run  report: {row['report'] or '-'}",
            flush=True,
        )
    print()
    print(
        "| recipe | augment | train acc (mean +/- std) | test acc (mean +/- std) | pooled 95% CI | n test | s/run | report |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['recipe']} | {row['augment']} | {row['train']['mean']:.1%} +/- {row['train']['std']:.1%} | "
            f"{row['test']['mean']:.1%} +/- {row['test']['std']:.1%} | {row['test_pooled_wilson95'][0]:.1%}-"
            f"{row['test_pooled_wilson95'][1]:.1%} | {row['n_test']} x {row['seeds']} seeds | "
            f"{row['seconds_per_run']:.1f} | {row['report'] or '-'} |"
        )
    print(
        "\nThe pooled interval treats seeds x images as independent trials, which is optimistic: the same "
        "100 test images are reused by every seed."
    )
    write_results(args.out, {"data": str(args.data), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
