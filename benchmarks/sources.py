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
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from pasture.data import Dataset, ImageSet, load_dataset, subset_images
from pasture.classify.evaluate import predict_probabilities
from pasture.classify.recipes import get_recipe
from pasture.core.stats import wilson_interval
from pasture.classify.fit import train_classifier

from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

RECIPES = ["default", "small-data", "probe", "finetune"]
SOURCE_NAMES = {  # repository -> short name for the table
    "sundram6452/Image-based-breed-recognition-for-cattle-and-buffaloes-of-India": "cattle-breeds",
    "shenshutao/image_segmentation": "weizmann",
    "DDPARMAR/ANIMAL-IMAGES-IDENTIFICATION-ML": "web-stock",
}


def read_sources(data: Path) -> dict[str, str]:
    """Relative file path (train/cow/x.jpg) -> short source name, from MANIFEST.csv."""
    with open(data / "MANIFEST.csv", newline="") as manifest:
        return {row["file"]: SOURCE_NAMES.get(row["source_repo"], row["source_repo"]) for row in csv.DictReader(manifest)}


def file_source(root: Path, path: str, source_of: dict[str, str]) -> str:
    """The short source name of an image file under the data folder `root`."""
    return source_of[Path(path).relative_to(root).as_posix()]


def indices(image_set: ImageSet, keep) -> torch.Tensor:
    """Positions of the (file, label) pairs of `image_set` for which keep(file, label) is true."""
    return torch.tensor([i for i, (f, y) in enumerate(zip(image_set.files, image_set.labels.tolist())) if keep(f, y)],
                        dtype=torch.int64)


def concat(parts: list[ImageSet], split: str) -> ImageSet:
    return ImageSet(images=torch.cat([p.images for p in parts]), labels=torch.cat([p.labels for p in parts]),
                    files=[f for p in parts for f in p.files], classes=parts[0].classes, split=split)


def plans(full: Dataset, source_of: dict[str, str]) -> dict[str, Dataset]:
    """The standard split, and one held-out split per horse source."""
    root = Path(full.root)

    def source(path: str) -> str:
        return file_source(root, path, source_of)

    result = {"standard": full}
    horse = full.classes.index("horse")
    for held_out in sorted({source(f) for f, y in zip(full.train.files, full.train.labels.tolist()) if y == horse}):
        def unseen(f, y):
            return source(f) == held_out

        test = concat([subset_images(full.train, indices(full.train, unseen), "eval"),
                       subset_images(full.test, indices(full.test, unseen), "eval"),
                       subset_images(full.test, indices(full.test, lambda f, y: y != horse), "eval")], "eval")
        result[f"held-out {held_out}"] = Dataset(
            root=full.root, layout="held-out-source", classes=full.classes, image_size=full.image_size,
            train=subset_images(full.train, indices(full.train, lambda f, y: not unseen(f, y)), "train"), test=test,
            fingerprint=full.fingerprint)
    return result


def group_counts(dataset: Dataset, predicted: torch.Tensor, source_of: dict[str, str]) -> dict[str, list[int]]:
    """(class/source) -> [correct, n] on dataset.test."""
    root = Path(dataset.root)
    counts: dict[str, list[int]] = {}
    for path, label, guess in zip(dataset.test.files, dataset.test.labels.tolist(), predicted.tolist()):
        key = f"{dataset.classes[label]}/{file_source(root, path, source_of)}"
        counts.setdefault(key, [0, 0])
        counts[key][0] += int(label == guess)
        counts[key][1] += 1
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
            batch = (to_float(images_uint8[start:start + 32]) - 0.5) / 0.5  # effnet-lite0's normalisation
            probabilities = model(batch).softmax(1)
            horse = probabilities[:, list(IMAGENET_HORSE)].sum(1) > probabilities[:, list(IMAGENET_CATTLE)].sum(1)
            predicted.append(torch.where(horse, classes.index("horse"), classes.index("cow")))
    return torch.cat(predicted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated recipe names (default: " + ",".join(RECIPES) + ")")
    parser.add_argument("--zero-shot", action=argparse.BooleanOptionalAction, default=True,
                        help="add effnet-lite0's own ImageNet head (cattle vs horse classes, no training) as a reference row")
    parser.add_argument("--out", default=str(RESULTS / "sources.json"))
    args = parser.parse_args()
    data = data_or_exit(args.data)
    if not (data / "MANIFEST.csv").is_file():
        print(f"no MANIFEST.csv in {data}: this benchmark needs each file's source", file=sys.stderr)
        return 2
    os.environ.setdefault("PASTURE_CACHE_DIR", tempfile.mkdtemp(prefix="pasture-cache-"))
    source_of = read_sources(data)
    rows, loaded = [], {}
    for name in (args.only.split(",") if args.only else RECIPES):
        recipe = get_recipe(name)
        if recipe.image_size not in loaded:
            loaded[recipe.image_size] = plans(load_dataset(data, recipe.image_size, warn=lambda message: None),
                                              source_of)
        for plan, dataset in loaded[recipe.image_size].items():
            totals: dict[str, list[int]] = {}
            per_seed, seconds = [], []
            for seed in range(args.seeds):
                started = time.perf_counter()
                model = train_classifier(dataset, recipe, seed).model
                seconds.append(time.perf_counter() - started)
                predicted = predict_probabilities(model, dataset.test.images, tta=recipe.tta).argmax(1)
                counts = group_counts(dataset, predicted, source_of)
                per_seed.append({group: right / n for group, (right, n) in counts.items()})
                for group, (right, n) in counts.items():
                    totals.setdefault(group, [0, 0])
                    totals[group][0] += right
                    totals[group][1] += n
            groups = {group: {"accuracy": right / n, "pooled_wilson95": list(wilson_interval(right, n)),
                              "n_per_seed": n // args.seeds, "seeds": args.seeds}
                      for group, (right, n) in sorted(totals.items())}
            rows.append({"recipe": name, "plan": plan, "n_train": len(dataset.train),
                         "train_counts": dataset.train.counts(), "groups": groups, "per_seed": per_seed,
                         "seconds_per_run": sum(seconds) / len(seconds)})
            print(f"{name:10s} {plan:20s} " + "  ".join(
                f"{group} {g['accuracy']:.0%} [{g['pooled_wilson95'][0]:.0%}-{g['pooled_wilson95'][1]:.0%}] "
                f"n={g['n_per_seed']}" for group, g in groups.items()), flush=True)
    if args.zero_shot:
        full = load_dataset(data, 224, warn=lambda message: None)
        for plan, dataset in plans(full, source_of).items():
            counts = group_counts(dataset, imagenet_zero_shot(dataset.test.images, dataset.classes), source_of)
            groups = {group: {"accuracy": right / n, "pooled_wilson95": list(wilson_interval(right, n)),
                              "n_per_seed": n, "seeds": 1} for group, (right, n) in sorted(counts.items())}
            rows.append({"recipe": "imagenet zero-shot", "plan": plan, "groups": groups})
            print(f"imagenet zero-shot {plan:20s} " + "  ".join(
                f"{group} {g['accuracy']:.0%} n={g['n_per_seed']}" for group, g in groups.items()), flush=True)
    print()
    print("| recipe | split | test group | accuracy (pooled over seeds) | 95% CI | images x seeds |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        for group, g in row["groups"].items():
            low, high = g["pooled_wilson95"]
            print(f"| {row['recipe']} | {row['plan']} | {group} | {g['accuracy']:.1%} | {low:.1%}-{high:.1%} | "
                  f"{g['n_per_seed']} x {g['seeds']} |")
    print("\nThe pooled interval treats seeds x images as independent, which is optimistic: each seed sees the "
          "same images.")
    write_results(args.out, {"data": str(data), "seeds": args.seeds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
