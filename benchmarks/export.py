"""Exported models: file size, parity with the run, and latency of ONNX Runtime against torch on the CPU.

For each model type, a run is trained briefly on cowhorse-dev at its recipe's input size (latency and
size do not depend on how long it trained), exported, and timed on decoded test photos: one image, and
a batch of 32, p50 over repeats (the model loaded once; decoding excluded: it is the same for both).

    python benchmarks/export.py [--data ../shared/data/cowhorse-dev] [--repeats 30]

Prints a table and writes JSON to benchmarks/results/export.json.
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

MODELS = {
    "paper-cnn (default)": dict(recipe="default", epochs=1),
    "resnet-small (small-data, TTA)": dict(recipe="small-data", epochs=1),
    "paper-cnn ensemble of 5": dict(recipe="default", epochs=1, ensemble=5),
    "effnet-lite0 probe": dict(recipe="probe", epochs=5),
    "effnet-lite0 finetune (TTA)": dict(recipe="finetune", epochs=1),
}


def p50_ms(call, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(RESULTS / "export.json"))
    args = parser.parse_args()
    data = data_or_exit(args.data)
    os.environ.setdefault("PASTURE_CACHE_DIR", tempfile.mkdtemp(prefix="pasture-cache-"))
    from pasture import api
    from pasture.classify.evaluate import predict_probabilities
    from pasture.classify.onnx_runner import OnnxClassifier
    from pasture.data import load_dataset

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, settings in MODELS.items():
            run = Path(scratch) / f"run{len(rows)}"
            api.train(data, run, quiet=True, device="cpu", **settings)
            info = api.export(run)
            model, config = api.load_run(run)
            exported = OnnxClassifier(info["file"])
            images = load_dataset(data, config["image_size"], warn=lambda message: None).test.images[:32]
            tta = config["recipe"]["tta"]
            row = {
                "model": name,
                "image_size": config["image_size"],
                "megabytes": info["bytes"] / 1e6,
                "parity_max_abs": info["parity_max_abs"],
                "checked_on": info["checked_on"],
                "torch_1_ms": p50_ms(lambda: predict_probabilities(model, images[:1], tta=tta), args.repeats),
                "onnx_1_ms": p50_ms(lambda: exported.probabilities(images[:1].numpy()), args.repeats),
                "torch_32_ms": p50_ms(lambda: predict_probabilities(model, images, tta=tta), max(5, args.repeats // 5)),
                "onnx_32_ms": p50_ms(lambda: exported.probabilities(images.numpy()), max(5, args.repeats // 5)),
            }
            rows.append(row)
            print(
                f"{name:32s} {row['megabytes']:6.2f} MB  parity {row['parity_max_abs']:.1e}  1 image: torch "
                f"{row['torch_1_ms']:.1f} ms, onnxruntime {row['onnx_1_ms']:.1f} ms; 32 images: torch "
                f"{row['torch_32_ms']:.0f} ms, onnxruntime {row['onnx_32_ms']:.0f} ms",
                flush=True,
            )
    print()
    print("| model | input | file | max abs parity | 1 image torch / onnxruntime | 32 images torch / onnxruntime |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['image_size']} px | {row['megabytes']:.1f} MB | {row['parity_max_abs']:.0e} | "
            f"{row['torch_1_ms']:.1f} / {row['onnx_1_ms']:.1f} ms | {row['torch_32_ms']:.0f} / "
            f"{row['onnx_32_ms']:.0f} ms |"
        )
    write_results(args.out, {"data": str(data), "threads": torch.get_num_threads(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
