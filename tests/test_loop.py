"""The one training loop (pasture.core.loop): events run after each step in the order given, periodic
events fire on their period and on the last step, a stop request ends the loop between steps, and a
checkpoint's random-number states put the next draws back exactly."""

from __future__ import annotations

import threading

import pytest
import torch

from pasture.core.loop import Checkpoint, Loop, every, progress, restore_rng_states, rng_states
from pasture.core.runs import load_checkpoint
from pasture.core.runtime import StopRequested, stoppable


def test_events_run_after_each_step_in_order_from_where_the_loop_starts():
    seen = []
    loop = Loop(
        lambda i: {"i": i},
        [lambda done, row: seen.append(("a", done, row["i"])), lambda done, row: seen.append(("b", done))],
    )
    rows = loop.run(2, 4)
    assert rows == [{"i": 2}, {"i": 3}]
    assert seen == [("a", 3, 2), ("b", 3), ("a", 4, 3), ("b", 4)]


def test_a_periodic_event_fires_on_its_period_and_on_the_last_step():
    fired = []
    Loop(lambda i: {}, [every(3, 7, lambda done, row: fired.append(done))]).run(0, 7)
    assert fired == [3, 6, 7]


def test_progress_advances_the_bar_with_the_rows_postfix():
    class Bar:
        def __init__(self):
            self.n, self.postfixes = 0, []

        def set_postfix(self, postfix, refresh=True):
            self.postfixes.append(postfix)

        def update(self, n):
            self.n += n

    bar = Bar()
    Loop(lambda i: {"loss": i / 10}, [progress(bar, lambda row: {"loss": f"{row['loss']:.1f}"})]).run(0, 3)
    assert bar.n == 3 and bar.postfixes[-1] == {"loss": "0.2"}


def test_a_stop_request_ends_the_loop_between_steps():
    steps = []
    event = threading.Event()
    with stoppable(event):

        def step(i):
            steps.append(i)
            if i == 1:
                event.set()  # asked to stop during step 1: step 1 ends, step 2 never starts
            return {}

        with pytest.raises(StopRequested):
            Loop(step).run(0, 5)
    assert steps == [0, 1]


def test_restored_rng_states_draw_the_same_numbers_again(tmp_path):
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(5)
    checkpoint = Checkpoint(tmp_path / "checkpoint.pt", 7, parts="members", log="history", log_file="history.jsonl")
    checkpoint.save([{"w": torch.ones(1)}], [{"epoch": 1}], {"epoch": 1, **rng_states(generator, torch.device("cpu"))})
    expected = (torch.randperm(10, generator=generator), torch.rand(3))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["format"] == 7 and state["history"] == [{"epoch": 1}] and len(state["members"]) == 1
    assert (tmp_path / "history.jsonl").read_text().strip() == '{"epoch": 1}'
    other = torch.Generator().manual_seed(99)
    torch.manual_seed(99)
    restore_rng_states(state, other, torch.device("cpu"))
    again = (torch.randperm(10, generator=other), torch.rand(3))
    assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])


def test_a_checkpoint_without_a_folder_writes_nothing(tmp_path):
    Checkpoint(None, 1, parts="units", log="log", log_file="gan_log.jsonl").save([], [{"x": 1}])
    assert list(tmp_path.iterdir()) == []
