"""How cost grows with the work (issue 42): `pasture train` (the default, and the from-scratch `scratch`
recipe) on 100 to 5,000 photos and `pasture predict` on up to 10,000, each a whole process with its wall
time, photos per second and peak memory, with 2 to 50 classes.

The photos are made by re-cropping the 440 shared cow/horse photos (cowhorse-dev and cowhorse-sources):
random crops of 50-100% of the side at random places (seeded), saved as JPEG. With more than 2 classes
the crops are dealt to the classes in turn, so the accuracy means nothing there; only the cost is measured.
Each training starts with an empty feature cache (PASTURE_CACHE_DIR in the work folder): cold, as for a
new user; the backbones' ONNX graph is built once first (per machine, as it is for users).

    python benchmarks/scale.py [--train 100 1000 5000] [--predict 1000 10000] [--classes 2 10 50]
                               [--work /tmp/pasture-scale] [--out benchmarks/results/scale.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import DEFAULT_DATA, RESULTS, write_results
from PIL import Image

SHARED = DEFAULT_DATA.parent


def sources() -> list[tuple[Path, str]]:
    found = []
    for folder in (SHARED / "cowhorse-dev", SHARED / "cowhorse-sources"):
        for path in sorted(folder.rglob("*.jpg")):
            found.append((path, "cow" if "cow" in path.parent.name else "horse"))
    return found


def make_photos(folder: Path, count: int, classes: int, seed: int) -> Path:
    """`count` re-cropped photos in folder/<class>/ (2 classes: cow and horse by the photo; more: dealt in
    turn to class_00, class_01, ...)."""
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.jpg")) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(seed)
    pool = sources()
    for index in range(count):
        path, label = pool[rng.randrange(len(pool))]
        name = label if classes == 2 else f"class_{index % classes:02d}"
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        side = min(image.size)
        crop = int(side * rng.uniform(0.5, 1.0))
        left, top = rng.randint(0, image.width - crop), rng.randint(0, image.height - crop)
        (folder / name).mkdir(parents=True, exist_ok=True)
        image.crop((left, top, left + crop, top + crop)).resize((256, 256)).save(
            folder / name / f"{index:05d}.jpg", quality=90
        )
    return folder


def measured(command: list[str], env: dict) -> dict:
    """Wall seconds and peak memory (MiB) of one process, by GNU time."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_mib": round(int(done.stderr.strip().splitlines()[-1]) / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--predict", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 10, 50])
    parser.add_argument("--scratch-epochs", type=int, default=2)
    parser.add_argument("--work", default="/tmp/pasture-scale")
    parser.add_argument("--out", default=str(RESULTS / "scale.json"))
    args = parser.parse_args()
    work = Path(args.work)
    pasture = [sys.executable, "-m", "pasture.cli"]
    rows = []

    def train(count: int, classes: int, recipe: str) -> Path:
        data = make_photos(work / f"photos-{count}-{classes}", count, classes, seed=count + classes)
        run = work / f"run-{recipe}-{count}-{classes}"
        shutil.rmtree(run, ignore_errors=True)
        cache = work / f"cache-{recipe}-{count}-{classes}"
        shutil.rmtree(cache, ignore_errors=True)
        extra = ["--epochs", str(args.scratch_epochs)] if recipe == "scratch" else []
        env = {**os.environ, "PASTURE_CACHE_DIR": str(cache)}
        if recipe == "probe":  # the graph of the backbones, built once per machine: copied, not timed
            graphs = Path(os.environ.get("PASTURE_CACHE_DIR") or Path.home() / ".cache" / "pasture") / "backbones"
            if graphs.is_dir():
                shutil.copytree(graphs, cache / "backbones")
        row = measured(pasture + ["train", str(data), "--out", str(run), "--recipe", recipe, "--quiet", *extra], env)
        row.update({"step": "train", "recipe": recipe, "photos": count, "classes": classes})
        row["photos_per_s"] = round(count / row["seconds"], 1)
        rows.append(row)
        print(
            f"train {recipe:7s} {count:6d} photos {classes:3d} classes: {row['seconds']:7.1f} s  {row['photos_per_s']:6.1f}/s  peak {row['peak_mib']} MiB",
            flush=True,
        )
        return run

    for count in args.train:
        train(count, 2, "probe")
    for classes in args.classes[1:]:
        train(min(args.train[-1], 1000), classes, "probe")
    train(min(args.train[-1], 1000), 2, "scratch")
    run = work / f"run-probe-{args.train[0]}-2"
    for count in args.predict:
        photos = make_photos(work / f"predict-{count}", count, 2, seed=10_000 + count)
        row = measured(
            pasture + ["predict", str(run), str(photos), "--csv", str(work / f"predict-{count}.csv"), "--quiet"],
            dict(os.environ),
        )
        row.update({"step": "predict", "recipe": "probe", "photos": count, "classes": 2})
        row["photos_per_s"] = round(count / row["seconds"], 1)
        rows.append(row)
        print(
            f"predict         {count:6d} photos:             {row['seconds']:7.1f} s  {row['photos_per_s']:6.1f}/s  peak {row['peak_mib']} MiB",
            flush=True,
        )
    write_results(args.out, {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "rows": rows})


if __name__ == "__main__":
    main()
