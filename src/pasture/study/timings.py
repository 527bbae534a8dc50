"""How long runs and GANs took on this machine: remembered in the cache (cache_root()/timings.json), so
the next study's plan can say how long it will take before it starts, and refined after every run.

Keys name what decides the time (the condition's settings, the data, the device, the CPU and thread
count), never the seed. A lost update (two processes writing at once) only costs an estimate.
"""

from __future__ import annotations

import hashlib
import json
import statistics

import torch

from pasture.core.defaults import cache_enabled, cache_root
from pasture.core.device import device_info
from pasture.core.runs import atomic_write_json

KEEP = 10  # measurements kept per key; the median of them is the estimate
_IN_MEMORY: dict = {"run": {}, "gan": {}}  # when the cache is off


def timing_key(what: dict, device: torch.device) -> str:
    """A key for `what` on this machine (device name, CPU model and torch's thread count included)."""
    machine = {"device": device_info(device)["name"], "threads": torch.get_num_threads()}
    return hashlib.sha256(json.dumps({**what, **machine}, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load() -> dict:
    if not cache_enabled():
        return _IN_MEMORY
    try:
        stored = json.loads((cache_root() / "timings.json").read_text())
        if isinstance(stored, dict) and isinstance(stored.get("run"), dict) and isinstance(stored.get("gan"), dict):
            return stored
    except (OSError, ValueError):
        pass  # absent or damaged: estimates start from scratch
    return {"run": {}, "gan": {}}


def remember(kind: str, key: str, seconds: float) -> None:
    memory = _load()
    memory[kind][key] = (memory[kind].get(key, []) + [round(float(seconds), 3)])[-KEEP:]
    if cache_enabled():
        try:
            cache_root().mkdir(parents=True, exist_ok=True)
            atomic_write_json(cache_root() / "timings.json", memory)
        except OSError:
            pass  # an unwritable cache only costs the estimate


def recall(kind: str, keys: list[str]) -> list[float | None]:
    """The median remembered time of each key (None where it never ran here); the memory is read once."""
    memory = _load()[kind]
    return [statistics.median(memory[key]) if memory.get(key) else None for key in keys]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def work_estimate(run_seconds: list[float | None], gan_seconds: list[float | None], parallel: int) -> dict:
    """Wall time of what is left, from the times remembered on this machine, never a figure that quietly
    leaves work out: a run never timed here counts as the median of the runs that were (a stated
    guess); a GAN never timed here cannot be guessed from runs (it takes minutes where a run takes
    seconds), so while one is left there is no total, only the part that is known.

    Returns {"seconds": total or None, "known_seconds", "guessed_runs", "untimed_gans"}."""
    timed = [seconds for seconds in run_seconds if seconds is not None]
    guessed = len(run_seconds) - len(timed)
    guess = statistics.median(timed) if timed else None
    untimed_gans = sum(1 for seconds in gan_seconds if seconds is None)
    known = sum(timed) + sum(seconds for seconds in gan_seconds if seconds is not None)
    lanes = max(1, min(parallel, len(run_seconds) or 1))
    total = None
    if guess is not None and not untimed_gans:
        total = (known + guessed * guess) / lanes
    return {"seconds": total, "known_seconds": known / lanes, "guessed_runs": guessed, "untimed_gans": untimed_gans}


def estimate_text(estimate: dict) -> str | None:
    """The progress bar's "~4 min" or "~4 min (3 runs guessed)", or None when no figure would be honest."""
    if estimate["seconds"] is None:
        return None
    text = f"~{minutes(estimate['seconds'])}"
    if estimate["guessed_runs"]:
        text += f" ({estimate['guessed_runs']} runs guessed)"
    return text
