"""`pasture predict RUN` against `pasture predict RUN.onnx` on the same photos (issue 42): whole processes,
alternating, wall time; against a plain ONNX Runtime script over the same photos (decode included:
plain_onnx_predict.py); and RUN with the frozen backbones forced back to torch
(PASTURE_BACKBONE_RUNTIME=torch), what predict did before classify/backbones.py. A probe run trained since
classify/probe_file.py predicts without torch; the torch case shows the old path.

    python benchmarks/predict_runtime.py --run RUN [--photos DIR] [--pairs 3] [--out benchmarks/results/predict_runtime.json]

RUN is a finished run of the default recipe with RUN/model.onnx exported (`pasture export RUN`); the graph
of its backbones is built and cached by one warm-up run first, as it is once per machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import DEFAULT_DATA, RESULTS, write_results


def timed(command: list[str], env: dict) -> float:
    """Wall seconds of one process."""
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--photos", default=str(DEFAULT_DATA / "test"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "predict_runtime.json"))
    args = parser.parse_args()
    run = Path(args.run)
    if not (run / "model.onnx").is_file():
        sys.exit(f"{run}/model.onnx: export the run first (pasture export {run})")
    base = [sys.executable, "-m", "pasture.cli", "predict"]
    cases = {
        "run folder": (base + [str(run), args.photos, "--csv", "/tmp/pasture-predict-run.csv", "--quiet"], {}),
        "ONNX file": (
            base + [str(run / "model.onnx"), args.photos, "--csv", "/tmp/pasture-predict-onnx.csv", "--quiet"],
            {},
        ),
        "plain ONNX Runtime script": (
            [
                sys.executable,
                str(Path(__file__).with_name("plain_onnx_predict.py")),
                str(run / "model.onnx"),
                args.photos,
            ],
            {},
        ),
        "run folder, torch backbones": (
            base + [str(run), args.photos, "--csv", "/tmp/pasture-predict-torch.csv", "--quiet"],
            {"PASTURE_BACKBONE_RUNTIME": "torch"},
        ),
    }
    timed(cases["run folder"][0], dict(os.environ))  # warm-up: builds and caches the backbones' graph
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.pairs):
        for name, (command, extra) in cases.items():
            seconds[name].append(timed(command, {**os.environ, **extra}))
    photos = sum(1 for _ in Path(args.photos).rglob("*.jpg")) + sum(1 for _ in Path(args.photos).rglob("*.png"))
    rows = {name: {"median_s": statistics.median(values), "all_s": values} for name, values in seconds.items()}
    onnx, plain = rows["ONNX file"]["median_s"], rows["plain ONNX Runtime script"]["median_s"]
    print(f"{photos} photos, {args.pairs} alternating rounds, {os.cpu_count()} cores ({cpu_name()}):")
    for name, row in rows.items():
        row["ratio_to_onnx"], row["ratio_to_plain"] = row["median_s"] / onnx, row["median_s"] / plain
        print(
            f"  {name:30s} median {row['median_s']:5.2f} s  ({row['ratio_to_onnx']:.2f}x the ONNX file, "
            f"{row['ratio_to_plain']:.2f}x the plain script)"
        )
    write_results(args.out, {"photos": photos, "pairs": args.pairs, "cpu": cpu_name(), "cases": rows})


if __name__ == "__main__":
    main()
