"""Seconds to a trained model (issue 42): `pasture train DATA --out RUN` and `pasture export RUN` of the
default, as whole processes, in the three states a user meets. Prints a table, writes JSON.

- fresh: an empty cache (photos decoded, the backbones' ONNX graphs exported and checked, features);
- new photos: this machine has the graphs and the backbones' weights cached (once per machine), the
  photos are new (no decoded photos, features or choice of C in the cache): issue 42's "cold";
- warm: the same photos trained again (features and the choice of C cached);
- export: `pasture export RUN` of the warm run (the file checked against the run).

Each state in its own process with its own cache folder (PASTURE_CACHE_DIR); wall time and peak resident
memory (wait4's ru_maxrss) per process; medians over --repeats. With --src, other checkouts' `src`
folders run the same commands in turn (e.g. the commit before a change: `git worktree add /tmp/old REV`,
then --src /tmp/old/src), so both are measured side by side on one machine.

    python benchmarks/train_time.py [--data ../shared/data/cowhorse-dev] [--repeats 3] [--src DIR ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture.core.device import cpu_model

STATES = ("fresh", "new photos", "warm", "export")
PHOTO_CACHES = ("decoded", "features", "head-c")  # keyed by the photos: a new user's photos miss them


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak resident GiB) of one process; exits when it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        sys.exit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:] if process.stderr else ''}")
    return seconds, usage.ru_maxrss / 2**20


def one_round(data: Path, work: Path, src: str | None) -> dict[str, tuple[float, float]]:
    env = {**os.environ, "PASTURE_CACHE_DIR": str(work / "cache")}
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cli = [sys.executable, "-m", "pasture.cli"]
    train = [*cli, "train", str(data), "--out", str(work / "run"), "--force", "--quiet"]
    measured = {}
    shutil.rmtree(work / "cache", ignore_errors=True)
    measured["fresh"] = timed(train, env)
    for name in PHOTO_CACHES:
        shutil.rmtree(work / "cache" / name, ignore_errors=True)
    measured["new photos"] = timed(train, env)
    measured["warm"] = timed(train, env)
    (work / "model.onnx").unlink(missing_ok=True)
    measured["export"] = timed([*cli, "export", str(work / "run"), "--out", str(work / "model.onnx")], env)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--src", nargs="*", default=[], help="other checkouts' src folders, measured in turn")
    parser.add_argument("--out", default=str(RESULTS / "train_time.json"))
    args = parser.parse_args()
    data = data_or_exit(args.data)
    sources = [None, *args.src]  # None: the pasture this interpreter imports
    samples: dict[str, dict[str, list]] = {
        str(src or "this checkout"): {state: [] for state in STATES} for src in sources
    }
    with tempfile.TemporaryDirectory(prefix="pasture-train-time-") as folder:
        for repeat in range(args.repeats):
            for index, src in enumerate(sources):  # in turn, so a slow minute falls on both
                measured = one_round(data, Path(folder) / str(index), src)
                for state, value in measured.items():
                    samples[str(src or "this checkout")][state].append(value)
                print(
                    f"round {repeat + 1}, {src or 'this checkout'}: "
                    + ", ".join(f"{s} {v[0]:.1f} s" for s, v in measured.items())
                )
    table = {
        name: {
            state: {
                "median_seconds": statistics.median(value[0] for value in values),
                "seconds": [round(value[0], 2) for value in values],
                "peak_gib": max(value[1] for value in values),
            }
            for state, values in by_state.items()
        }
        for name, by_state in samples.items()
    }
    print(
        f"\n`pasture train {data}` and `pasture export`, medians of {args.repeats} ({cpu_model()}, {os.cpu_count()} cores)"
    )
    print(f"| pasture | {' | '.join(STATES)} |")
    print("|---|" + "---|" * len(STATES))
    for name, by_state in table.items():
        cells = [f"{by_state[s]['median_seconds']:.1f} s ({by_state[s]['peak_gib']:.1f} GiB)" for s in STATES]
        print(f"| {name} | {' | '.join(cells)} |")
    write_results(
        args.out,
        {
            "data": str(data),
            "repeats": args.repeats,
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "machine": platform.machine(),
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
