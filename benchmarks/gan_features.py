"""Exploration for issue 5: a GAN discriminator's features as a from-scratch start (Radford et al. 2015
classified CIFAR-10 with an L2-SVM on DCGAN discriminator features).

On validation splits carved out of the dev TRAIN split (the test split is never loaded):
  trained D   the `default` GAN (conditional DCGAN, DiffAugment, hinge) trained on the split's training
              part; features = every D block's output max-pooled to 4x4, concatenated, averaged over the
              image and its mirror, standardised; a linear head on top (the `probe` recipe's trainer);
  random D    the same features from an untrained D (what the architecture alone gives);
  small-data  the from-scratch recipe, for reference.

    python benchmarks/gan_features.py [--data ../shared/data/cowhorse-dev] [--splits 3] [--iterations N]

Prints a table and writes JSON to benchmarks/results/gan_features.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture.classify.evaluate import evaluate_model
from pasture.classify.fit import train_classifier
from pasture.classify.logistic import fit_linear_head
from pasture.classify.recipes import get_recipe
from pasture.core.stats import mean_interval
from pasture.data import load_dataset, validation_split
from pasture.gan.nets import Discriminator
from pasture.gan.presets import get_gan_preset
from pasture.gan.trainer import to_gan_range, train_gan


@torch.no_grad()
def discriminator_features(discriminator: Discriminator, images_uint8: torch.Tensor) -> torch.Tensor:
    discriminator.eval()
    views = []
    for images in (to_gan_range(images_uint8), to_gan_range(images_uint8).flip(3)):
        hidden, pooled = images, []
        for layer in discriminator.features:
            hidden = layer(hidden)
            if isinstance(layer, torch.nn.LeakyReLU):  # the output of each block
                pooled.append(F.adaptive_max_pool2d(hidden, 4).flatten(1))
        views.append(torch.cat(pooled, dim=1))
    return (views[0] + views[1]) / 2


def probe_accuracy(discriminator: Discriminator, dataset, seed: int) -> float:
    train_features = discriminator_features(discriminator, dataset.train.images)
    test_features = discriminator_features(discriminator, dataset.test.images)
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    head, _, _ = fit_linear_head(
        (train_features - mean) / std, dataset.train.labels, len(dataset.classes), 0.0, True, seed=seed
    )
    with torch.no_grad():
        predicted = head((test_features - mean) / std).argmax(1)
    return float((predicted == dataset.test.labels).float().mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--iterations", type=int, help="GAN iterations (default: the preset's)")
    parser.add_argument("--out", default=str(RESULTS / "gan_features.json"))
    args = parser.parse_args()
    data_or_exit(args.data)
    os.environ.setdefault("PASTURE_CACHE_DIR", tempfile.mkdtemp(prefix="pasture-cache-"))
    preset = get_gan_preset("default")
    if args.iterations:
        preset = dataclasses.replace(preset, iterations=args.iterations)
    full = load_dataset(args.data, preset.image_size, warn=lambda message: None)
    small = get_recipe("small-data")
    scores: dict[str, list[float]] = {"trained D": [], "random D": [], "small-data": []}
    seconds: dict[str, list[float]] = {name: [] for name in scores}
    for split in range(args.splits):
        dataset = validation_split(full, 0.3, seed=100 + split)
        num_classes = len(dataset.classes) if preset.conditional else 0

        started = time.perf_counter()
        units = train_gan(dataset.train, preset, seed=split)["units"]
        trained = Discriminator(preset.image_size, preset.ndf, num_classes)
        trained.load_state_dict(units[0]["discriminator"])  # conditional: one unit for all classes
        scores["trained D"].append(probe_accuracy(trained, dataset, split))
        seconds["trained D"].append(time.perf_counter() - started)

        started = time.perf_counter()
        torch.manual_seed(split)
        scores["random D"].append(
            probe_accuracy(Discriminator(preset.image_size, preset.ndf, num_classes), dataset, split)
        )
        seconds["random D"].append(time.perf_counter() - started)

        if small.image_size == preset.image_size:
            started = time.perf_counter()
            model = train_classifier(dataset, small, seed=0).model
            report = evaluate_model(model, dataset.test.images, dataset.test.labels, dataset.classes, tta=small.tta)
            scores["small-data"].append(report["accuracy"])
            seconds["small-data"].append(time.perf_counter() - started)
        print(
            f"split {split}: " + ", ".join(f"{name} {values[-1]:.3f}" for name, values in scores.items() if values),
            flush=True,
        )
    rows = []
    print()
    print("| start | validation accuracy (mean +/- std) | runs x n | s/run |")
    print("|---|---|---|---|")
    n = dataset.test.labels.shape[0]  # every split holds out the same number of images
    for name, values in scores.items():
        if not values:
            continue
        summary = mean_interval(values)
        rows.append(
            {
                "name": name,
                "accuracy": summary,
                "per_run": values,
                "n_per_run": n,
                "seconds_per_run": sum(seconds[name]) / len(seconds[name]),
            }
        )
        print(
            f"| {name} | {summary['mean']:.1%} +/- {summary['std']:.1%} | {len(values)} x {n} | "
            f"{rows[-1]['seconds_per_run']:.1f} |"
        )
    write_results(args.out, {"data": str(args.data), "gan_preset": preset.to_dict(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
