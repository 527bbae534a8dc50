"""How a study shares its work out: one key per GAN however its overrides are written, one count of the
cores for --jobs auto and the threads of each run, and a bounded cache of decoded data."""

from __future__ import annotations

import pytest
import torch

from pasture.core import runtime
from pasture.study import experiment
from pasture.study.conditions import parse_condition
from pasture.study.design import Replicate, RunTask
from pasture.study.engines import LocalEngine, auto_jobs
from pasture.study.gan_store import gan_key
from pasture.study.inputs import RunInputs, _RecentlyUsed

QUICK = "recipe=default,epochs=1,image_size=16,batch_size=8"


def gan_task(text: str, replicate: Replicate) -> RunTask:
    return RunTask(key="k", data="d", out="o", layout="classes", condition=parse_condition(text), replicate=replicate)


def test_one_gan_written_two_ways_has_one_key():
    replicate = Replicate(index=0, seed=0)
    first = gan_task(f"a:{QUICK},gan=default,ngf=4,iterations=5", replicate)
    second = gan_task(f"b:{QUICK},gan=default,iterations=5,ngf=4", replicate)
    assert first.condition.gan_overrides != second.condition.gan_overrides  # written differently
    assert gan_key(first) == gan_key(second)  # ... one GAN, one leader
    other = gan_task(f"c:{QUICK},gan=default,iterations=6,ngf=4", replicate)
    assert gan_key(other) != gan_key(first)
    next_fold = gan_task(f"a:{QUICK},gan=default,ngf=4,iterations=5", Replicate(index=1, seed=0, fold=1, folds=2))
    assert gan_key(next_fold) != gan_key(first)
    assert gan_key(gan_task(f"d:{QUICK}", replicate)) is None


@pytest.mark.real_auto_jobs
@pytest.mark.parametrize("cores", [1, 2, 4])
def test_jobs_and_threads_per_run_count_the_cores_this_process_may_use(monkeypatch, cores):
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)  # OMP_NUM_THREADS or a wider machine: not the count
    assert runtime.usable_cores() == cores
    assert auto_jobs("cpu") == cores
    assert LocalEngine(2).threads_per_run() == max(1, cores // 2)  # two runs never ask for more than the share


def test_the_data_cache_keeps_the_most_recent_data_sets_only(monkeypatch):
    cache = _RecentlyUsed(3)
    for key in "abcd":
        cache[key] = key.upper()
    assert list(cache) == ["b", "c", "d"]  # the oldest went
    assert cache["b"] == "B"  # a read makes it recent
    cache["e"] = "E"
    assert list(cache) == ["d", "b", "e"]
    inputs = RunInputs(limit=2)
    loads = []
    for key in [("x",), ("y",), ("z",), ("x",)]:
        inputs.read(key, lambda key=key: loads.append(key) or key)
    assert loads == [("x",), ("y",), ("z",), ("x",)] and len(inputs.loaded) == 2  # bounded


def test_shipped_inputs_refuse_a_read_the_driver_did_not_ship():
    """A Ray worker reads only what it was given: a missing input is a bug said at once, not a read
    of a folder the worker's machine does not have."""
    shipped = RunInputs.shipped([("data", "a")], ["A"], ["gan1"], [["units"]])
    assert shipped.read(("data", "a"), lambda: "from disk") == "A" and shipped.gans == {"gan1": ["units"]}
    with pytest.raises(RuntimeError, match="did not ship"):
        shipped.read(("data", "b"), lambda: "from disk")


def test_force_clears_a_studys_own_teachers_and_keeps_the_users_files(tmp_path):
    """With the cache off, a study keeps its teachers in DIR/teachers: --force removes them with the rest
    of pasture's files, never a user's."""
    study = tmp_path / "study"
    (study / "teachers" / "abc").mkdir(parents=True)
    (study / "teachers" / "abc" / "teacher.pt").write_bytes(b"weights")
    (study / "notes.txt").write_text("mine")
    experiment._remove_own_files(study, experiment.EXPERIMENT_FILES)
    assert not (study / "teachers").exists() and (study / "notes.txt").read_text() == "mine"
