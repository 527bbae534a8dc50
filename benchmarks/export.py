"""Exported models, every format: file size, agreement with the run, and latency at batch 1 on the CPU.

For each model a run is trained on cowhorse-dev at its recipe's input size (latency and size do not
depend on how long it trained; the probe trains to convergence anyway), exported as fp32 ONNX, as
int8 ONNX (calibrated on the run's training photos) and as OpenVINO IR (when installed), and timed on
decoded test photos at batch 1: p50 and p95 over repeats, with the format's runtime on one thread and
on every core, and torch for reference
(decoding excluded: it is the same for all). Agreement: the share of the run's test photos on which the
file gives the fp32 model's label (fp32 ONNX: also its largest probability difference).

    python benchmarks/export.py [--data ../shared/data/cowhorse-dev] [--repeats 50] [--models NAME,...]

Prints a table and writes JSON to benchmarks/results/export.json, with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture.core.device import cpu_model

MODELS = {
    "probe (default: Lite0+Lite2)": dict(recipe="probe"),
    "effnet-lite0 probe 224": dict(model="effnet-lite0", pretrained="probe", image_size=224),
    "effnet-lite0 probe 192": dict(model="effnet-lite0", pretrained="probe", image_size=192),
    "effnet-lite0 probe 160": dict(model="effnet-lite0", pretrained="probe", image_size=160),
    "effnet-lite0 probe 128": dict(model="effnet-lite0", pretrained="probe", image_size=128),
    "paper-cnn (scratch)": dict(recipe="scratch", epochs=1),
    "resnet-small (small-data, TTA)": dict(recipe="small-data", epochs=1),
}
FORMATS = ("onnx", "onnx-int8", "openvino", "tflite")  # each only where its extra is installed


def latency_ms(call, repeats: int) -> tuple[float, float]:
    """(p50, p95) in ms of `call`, after 3 warm-up calls."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--models", help="comma-separated names of MODELS (default: all)")
    parser.add_argument("--out", default=str(RESULTS / "export.json"))
    args = parser.parse_args()
    data = data_or_exit(args.data)
    chosen = args.models.split(",") if args.models else list(MODELS)
    unknown = [name for name in chosen if name not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    os.environ.setdefault("PASTURE_CACHE_DIR", tempfile.mkdtemp(prefix="pasture-cache-"))
    from pasture import api
    from pasture.classify.evaluate import predict_probabilities
    from pasture.export.onnx_runner import OnnxClassifier
    from pasture.export.openvino_runner import OpenVinoClassifier
    from pasture.export.tflite_runner import TfliteClassifier

    runners = {"openvino": OpenVinoClassifier, "tflite": TfliteClassifier}
    from pasture.data import load_dataset

    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in chosen:
            run = Path(scratch) / f"run{len(rows)}"
            api.train(data, run, quiet=True, device="cpu", **MODELS[name])
            model, config = api.load_run(run)
            image = load_dataset(data, config["image_size"], warn=lambda message: None).test.images[:1]
            tta = config["recipe"]["tta"]
            torch_p50, torch_p95 = latency_ms(lambda: predict_probabilities(model, image, tta=tta), args.repeats)
            for format in FORMATS:
                if not api.EXPORT_FORMATS[format].installed():  # tflite: its own environment (README)
                    continue
                try:
                    info = api.export(run, format=format)
                except api.UserError as refused:  # int8 below the agreement gate: said, not timed
                    rows.append({"model": name, "format": format, "refused": str(refused)})
                    print(f"{name:32s} {format:10s} refused: {refused}", flush=True)
                    continue
                row = {
                    "model": name,
                    "format": format,
                    "image_size": config["image_size"],
                    "megabytes": info["bytes"] / 1e6,
                    "agreement": info.get("agreement_with_fp32", 1.0),
                    "parity_max_abs": info.get("parity_max_abs"),
                    "int8_test_accuracy": info.get("int8_test_accuracy"),
                    "checked_on": info["checked_on"],
                    "torch_1_thread_default_ms": [torch_p50, torch_p95],
                }
                for threads in sorted({1, cores}):
                    exported = runners.get(format, OnnxClassifier)(info["file"], threads=threads)
                    row[f"onnx_{threads}_threads_ms"] = list(
                        latency_ms(lambda exported=exported: exported.probabilities(image.numpy()), args.repeats)
                    )
                rows.append(row)
                print(
                    f"{name:32s} {format:10s} {row['megabytes']:6.2f} MB  agreement {row['agreement']:.1%}  "
                    f"1 thread p50 {row['onnx_1_threads_ms'][0]:.2f} ms p95 {row['onnx_1_threads_ms'][1]:.2f} ms; "
                    f"{cores} threads p50 {row[f'onnx_{cores}_threads_ms'][0]:.2f} ms; torch p50 {torch_p50:.1f} ms",
                    flush=True,
                )
    print(f"\nCPU: {cpu_model()}, {cores} cores; batch 1; decoding excluded\n")
    print(f"| model | input | format | file | same label as fp32 | 1 thread p50 / p95 | {cores} threads p50 / p95 |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "refused" in row:
            print(f"| {row['model']} | | {row['format']} | refused | | | |")
            continue
        one, many = row["onnx_1_threads_ms"], row[f"onnx_{cores}_threads_ms"]
        print(
            f"| {row['model']} | {row['image_size']} px | {row['format']} | {row['megabytes']:.1f} MB | "
            f"{row['agreement']:.0%} | {one[0]:.2f} / {one[1]:.2f} ms | {many[0]:.2f} / {many[1]:.2f} ms |"
        )
    write_results(
        args.out,
        {"data": str(data), "cpu": cpu_model(), "cores": cores, "torch_threads": torch.get_num_threads(), "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
