"""A study's plan before it starts: how many runs are stored and left, which GANs must be trained first,
and, from the times remembered on this machine, about how long the rest takes (never a figure that
quietly leaves work out: pasture.study.timings.work_estimate), with a hint when spare cores sit idle.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pasture.core.device import device_info
from pasture.core.runtime import usable_cores
from pasture.study.design import RunTask
from pasture.study.engines import AUTO_JOBS_MAX, Engine
from pasture.study.gan_store import gan_key, gan_location, gan_timing_key
from pasture.study.inputs import LOCAL
from pasture.study.run import pending_tasks, run_timing_key
from pasture.study.timings import minutes, recall, work_estimate


def study_plan(spec, engine: Engine, tasks: list[RunTask], stored: dict, replicates) -> dict:
    """What the study `spec` (an ExperimentSpec) will do on `engine` and about how long it takes."""
    todo = pending_tasks(tasks, stored)
    to_train: dict[Path, tuple[str, str | None]] = {}  # GAN folder -> (its timing key, its GAN key)
    needed = set()
    if todo:
        # Where each GAN task's GAN lives (hashing its training images), once per task.
        locations = {task.key: gan_location(task, LOCAL) for task in tasks if task.condition.gan_preset}
        needed = {location.folder for location in locations.values()}
        for task in todo:
            location = locations.get(task.key)
            if location is not None and location.folder not in to_train and not location.stored:
                to_train[location.folder] = (gan_timing_key(task, location), gan_key(task))
    gans = recall("gan", [timing for timing, _ in to_train.values()])
    runs = recall("run", [run_timing_key(task) for task in todo])
    estimate = work_estimate(runs, gans, engine.parallel())
    keys = {task.key for task in tasks}
    return {
        "conditions": [condition.name for condition in spec.conditions],
        "replicates": len(replicates),
        "runs": len(keys),
        "stored": len(keys) - len(todo),
        "to_run": len(todo),
        "gans_needed": len(needed),
        "gans_to_train": len(to_train),
        "estimate_seconds": estimate["seconds"],
        "known_seconds": estimate["known_seconds"],
        "unmeasured_runs": estimate["guessed_runs"],
        "unmeasured_gans": estimate["untimed_gans"],
        # {GAN key: remembered seconds or None} of the GANs to train: the progress bar counts them as work
        "gan_seconds": {key: seconds for (_, key), seconds in zip(to_train.values(), gans) if key is not None},
        "machine": device_info(torch.device(spec.device))["name"],
        "engine": engine.name,
        "parallel": engine.parallel(),
        "cores": usable_cores(),
        "device": spec.device,
    }


def plan_text(plan: dict) -> str:
    """One line: "4 conditions x 10 replicates = 40 runs (12 stored), 2 GANs to train: about 9 min"."""
    gans = ""
    if plan["gans_needed"]:
        reused = plan["gans_needed"] - plan["gans_to_train"]
        gans = f"; {plan['gans_needed']} GAN(s): {plan['gans_to_train']} to train, {reused} reused from the GAN store"
    text = (
        f"plan: {len(plan['conditions'])} condition(s) x {plan['replicates']} replicate(s) = {plan['runs']} runs "
        f"({plan['stored']} stored, {plan['to_run']} to run){gans}"
    )
    if plan["to_run"] == 0:
        return text + ": nothing to train"
    if plan["estimate_seconds"] is None:
        if plan["unmeasured_gans"]:
            text += f"; no estimate yet: {plan['unmeasured_gans']} GAN(s) never trained on this machine (minutes each)"
        else:
            text += "; no estimate yet (nothing like it ran on this machine)"
        return text + ": the progress bar's estimate follows the first runs" + _jobs_hint(plan)
    text += f"; about {minutes(plan['estimate_seconds'])} on this machine ({plan['machine']})"
    if plan["unmeasured_runs"]:
        text += f", {plan['unmeasured_runs']} of the runs never timed here and guessed at the median of the timed ones"
    return text + _jobs_hint(plan)


def _jobs_hint(plan: dict) -> str:
    """On a machine with spare cores, say how to use them: small runs gain more from running side by
    side than from more threads each (2 cores: 131 s with --jobs 2 against 187 s, benchmarks/engines.py)."""
    if (
        plan.get("engine") != "local"
        or plan.get("device", "cpu") != "cpu"
        or plan.get("parallel", 1) > 1
        or plan.get("cores", 1) < 2
        or plan["to_run"] < 4
    ):
        return ""
    jobs = min(plan["cores"], AUTO_JOBS_MAX)
    return f" (--jobs {jobs} runs {jobs} at a time on this machine's {plan['cores']} cores: faster for small models)"
