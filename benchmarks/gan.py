"""GAN quality benchmark: every preset on cowhorse-dev's TRAIN split at 64 px, or `--image-size 128` (issue 30).

For each GAN preset (the report's `paper` DCGAN, pasture's `default` conditional DiffAugment DCGAN,
the `projected` GAN): training time (seconds per iteration, minutes), then on `--per-class` samples
per class (seed 0):
  KID        against the 100 real TEST photos at 64 px, in EfficientNet-Lite2 features (a network no
             GAN trains against), with its jackknife standard error. For scale, the same KID between
             the real TRAIN and TEST photos (two real sets of the same sources) is printed first.
  GAN-test   per class, by an independent pretrained probe (the default recipe, Lite0 + Lite2, trained
             on the real training photos): is each sample recognisably its class?
  GAN-train  the report's CNN (`scratch` recipe, 64 px) trained on samples only, tested on real photos.
  near-copies  samples much closer to one training photo than real photos are to each other.

    python benchmarks/gan.py [--data ../shared/data/cowhorse-dev] [--presets paper default projected]
                             [--per-class 100] [--image-size 64] [--out DIR]

Prints a table, writes DIR/gan_quality.json, and keeps the GAN folders (grid_<class>.png per class,
samples_*.png through training, gan_losses.png) and a 500-per-class sampled set of each GAN
(DIR/synth_<preset>, for `pasture experiment ... synthetic=DIR`); at another size than 64 px the
folders are named gan_<preset>_<size>px and the JSON gan_quality_<size>px.json. A finished GAN folder
is reused; an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture import api
from pasture.classify.evaluate import predict_probabilities
from pasture.classify.trained import load_run
from pasture.data import load_dataset
from pasture.gan.kid import KidFeatures, kernel_distance
from pasture.gan.synth import sample_images, score_synthetic
from pasture.gan.trainer import resize_uint8

GAN_SIZE = 64  # the report's size and every preset's


def probe_gan_test(run_dir: Path, samples) -> dict:
    """GAN-test per class by the probe run: the share of each class's samples it calls that class."""
    model, config = load_run(run_dir)
    probabilities = predict_probabilities(model, resize_uint8(samples.images, config["image_size"]))
    predicted = probabilities.argmax(1)
    to_run = torch.tensor([config["classes"].index(name) for name in samples.classes])
    per_class = {}
    for index, name in enumerate(samples.classes):
        mask = samples.labels == index
        per_class[name] = float((predicted[mask] == to_run[index]).float().mean())
    return per_class


def train_or_reuse(data: str, gan_dir: Path, preset: str, image_size: int) -> dict:
    if (gan_dir / "summary.json").is_file():
        return json.loads((gan_dir / "summary.json").read_text())  # finished before: reused
    resume = (gan_dir / "checkpoint.pt").is_file()
    overrides = {} if image_size == GAN_SIZE else {"image_size": image_size}
    return api.gan_train(
        data,
        gan_dir,
        preset=preset,
        overrides=overrides,
        quiet=False,
        resume=resume,
        command=["python", "benchmarks/gan.py"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--presets", nargs="+", default=["paper", "default", "projected"])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=GAN_SIZE, choices=[32, 64, 128])
    parser.add_argument("--out", default=str(RESULTS / "gan"))
    args = parser.parse_args()
    size = args.image_size
    suffix = "" if size == GAN_SIZE else f"_{size}px"
    data_or_exit(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.data, size)
    kid_features = KidFeatures()
    real_kid, real_kid_se = kernel_distance(
        kid_features(dataset.test.images, size), kid_features(dataset.train.images, size)
    )
    print(
        f"KID real train vs real test photos (the floor): {real_kid * 1000:.1f} x 10^-3 (SE {real_kid_se * 1000:.1f})"
    )
    probe_dir = out / "probe_run"
    if not (probe_dir / "metrics.json").is_file():
        api.train(args.data, probe_dir, recipe="probe", seed=0, quiet=True, force=True)
    rows = {}
    for preset in args.presets:
        gan_dir = out / f"gan_{preset}{suffix}"
        summary = train_or_reuse(args.data, gan_dir, preset, size)
        iterations = summary["iterations"] * summary["units"]
        samples, _ = sample_images(gan_dir, args.per_class, seed=0)
        started = time.perf_counter()
        score = score_synthetic(samples, dataset, seed=0)
        api.gan_sample(gan_dir, out / f"synth_{preset}{suffix}", per_class=500, seed=0, force=True)
        rows[preset] = {
            "seconds": summary["seconds"],
            "iterations": iterations,
            "seconds_per_iteration": summary["seconds"] / iterations,
            "kid": score["kid"],
            "kid_se": score["kid_se"],
            "gan_test_probe_per_class": probe_gan_test(probe_dir, samples),
            "gan_test_scratch_cnn": score["gan_test"],
            "gan_train": score["gan_train"],
            "real_train_reference": score["real_train_reference"],
            "memorisation": score["memorisation"],
            "scoring_seconds": time.perf_counter() - started,
            "grids": sorted(str(path) for path in gan_dir.glob("grid_*.png")),
        }
        row = rows[preset]
        print(
            f"{preset}: {row['seconds'] / 60:.1f} min, KID {row['kid'] * 1000:.1f} (SE {row['kid_se'] * 1000:.1f}) "
            f"x 10^-3, GAN-test {row['gan_test_probe_per_class']}, GAN-train {row['gan_train']['accuracy']:.1%}",
            flush=True,
        )
    print()
    print(
        f"cowhorse-dev, {size} px, {args.per_class} samples per class; KID x 10^3 against the "
        f"{len(dataset.test)} real test photos (real train vs test: {real_kid * 1000:.1f} +/- {real_kid_se * 1000:.1f})"
    )
    print("| preset | s/it | minutes | KID (SE) | GAN-test per class (probe) | GAN-train [95% CI], n | near-copies |")
    print("|---|---|---|---|---|---|---|")
    for preset, row in rows.items():
        train = row["gan_train"]
        per_class = ", ".join(f"{name} {value:.0%}" for name, value in row["gan_test_probe_per_class"].items())
        print(
            f"| {preset} | {row['seconds_per_iteration']:.2f} | {row['seconds'] / 60:.1f} | "
            f"{row['kid'] * 1000:.1f} ({row['kid_se'] * 1000:.1f}) | {per_class} | "
            f"{train['accuracy']:.1%} [{train['ci95'][0]:.0%}-{train['ci95'][1]:.0%}], n={train['n']} | "
            f"{row['memorisation']['near_copy_fraction']:.1%} |"
        )
    write_results(
        out / f"gan_quality{suffix}.json",
        {
            "image_size": size,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "per_class": args.per_class,
            "real_kid": {"kid": real_kid, "kid_se": real_kid_se},
            "presets": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
