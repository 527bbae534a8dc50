"""What distillation costs, and whether the cheap teacher (bf16) keeps the student's accuracy.

On cowhorse-dev: a probe teacher, then paper-cnn students (`pasture train --teacher`) with the teacher's
views scored in fp32 and (where the CPU has native bf16) in bf16. Reports the teacher's time per view,
how often the bf16 teacher agrees with the fp32 one, the student's training time, its test accuracy (the
dev test split: photo sources it trained on, so an in-source figure; benchmarks/loso.py gives the
figure that matters), and the predict latency of student and teacher at batch 1.

    python benchmarks/distill.py [--data ../shared/data/cowhorse-dev] [--seeds 3] [--views 16] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture import api
from pasture.core.defaults import cache_root
from pasture.core.device import cpu_has_native_bf16, cpu_model
from pasture.core.stats import mean_interval
from pasture.data import load_dataset


def latency_ms(run: Path, repeats: int = 50) -> float:
    """Median time of one forward pass of the run's model on one image (batch 1, 2 threads)."""
    model, config = api.load_run(run)
    image = torch.rand(1, 3, config["image_size"], config["image_size"])
    times = []
    with torch.no_grad():
        for index in range(repeats + 5):
            started = time.perf_counter()
            model(image)
            if index >= 5:
                times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS / "distill.json"))
    args = parser.parse_args()
    data = data_or_exit(args.data)
    scratch = Path(tempfile.mkdtemp(prefix="pasture-distill-"))
    # A cache of its own: the teacher banks made here are the only ones in it (compared below).
    os.environ["PASTURE_CACHE_DIR"] = str(scratch / "cache")
    quiet = lambda message: None  # noqa: E731
    teacher = api.train(data, scratch / "teacher", recipe="probe", quiet=True, warn=quiet)
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    if "bf16" not in precisions:
        print(f"bf16 skipped: {cpu_model()} has no native bf16 (emulated bf16 is slower, not faster)")
    rows, banks = [], {}
    for precision in precisions:
        accuracies, seconds = [], []
        for seed in range(args.seeds):
            run = scratch / f"student-{precision}-{seed}"
            metrics = api.train(
                data,
                run,
                teacher=scratch / "teacher",
                seed=seed,
                distill_views=args.views,
                epochs=args.epochs,
                teacher_precision=precision,
                quiet=True,
                warn=quiet,
            )
            config = json.loads((run / "config.json").read_text())
            if seed == 0:
                banks[precision] = config["teacher"]
            accuracies.append(metrics["test_accuracy"])
            seconds.append(metrics["train_seconds"])
        interval = mean_interval(accuracies)
        rows.append(
            {
                "precision": precision,
                "views": banks[precision]["views"],
                "teacher_seconds": banks[precision]["teacher_seconds"],
                "views_per_second": banks[precision]["views"] / max(1e-9, banks[precision]["teacher_seconds"]),
                "student_seconds": statistics.mean(seconds),
                "test_accuracy": interval,
                "n_test": metrics["n_test"],
                "per_seed": accuracies,
            }
        )
    agreement = None
    banks_on_disk = sorted((cache_root() / "distill").glob("*.pt"), key=lambda path: path.stat().st_mtime)
    if len(precisions) == 2 and len(banks_on_disk) == 2:  # the same views (same seed), scored in fp32 then bf16
        fp32, bf16 = (torch.load(path, weights_only=True)["teacher_log_probs"].exp() for path in banks_on_disk)
        agreement = {
            "same_top_class": float((fp32.argmax(1) == bf16.argmax(1)).float().mean()),
            "max_abs_probability_difference": float((fp32 - bf16).abs().max()),
        }
        print(
            f"bf16 teacher vs fp32 on the same {len(fp32)} views: same top class on "
            f"{agreement['same_top_class']:.2%}, probabilities differ by at most "
            f"{agreement['max_abs_probability_difference']:.3f}"
        )
    teacher_latency, student_latency = latency_ms(scratch / "teacher"), latency_ms(scratch / "student-fp32-0")
    test = load_dataset(data, 64, warn=quiet).test
    print(
        f"CPU: {cpu_model()}; teacher (probe) test accuracy {teacher['test_accuracy']:.1%} (n={teacher['n_test']}); "
        f"{len(test)} test photos"
    )
    print()
    print(
        "| teacher precision | views | teacher time | views/s | student train time | student test accuracy "
        "(in-source; mean, 95% CI over seeds) |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        acc = row["test_accuracy"]
        print(
            f"| {row['precision']} | {row['views']} | {row['teacher_seconds']:.0f} s | {row['views_per_second']:.0f} | "
            f"{row['student_seconds']:.0f} s | {acc['mean']:.1%} ({acc['ci95'][0]:.1%}-{acc['ci95'][1]:.1%}, "
            f"{acc['n']} seeds x {row['n_test']} photos) |"
        )
    print(
        f"\npredict latency, batch 1: student (paper-cnn) {student_latency:.2f} ms, teacher (effnet-lite0 probe) "
        f"{teacher_latency:.2f} ms"
    )
    write_results(
        args.out,
        {
            "data": str(data),
            "cpu": cpu_model(),
            "seeds": args.seeds,
            "views": args.views,
            "epochs": args.epochs,
            "teacher_test_accuracy": teacher["test_accuracy"],
            "rows": rows,
            "agreement": agreement,
            "latency_ms": {"student": student_latency, "teacher": teacher_latency},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
