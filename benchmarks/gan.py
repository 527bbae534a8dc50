"""GAN benchmark on cowhorse-dev's TRAIN split at 64x64.

(a) throughput: images/s of one full D+G step, DCGAN ngf=ndf=64, batch 64 (no augmentation), fp32;
(b) the report's pipeline (paper preset: one DCGAN per class, nz=10, 500 samples per class) against
    pasture's default (one conditional GAN, DiffAugment, hinge loss, G EMA): GAN-test, GAN-train and
    memorisation of each, and the classifier's test accuracy without and with the samples
    (default recipe, 5 seeds, paired difference with its interval).

    python benchmarks/gan.py [--data ../shared/data/cowhorse-dev] [--seeds 5] [--out DIR]

Prints a table, writes DIR/gan_benchmark.json, and keeps the GAN folders (sample grids, loss curves).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture import api
from pasture.data import ImageSet
from pasture.gan.presets import GanPreset
from pasture.gan.trainer import train_gan


def throughput(steps: int = 8, batch: int = 64) -> dict:
    preset = GanPreset(
        "bench", image_size=64, nz=100, ngf=64, ndf=64, iterations=steps, batch_size=batch, sample_every=10**9
    )
    images = ImageSet(
        torch.randint(0, 256, (batch, 3, 64, 64), dtype=torch.uint8), torch.zeros(batch, dtype=torch.long), [], ["x"]
    )
    train_gan(
        images, GanPreset("warm", image_size=64, ngf=64, ndf=64, iterations=2, batch_size=batch, sample_every=10**9), 0
    )
    started = time.perf_counter()
    train_gan(images, preset, 0)
    seconds = (time.perf_counter() - started) / steps
    return {
        "seconds_per_step": seconds,
        "images_per_second": batch / seconds,
        "batch": batch,
        "threads": torch.get_num_threads(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "gan"))
    args = parser.parse_args()
    data_or_exit(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    speed = throughput()
    print(
        f"(a) DCGAN 64x64 ngf=ndf=64 batch 64: {speed['images_per_second']:.0f} images/s "
        f"({speed['seconds_per_step']:.2f} s per D+G step, {speed['threads']} threads)",
        flush=True,
    )
    gans = {}
    for preset in ("paper", "default"):
        gan_dir, synth_dir = out / f"gan_{preset}", out / f"synth_{preset}"
        started = time.perf_counter()
        if not (gan_dir / "summary.json").is_file():
            api.gan_train(args.data, gan_dir, preset=preset, quiet=True, force=True, command=["benchmarks/gan.py"])
        api.gan_sample(gan_dir, synth_dir, per_class=500, seed=0, force=True)
        score = api.gan_score(synth_dir, args.data, seed=0)
        gans[preset] = {"seconds": time.perf_counter() - started, "score": score, "synthetic": str(synth_dir)}
        print(
            f"    {preset}: GAN-test {score['gan_test']['accuracy']:.1%}, GAN-train "
            f"{score['gan_train']['accuracy']:.1%} (real-trained reference {score['real_train_reference']['accuracy']:.1%}), "
            f"near-copies {score['memorisation']['near_copy_fraction']:.1%}",
            flush=True,
        )
    conditions = [
        "real-only:recipe=default",
        f"+paper-dcgan:recipe=default,synthetic={gans['paper']['synthetic']}",
        f"+cond-diffaug:recipe=default,synthetic={gans['default']['synthetic']},ratio=0.3",
    ]
    results = api.experiment(
        args.data,
        out / "experiment",
        conditions=conditions,
        seeds=args.seeds,
        quiet=True,
        command=["python", "benchmarks/gan.py"],
    )
    print()
    print(
        "| GAN | GAN-test | GAN-train | near-copies | classifier test acc (5 seeds) | paired diff vs real-only [95% CI], p | verdict |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = {row["condition"]: row for row in results["conditions"]}
    comparisons = {c["condition"]: c for c in results["comparisons"]}
    real = rows["real-only"]
    print(f"| none (real only) | - | - | - | {real['test']['mean']:.1%} +/- {real['test']['std']:.1%} | - | - |")
    for preset, name in (("paper", "+paper-dcgan"), ("default", "+cond-diffaug")):
        score, row, comparison = gans[preset]["score"], rows[name], comparisons[name]
        ci = lambda r: f"{r['accuracy']:.1%} [{r['ci95'][0]:.0%}-{r['ci95'][1]:.0%}]"  # noqa: E731
        print(
            f"| {preset} | {ci(score['gan_test'])} | {ci(score['gan_train'])} | "
            f"{score['memorisation']['near_copy_fraction']:.1%} | {row['test']['mean']:.1%} +/- {row['test']['std']:.1%} | "
            f"{comparison['mean_difference']:+.1%} [{comparison['ci95'][0]:+.1%}, {comparison['ci95'][1]:+.1%}], "
            f"p={comparison['p_value']:.3f} | {comparison['verdict']} |"
        )
    write_results(out / "gan_benchmark.json", {"throughput": speed, "gans": gans, "experiment": results})
    print(f"sample grids in {out}/gan_*/samples_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
