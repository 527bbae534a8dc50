"""Engines: how the runs of a study are executed. An engine (the Engine protocol) is started before
anything is written, says how many runs it runs at once and with how many threads each, and runs a list
of tasks, calling finished(stored result, runs not yet finished) once per run, after the run is stored.

LocalEngine (here) runs on this machine, one after another or in worker processes; RayEngine
(pasture.study.ray_engine) runs them as Ray tasks. run_tasks drives either with a progress bar.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Protocol

import torch

from pasture.core.errors import Interrupted, UserError
from pasture.core.runtime import progress_bar, usable_cores
from pasture.study.design import RunTask
from pasture.study.gan_store import gan_key
from pasture.study.run import execute_run, run_timing_key
from pasture.study.timings import estimate_text, recall, work_estimate

Finished = Callable[[dict, list[RunTask]], None]


class Engine(Protocol):
    name: str

    def start(self) -> object: ...

    def threads_per_run(self) -> int: ...

    def parallel(self) -> int: ...

    def run(self, todo: list[RunTask], finished: Finished) -> None: ...

    def close(self) -> None: ...


AUTO_JOBS = "auto"
AUTO_JOBS_MAX = 8  # each worker process holds its own torch, data and model (about 0.5 GB each)
GPU_MEMORY_PER_JOB = 4 * 2**30  # a CUDA context plus the largest built-in model's training, with room


def auto_jobs(device: str, out: Path | None = None) -> int:
    """How many runs `--jobs auto` (the default) runs at once.

    On a CPU, one single-threaded run per core this process may use (up to 8; core.runtime.usable_cores):
    small models gain more from running side by side than from more threads each. On 2 cores the paper
    study took 131 s as two one-thread runs against 187 s as one two-thread run (warm,
    benchmarks/engines.py), and 588 s against 647 s cold with AVX2 kernels.

    On a CUDA GPU, the runs share the device: as many as the cores allow, up to 8 and one per 4 GiB of
    GPU memory. pasture's small runs leave a GPU mostly idle between kernel launches: the paper study
    on an H100 (16 cores) took 150 s one run at a time, 89 s with 4 and 76 s with 8, with the same
    accuracy in all 50 runs (a GPU's numbers do not depend on the CPU threads). Apple's MPS: 1.

    On a CPU, a study folder that already holds runs keeps the threads per run its experiment.json
    records, so extending an old study does not mix runs of different float summation orders."""
    cores = usable_cores()
    if device.startswith("cuda"):
        memory = torch.cuda.get_device_properties(torch.device(device)).total_memory
        return max(1, min(cores, AUTO_JOBS_MAX, memory // GPU_MEMORY_PER_JOB))
    if device != "cpu":
        return 1
    recorded = _recorded_threads(out) if out is not None else None
    if recorded is not None:
        for jobs in range(1, cores + 1):
            if effective_threads(LocalEngine(jobs)) == recorded:
                return jobs
    return min(cores, AUTO_JOBS_MAX)


def effective_threads(engine: Engine) -> int:
    """The torch threads each of `engine`'s runs uses (its share, or this process's own)."""
    return engine.threads_per_run() or torch.get_num_threads()


def _recorded_threads(out: Path) -> int | None:
    """Threads per run of the runs stored in study folder `out` (None: no runs, or not recorded)."""
    try:
        recorded = json.loads((out / "experiment.json").read_text(encoding="utf-8")).get("threads_per_run")
    except (OSError, ValueError, AttributeError):
        return None
    has_runs = (out / "runs").is_dir() and any((out / "runs").glob("*/result.json"))
    return recorded if has_runs and isinstance(recorded, int) else None


class LocalEngine:
    """Runs on this machine: one after another, or (jobs > 1) in `jobs` processes with cores/jobs torch
    threads each, so that the workers do not oversubscribe the cores."""

    name = "local"

    def __init__(self, jobs: int | str = 1):
        if jobs != AUTO_JOBS and (not isinstance(jobs, int) or jobs < 1):
            raise UserError(f"--jobs {jobs}: give a whole number of at least 1, or auto")
        self.requested = jobs
        self.jobs: int = jobs if isinstance(jobs, int) else 1  # auto: settled by settle()

    def settle(self, device: str, out: Path | None) -> None:
        """Resolve --jobs auto for this device and study folder (before any task is made)."""
        if self.requested == AUTO_JOBS:
            self.jobs = auto_jobs(device, out)

    def threads_per_run(self) -> int:
        return max(1, usable_cores() // self.jobs) if self.jobs > 1 else 0  # 0: the process's default

    def parallel(self) -> int:
        return self.jobs

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, todo: list[RunTask], finished: Finished) -> None:
        if self.jobs == 1 or len(todo) <= 1:
            for position, task in enumerate(todo):
                finished(execute_run(task), todo[position + 1 :])
            return
        self._run_parallel(todo, finished)

    def _run_parallel(self, todo: list[RunTask], finished: Finished) -> None:
        """Runs in `jobs` processes, in dependency order: the first run of each GAN (which trains it)
        starts first, the runs that need no GAN fill the other workers meanwhile, and the other runs of
        a GAN are queued when that GAN is stored, so two processes never train the same GAN and no
        worker waits idle for a GAN it does not need. (Before, every run waited for every GAN: with
        AVX2 kernels on 2 cores, one worker sat idle for 2 of the paper study's 11 minutes.)"""
        leaders: dict[str, RunTask] = {}
        waiting: dict[str, list[RunTask]] = {}
        free = []
        for task in todo:
            key = gan_key(task)
            if key is None:
                free.append(task)
            elif key not in leaders:
                leaders[key] = task
            else:
                waiting.setdefault(key, []).append(task)
        remaining = {task.key: task for task in todo}
        context = multiprocessing.get_context("spawn")  # no forked torch thread pools
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=context) as pool:
            running = {pool.submit(execute_run, task): task for task in [*leaders.values(), *free]}
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        task = running.pop(future)
                        result = future.result()
                        key = gan_key(task)
                        if key is not None and leaders.get(key) is task:  # its GAN is stored: the rest can run
                            for follower in waiting.pop(key, []):
                                running[pool.submit(execute_run, follower)] = follower
                        remaining.pop(result["key"], None)
                        finished(result, list(remaining.values()))
            except BaseException:
                for future in running:
                    future.cancel()
                raise


def run_tasks(
    engine: Engine,
    todo: list[RunTask],
    total: int,
    quiet: bool,
    out: Path,
    desc: str = "experiment",
    gans: dict[str, float | None] | None = None,
) -> dict[str, dict]:
    """Run `todo` on `engine` with a progress bar; {key: stored result}. Ctrl-C keeps what finished
    (each run is stored as it ends) and says how to go on. `gans` ({GAN key: remembered seconds or None},
    study_plan's gan_seconds): the GANs the runs will train first; the bar shows them as work left
    (a run that trains its GAN takes minutes, not seconds) until a run of each has finished."""
    bar = progress_bar(total, total - len(todo), quiet, desc=desc, unit="run")
    done: dict[str, dict] = {}
    untrained = dict(gans or {})
    tasks = {task.key: task for task in todo}

    def finished(stored: dict, remaining: list[RunTask]) -> None:
        done[stored["key"]] = stored
        untrained.pop(gan_key(tasks[stored["key"]]) or "", None)  # its GAN is trained and stored now
        bar.update(1)
        if remaining:
            bar.set_postfix(_postfix(remaining, engine.parallel(), untrained), refresh=True)

    try:
        if todo:
            bar.set_postfix(_postfix(todo, engine.parallel(), untrained), refresh=True)
        engine.run(todo, finished)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; the finished runs are stored in {out / 'runs'}. Run the same command "
            "again to continue with the rest"
        ) from None
    finally:
        bar.close()
    return done


def _postfix(remaining: list[RunTask], parallel: int, untrained_gans: dict[str, float | None]) -> dict:
    """The bar's next condition, the GANs still to train, and the time left, re-estimated after every
    run from the times measured so far (this study's first runs included; work_estimate): tqdm's own
    ETA assumes every run takes as long as the average, and before, the bar sat at 0 runs for minutes
    while GANs trained, with no word of them."""
    postfix = {"condition": remaining[0].condition.name}
    if untrained_gans:
        postfix["GANs"] = f"{len(untrained_gans)} to train first"
    times = recall("run", [run_timing_key(other) for other in remaining])
    left = estimate_text(work_estimate(times, list(untrained_gans.values()), parallel))
    if left is not None:
        postfix["left"] = left
    return postfix
