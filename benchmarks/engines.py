"""The same study on the local engine (--jobs 1, --jobs 2) and on Ray (a local instance), and Ray's
cost per run.

    python benchmarks/engines.py [--data ../shared/data/cowhorse-dev] [--seeds 10] [--skip-study]

1. `pasture experiment paper DATA --seeds N` on each engine, every one into a fresh folder with the GAN
   store warm (the two GANs are trained once, before the timings, so the table compares how the 50
   classifier runs are executed; a cold study adds the same GAN time to each, in parallel on Ray and
   --jobs 2). Prints wall time, and checks that every engine stored the same runs with the same
   numbers (the records, wall-clock times aside) and reached the same verdicts.
2. Ray's overhead per run: M tiny runs (1 epoch at 16 px) on the local engine (--jobs 1) and on Ray
   with 1 CPU (one task at a time), so the difference per run is what a task costs (scheduling, the
   object transfer of its inputs, returning its result), not parallelism.

Writes benchmarks/results/engines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import DEFAULT_DATA, RESULTS, data_or_exit, write_results

from pasture import api
from pasture.core.device import cpu_model


def _records(out: Path) -> dict:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "seconds" not in k}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {p.parent.name: strip(json.loads(p.read_text())["record"]) for p in out.glob("runs/*/result.json")}


def study(data: str, seeds: int, scratch: Path) -> list[dict]:
    """Each engine on the paper study; each run's records compared with the local engine's at the same
    torch thread count (the local engine gives --jobs 2 workers 1 thread each, --jobs 1 all cores)."""
    api.experiment(data, scratch / "warm", paper=True, seeds=1, quiet=True)  # trains the GANs once
    cores = os.cpu_count() or 1
    engines = (
        ("local --jobs 1", {"jobs": 1}, cores),
        ("local --jobs 2", {"jobs": 2}, max(1, cores // 2)),
        ("ray, 1 thread per run", {"engine": "ray"}, 1),
        ("ray, 2 threads per run", {"engine": "ray", "threads_per_run": 2}, 2),
    )
    rows, seen = [], {}  # threads -> (engine, records, verdicts) of the first engine with that thread count
    for label, options, threads in engines:
        out = scratch / label.replace(" ", "_").replace(",", "")
        started = time.perf_counter()
        results = api.experiment(data, out, paper=True, seeds=seeds, quiet=True, **options)
        seconds = time.perf_counter() - started
        records = _records(out)
        verdicts = [(c["condition"], c["baseline"], c["verdict"]) for c in results["comparisons"]]
        reference = seen.setdefault(threads, (label, records, verdicts))
        row = {
            "engine": label,
            "threads_per_run": threads,
            "seconds": seconds,
            "runs": len(records),
            "compared_with": reference[0],
            "same_records": records == reference[1],
            "same_verdicts": verdicts == reference[2],
            "verdicts": verdicts,
            "means": {row["condition"]: row["test"]["mean"] for row in results["conditions"]},
        }
        rows.append(row)
        print(
            f"{label:24s} {threads} thread(s)/run {seconds:7.1f} s  {len(records)} runs  "
            f"records equal to {reference[0]}: {row['same_records']}, verdicts equal: {row['same_verdicts']}",
            flush=True,
        )
    return rows


def overhead(data: str, runs: int, scratch: Path) -> dict:
    condition = ["tiny:recipe=default,epochs=1,image_size=16,batch_size=16"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task below
    started = time.perf_counter()
    local = api.experiment(data, scratch / "local", conditions=condition, seeds=runs, quiet=True, jobs=1)
    torch.set_num_threads(threads)
    timings = {"local": time.perf_counter() - started, "local_run_seconds": local["conditions"][0]["seconds_per_run"]}
    from pasture.study.ray_engine import RayEngine

    engine = RayEngine(threads=1, num_cpus=1)  # one CPU: one task at a time, as the local engine runs them
    started = time.perf_counter()
    engine.start()
    timings["ray_start_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    on_ray = _experiment_with(engine, data, scratch / "ray", condition, runs)
    timings["ray"] = time.perf_counter() - started
    timings["ray_run_seconds"] = on_ray["conditions"][0]["seconds_per_run"]
    per_run = (timings["ray"] - timings["local"]) / runs
    print(
        f"{runs} tiny runs ({timings['local_run_seconds']:.2f} s each): local {timings['local']:.1f} s, ray (1 CPU) "
        f"{timings['ray']:.1f} s; Ray costs {per_run * 1000:.0f} ms per run; starting a local Ray took "
        f"{timings['ray_start_seconds']:.1f} s",
        flush=True,
    )
    return {**timings, "runs": runs, "ray_seconds_per_run": per_run}


def _experiment_with(engine, data: str, out: Path, conditions: list[str], seeds: int) -> dict:
    from pasture.study.conditions import parse_condition
    from pasture.study.experiment import ExperimentSpec, run_experiment

    spec = ExperimentSpec(
        data=data,
        out=str(out),
        conditions=[parse_condition(c) for c in conditions],
        seeds=seeds,
        quiet=True,
        engine=engine,
    )
    try:
        return run_experiment(spec)
    finally:
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tiny-runs", type=int, default=40)
    parser.add_argument("--skip-study", action="store_true", help="only the overhead measurement")
    parser.add_argument("--out", default=str(RESULTS / "engines.json"))
    args = parser.parse_args()
    data_or_exit(args.data)
    try:
        import ray  # noqa: F401  (only whether it is installed)
    except ImportError:
        print('engines.py needs the ray extra: pip install -e ".[ray]"', file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="pasture-engines-"))
    try:
        payload = {"cpu": cpu_model(), "cores": os.cpu_count(), "data": args.data, "seeds": args.seeds}
        payload["overhead"] = overhead(args.data, args.tiny_runs, scratch)
        if not args.skip_study:
            payload["study"] = study(args.data, args.seeds, scratch)
        write_results(args.out, payload)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
