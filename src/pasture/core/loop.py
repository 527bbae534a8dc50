"""One training loop for every loop pasture has that takes steps: the step is a function, and what
happens after a step (progress, evaluation, checkpoints) hangs on the loop as events, in order.

    loop = Loop(step, events=[evaluate, progress, checkpoint])
    loop.run(start, stop)          # step(i) for i in start..stop-1, each event after each step

The classifier (classify.fit: one step = one epoch of one ensemble member), the GAN (gan.trainer: one
step = one iteration of one unit) and SimCLR pretraining (classify.selfsup: one step = one epoch) all
run on it. Resume lives in one place: `Checkpoint`, which writes the loop's state (the parts already
finished, the part in training, its position, its log and every random-number state: rng_states)
atomically, and `restore_rng_states`, which puts those states back, so a resumed loop takes the
same steps with the same numbers as one that was never interrupted (tests/test_train.py and
tests/test_gan.py check this bit for bit). The probe's head is not a loop of steps (one L-BFGS solve
per member, seconds, nothing to resume) and keeps its plain loop over members.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from pasture.core.device import device_rng_state, set_device_rng_state
from pasture.core.runs import atomic_torch_save, load_checkpoint, write_jsonl
from pasture.core.runtime import stop_point

Step = Callable[[int], dict]  # step number -> the step's log row
Event = Callable[[int, dict], None]  # (steps done, the last step's row) -> None


class Loop:
    """Runs `step` from `start` to `stop`; after each step, every event in order, with the number of
    steps done (step + 1) and the step's row. Ctrl-C or a stop request (core.runtime.request_stop)
    ends it between steps, after the last event of the last whole step."""

    def __init__(self, step: Step, events: Iterable[Event] = ()):
        self.step = step
        self.events = list(events)

    def run(self, start: int, stop: int) -> list[dict]:
        rows = []
        for position in range(start, stop):
            stop_point()
            row = self.step(position)
            for event in self.events:
                event(position + 1, row)
            rows.append(row)
        return rows


def every(period: int, last: int, event: Event) -> Event:
    """`event` after every `period`-th step and after step `last` (sample grids, checkpoints)."""

    def maybe(done: int, row: dict) -> None:
        if done % period == 0 or done == last:
            event(done, row)

    return maybe


def progress(bar, postfix: Callable[[dict], dict]) -> Event:
    """Advance a tqdm bar by one step, showing postfix(row)."""

    def advance(done: int, row: dict) -> None:
        bar.set_postfix(postfix(row), refresh=False)
        bar.update(1)

    return advance


def rng_states(generator: torch.Generator, device: torch.device) -> dict:
    """Every random-number state a step draws from: the loop's own generator (data order,
    augmentation), torch's global one (dropout, initialisation) and the device's."""
    return {
        "rng_data": generator.get_state(),
        "rng_torch": torch.get_rng_state(),
        "rng_device": device_rng_state(device),
    }


def restore_rng_states(state: dict, generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["rng_data"])
    torch.set_rng_state(state["rng_torch"])
    set_device_rng_state(device, state.get("rng_device"))


@dataclass
class Resumed:
    """A loop over parts as its checkpoint left it (Checkpoint.load)."""

    finished: list[dict]  # the parts trained to the end
    log: list[dict]  # every row logged so far
    in_progress: dict | None  # the state of the part interrupted mid-way, or None
    state: dict  # everything the checkpoint held (a GAN's diversity checks, ...)
    position: str  # the key of the step a part reached ("epoch", "iteration")

    def steps_done(self, steps_per_part: int) -> int:
        """Steps already taken: every finished part's, and the interrupted part's."""
        return len(self.finished) * steps_per_part + (int(self.in_progress[self.position]) if self.in_progress else 0)


class Checkpoint:
    """The checkpoint of a loop over parts (ensemble members, GAN units) trained one after another:
    `path` holds {"format", <parts>: the finished parts, <log>: every row so far, and, mid-part, the
    part's own state (its weights, position and rng_states)}, written atomically; the log is also
    written beside it as JSON lines (`log_file`), for people and plots."""

    def __init__(self, path: Path | None, format: int, parts: str, log: str, log_file: str):
        self.path, self.format, self.parts, self.log, self.log_file = path, format, parts, log, log_file

    def load(self, resume: bool, position: str) -> Resumed:
        """Where a resumed loop starts, in one place for ensemble members, GAN units and the probe: the
        parts finished, the log so far, and the part interrupted mid-way (its state holds `position`, the
        step it reached), or a fresh start when not resuming or there is no file to resume."""
        state = load_checkpoint(self.path) if resume and self.path is not None else None
        if not state:
            return Resumed([], [], None, {}, position)
        in_progress = state if position in state else None
        return Resumed(list(state[self.parts]), list(state[self.log]), in_progress, state, position)

    def save(self, finished: list[dict], rows: list[dict], part_state: dict | None = None, **extra) -> None:
        """Write the loop's state: `part_state` of the part in training (None once every part is done)."""
        if self.path is None:
            return
        atomic_torch_save(
            {"format": self.format, self.parts: finished, **(part_state or {}), self.log: rows, **extra}, self.path
        )
        write_jsonl(self.path.parent / self.log_file, rows)
