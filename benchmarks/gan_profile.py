"""Where a GAN step's time goes on this CPU, per preset: step time in fp32 with and without channels-last,
with 1 and 2 threads, and the operators that take it (torch.profiler, self CPU time).

To see an AVX2-only laptop on an AVX-512 machine, run it as

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/gan_profile.py

(ATen's own kernels then use AVX2, and oneDNN's convolutions too). The script prints what it ran on.

    python benchmarks/gan_profile.py [--data ../shared/data/cowhorse-dev] [--steps 6] [--presets paper default]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture.core.device import cpu_flags, cpu_model
from pasture.data import load_dataset
from pasture.gan.presets import get_gan_preset
from pasture.gan.trainer import train_gan


def step_seconds(train, preset, steps: int) -> float:
    """Marginal seconds per iteration (every unit of the preset): time(2 + steps) - time(2), over steps."""

    def timed(iterations: int) -> float:
        started = time.perf_counter()
        train_gan(train, dataclasses.replace(preset, iterations=iterations, sample_every=10**9), 0)
        return time.perf_counter() - started

    timed(1)  # oneDNN builds its kernels for these shapes once
    return (timed(2 + steps) - timed(2)) / steps


def top_operators(train, preset, count: int = 8) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    small = dataclasses.replace(preset, iterations=3, sample_every=10**9)
    train_gan(train, small, 0)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        train_gan(train, small, 0)
    rows = sorted(profiler.key_averages(), key=lambda row: row.self_cpu_time_total, reverse=True)
    total = sum(row.self_cpu_time_total for row in rows)
    return [{"operator": row.key, "share": row.self_cpu_time_total / total, "calls": row.count} for row in rows[:count]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--presets", nargs="+", default=["paper", "default"])
    parser.add_argument("--out", default=str(RESULTS / "gan_profile.json"))
    args = parser.parse_args()
    data = data_or_exit(args.data)
    flags = cpu_flags()
    machine = {
        "cpu": cpu_model(),
        "avx512": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
    print(
        f"CPU: {machine['cpu']}; AVX-512 {'yes' if machine['avx512'] else 'no'}; ATen kernels: "
        f"{machine['aten_capability']}; ONEDNN_MAX_CPU_ISA={machine['ONEDNN_MAX_CPU_ISA'] or '(all)'}"
    )
    rows = []
    for name in args.presets:
        base = get_gan_preset(name)
        train = load_dataset(data, base.image_size, warn=lambda message: None).train
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for channels_last in (False, True):
                preset = dataclasses.replace(base, channels_last=channels_last, precision="fp32")
                seconds = step_seconds(train, preset, args.steps)
                rows.append(
                    {
                        "preset": name,
                        "threads": threads,
                        "channels_last": channels_last,
                        "seconds_per_iteration": seconds,
                        "iterations": base.iterations,
                        "minutes_per_gan": seconds * base.iterations / 60,
                    }
                )
                print(
                    f"{name:8s} threads {threads} channels-last {str(channels_last):5s}: {1000 * seconds:.0f} ms per "
                    f"iteration -> {seconds * base.iterations / 60:.1f} min for its {base.iterations} iterations",
                    flush=True,
                )
        torch.set_num_threads(2)
        operators = top_operators(train, dataclasses.replace(base, precision="fp32"))
        rows.append({"preset": name, "operators": operators})
        print(
            "  where the time goes (self CPU time): "
            + ", ".join(f"{row['operator']} {row['share']:.0%}" for row in operators),
            flush=True,
        )
    print()
    print("| preset | threads | channels-last | ms per iteration | minutes per GAN |")
    print("|---|---|---|---|---|")
    for row in rows:
        if "threads" in row:
            print(
                f"| {row['preset']} | {row['threads']} | {row['channels_last']} | "
                f"{1000 * row['seconds_per_iteration']:.0f} | {row['minutes_per_gan']:.1f} |"
            )
    write_results(args.out, {"machine": machine, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
