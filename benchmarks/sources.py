"""Does a recipe learn the animal or the photo source? Accuracy per source, and on a source never seen.

cowhorse-dev's classes come from different repositories (SOURCES.md): every cow from one dairy-breed
set; horses from the Weizmann horse database (30 train / 30 test) and from web stock photos
(20 / 20). A model can score on the dev test split by recognising a source's style. Two checks:

  standard     the usual train/test split; test accuracy broken down by (class, source).
  held-out S   one horse source S is removed from training; the model is then tested on every photo
               of S (train and test folders: it saw none of them) and on the 50 test cows. Accuracy
               on S's horses is the nearest thing this data offers to "photos from other sources".
               Training then has fewer horses than cows (50 cows vs 30 or 20 horses); the cow
               accuracy shows whether the model simply leans towards "cow".

A reference row: effnet-lite0's own ImageNet head, never trained on this data (horse when ImageNet's
sorrel + horse cart outweigh ox + water buffalo + bison). No source can have taught it a shortcut.

    python benchmarks/sources.py [--data ../shared/data/cowhorse-dev] [--seeds 3] [--only default,probe]

Prints a table (mean over seeds and the pooled Wilson 95% interval per group) and writes JSON.

A thin user of pasture's groups: every run is `pasture train DATA --groups FILE.csv`, and the figures
are the run's own `per_group` and `unseen` (accuracy on sources it never saw). This script only lays
out the held-out splits (as links) and pools the seeds.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import torch
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture import api
from pasture.classify.recipes import get_recipe
from pasture.core.stats import wilson_interval
from pasture.data import load_dataset

RECIPES = ["default", "small-data", "probe", "finetune"]
SOURCE_NAMES = {  # repository -> short name for the table
    "sundram6452/Image-based-breed-recognition-for-cattle-and-buffaloes-of-India": "cattle-breeds",
    "shenshutao/image_segmentation": "weizmann",
    "DDPARMAR/ANIMAL-IMAGES-IDENTIFICATION-ML": "web-stock",
}


def read_manifest(data: Path) -> list[dict]:
    """MANIFEST.csv rows with the file (train/cow/x.jpg), label and short source name."""
    with open(data / "MANIFEST.csv", newline="") as manifest:
        return [
            {
                "file": row["file"],
                "label": row["label"],
                "source": SOURCE_NAMES.get(row["source_repo"], row["source_repo"]),
            }
            for row in csv.DictReader(manifest)
        ]


def _link_tree(root: Path, rows: list[tuple[str, dict]], data: Path) -> Path:
    """A train/test layout of links (split, manifest row) and its groups table root/groups.csv."""
    lines = ["file,group"]
    for split, row in rows:
        target = root / split / row["label"] / row["file"].replace("/", "__")  # unique across both folders
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to((data / row["file"]).resolve())
        lines.append(f"{target.relative_to(root).as_posix()},{row['source']}")
    (root / "groups.csv").write_text("\n".join(lines) + "\n")
    return root


def plans(data: Path, manifest: list[dict], scratch: Path) -> dict[str, Path]:
    """{plan: DATA folder with groups.csv}: the standard split, and per horse source S a split whose
    training part lacks S and whose test part is every photo of S (both folders) plus the test cows."""
    split_of = lambda row: row["file"].split("/")[0]  # noqa: E731
    result = {"standard": _link_tree(scratch / "standard", [(split_of(row), row) for row in manifest], data)}
    for held_out in sorted({row["source"] for row in manifest if row["label"] == "horse"}):
        rows = []
        for row in manifest:
            if row["source"] == held_out:
                rows.append(("test", row))  # every photo of S, from both folders
            elif split_of(row) == "train":
                rows.append(("train", row))
            elif row["label"] != "horse":
                rows.append(("test", row))  # the test cows: does the model now lean towards "cow"?
        result[f"held-out {held_out}"] = _link_tree(scratch / f"held-out-{held_out}", rows, data)
    return result


def group_counts(metrics: dict) -> dict[str, list[int]]:
    """(class/source) -> [correct, n] on the run's test split, from its per_group figures."""
    counts = {}
    for group, row in metrics["per_group"].items():
        for name, cell in row["per_class"].items():
            counts[f"{name}/{group}"] = [round(cell["accuracy"] * cell["n"]), cell["n"]]
    return counts


# The backbone's own ImageNet head, untrained on this data: a reference that no photo source can bias.
IMAGENET_CATTLE = (345, 346, 347)  # ox, water buffalo, bison
IMAGENET_HORSE = (339, 603)  # sorrel, horse cart


def imagenet_zero_shot(images_uint8: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """Predicted class per image: horse when the ImageNet horse classes' probability beats cattle's."""
    from pasture.classify.evaluate import to_float
    from pasture.models.pretrained import imagenet_classifier

    model, predicted = imagenet_classifier(), []
    with torch.no_grad():
        for start in range(0, len(images_uint8), 32):
            batch = (to_float(images_uint8[start : start + 32]) - 0.5) / 0.5  # effnet-lite0's normalisation
            probabilities = model(batch).softmax(1)
            horse = probabilities[:, list(IMAGENET_HORSE)].sum(1) > probabilities[:, list(IMAGENET_CATTLE)].sum(1)
            predicted.append(torch.where(horse, classes.index("horse"), classes.index("cow")))
    return torch.cat(predicted)


def _pooled(totals: dict[str, list[int]], seeds: int) -> dict:
    return {
        group: {
            "accuracy": right / n,
            "pooled_wilson95": list(wilson_interval(right, n)),
            "n_per_seed": n // seeds,
            "seeds": seeds,
        }
        for group, (right, n) in sorted(totals.items())
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated recipe names (default: " + ",".join(RECIPES) + ")")
    parser.add_argument(
        "--zero-shot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add effnet-lite0's own ImageNet head (cattle vs horse classes, no training) as a reference row",
    )
    parser.add_argument("--out", default=str(RESULTS / "sources.json"))
    args = parser.parse_args()
    data = data_or_exit(args.data)
    if not (data / "MANIFEST.csv").is_file():
        print(f"no MANIFEST.csv in {data}: this benchmark needs each file's source", file=sys.stderr)
        return 2
    os.environ.setdefault("PASTURE_CACHE_DIR", tempfile.mkdtemp(prefix="pasture-cache-"))
    scratch = Path(tempfile.mkdtemp(prefix="pasture-sources-"))
    layouts = plans(data, read_manifest(data), scratch)
    rows = []
    for name in args.only.split(",") if args.only else RECIPES:
        get_recipe(name)  # an unknown name fails here, before any training
        for plan, root in layouts.items():
            totals: dict[str, list[int]] = {}
            unseen_totals = [0, 0]
            per_seed, seconds = [], []
            for seed in range(args.seeds):
                metrics = api.train(
                    root,
                    scratch / "runs" / f"{name}-{plan}-{seed}",
                    recipe=name,
                    seed=seed,
                    groups=str(root / "groups.csv"),
                    quiet=True,
                    warn=lambda message: None,
                )
                seconds.append(metrics["train_seconds"])
                counts = group_counts(metrics)
                per_seed.append({group: right / n for group, (right, n) in counts.items()})
                for group, (right, n) in counts.items():
                    totals.setdefault(group, [0, 0])
                    totals[group][0] += right
                    totals[group][1] += n
                if metrics.get("unseen"):  # the run's own figure on the source it never saw
                    unseen_totals[0] += round(metrics["unseen"]["accuracy"] * metrics["unseen"]["n"])
                    unseen_totals[1] += metrics["unseen"]["n"]
            groups = _pooled(totals, args.seeds)
            rows.append(
                {
                    "recipe": name,
                    "plan": plan,
                    "n_train": metrics["n_train"],
                    "groups": groups,
                    "unseen": _pooled({"unseen": unseen_totals}, args.seeds)["unseen"] if unseen_totals[1] else None,
                    "per_seed": per_seed,
                    "seconds_per_run": sum(seconds) / len(seconds),
                }
            )
            print(
                f"{name:10s} {plan:20s} "
                + "  ".join(
                    f"{group} {g['accuracy']:.0%} [{g['pooled_wilson95'][0]:.0%}-{g['pooled_wilson95'][1]:.0%}] "
                    f"n={g['n_per_seed']}"
                    for group, g in groups.items()
                ),
                flush=True,
            )
    if args.zero_shot:
        for plan, root in layouts.items():
            test = load_dataset(root, 224, warn=lambda message: None, groups=str(root / "groups.csv")).test
            predicted = imagenet_zero_shot(test.images, test.classes)
            totals = {}
            for label, guess, group in zip(test.labels.tolist(), predicted.tolist(), test.groups):
                key = f"{test.classes[label]}/{group}"
                totals.setdefault(key, [0, 0])
                totals[key][0] += int(label == guess)
                totals[key][1] += 1
            groups = _pooled(totals, 1)
            rows.append({"recipe": "imagenet zero-shot", "plan": plan, "groups": groups})
            print(
                f"imagenet zero-shot {plan:20s} "
                + "  ".join(f"{group} {g['accuracy']:.0%} n={g['n_per_seed']}" for group, g in groups.items()),
                flush=True,
            )
    print()
    print("| recipe | split | test group | accuracy (pooled over seeds) | 95% CI | images x seeds |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        for group, g in row["groups"].items():
            low, high = g["pooled_wilson95"]
            print(
                f"| {row['recipe']} | {row['plan']} | {group} | {g['accuracy']:.1%} | {low:.1%}-{high:.1%} | "
                f"{g['n_per_seed']} x {g['seeds']} |"
            )
    print(
        "\nThe pooled interval treats seeds x images as independent, which is optimistic: each seed sees the "
        "same images."
    )
    write_results(args.out, {"data": str(data), "seeds": args.seeds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
