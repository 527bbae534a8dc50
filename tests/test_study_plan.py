"""Studies share their GANs (the GAN store) and say before they start what they will do and about how
long it takes on this machine; --dry-run says only that."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import held_by_another_process

from pasture import api
from pasture.cli import main
from pasture.core import store
from pasture.core.defaults import cache_root
from pasture.core.errors import FolderBusy
from pasture.study import gan_store

QUICK = "recipe=default,epochs=2,image_size=16,batch_size=8"
GAN = f"g:{QUICK},gan=default,image_size_gan=16,iterations=3,ngf=4,ndf=4,per_class=4"


@pytest.fixture
def counted_gans(monkeypatch, in_process_runs):
    """Count the GANs trained (the real trainer still runs, in this process)."""
    calls = []
    real = gan_store.train_gan

    def counting(*args, **kwargs):
        calls.append(kwargs.get("out"))
        return real(*args, **kwargs)

    monkeypatch.setattr(gan_store, "train_gan", counting)
    return calls


def gan_dirs(results_dir) -> set[str]:
    import json

    return {
        json.loads(path.read_text())["gan_dir"]
        for path in results_dir.glob("runs/*/result.json")
        if json.loads(path.read_text())["gan_dir"]
    }


@pytest.mark.slow
def test_a_gan_is_trained_once_for_every_study_of_the_same_images(split_data, tmp_path, counted_gans):
    api.experiment(split_data, tmp_path / "first", conditions=[f"base:{QUICK}", GAN], seeds=2, quiet=True)
    assert len(counted_gans) == 1  # a fixed split: every seed shares one GAN
    # Another study (other folder, more seeds, another baseline) of the same photos reuses it.
    api.experiment(split_data, tmp_path / "second", conditions=[f"aug:{QUICK},augment=paper", GAN], seeds=3, quiet=True)
    assert len(counted_gans) == 1
    shared = gan_dirs(tmp_path / "first")
    assert shared == gan_dirs(tmp_path / "second") and len(shared) == 1
    assert os.path.commonpath([next(iter(shared)), str(cache_root() / "gans")]) == str(cache_root() / "gans")
    # Other training images are another GAN.
    (split_data / "train" / "cow" / "cow_000.png").unlink()
    api.experiment(split_data, tmp_path / "third", conditions=[f"base:{QUICK}", GAN], seeds=1, quiet=True)
    assert len(counted_gans) == 2


def test_without_the_cache_a_study_keeps_its_gans(split_data, tmp_path, counted_gans, monkeypatch):
    monkeypatch.setenv("PASTURE_NO_CACHE", "1")
    api.experiment(split_data, tmp_path / "own", conditions=[f"base:{QUICK}", GAN], seeds=1, quiet=True)
    assert len(list((tmp_path / "own" / "gans").glob("*/summary.json"))) == 1


@pytest.mark.slow
def test_a_study_waits_for_a_gan_another_process_is_training(split_data, tmp_path, counted_gans, monkeypatch):
    api.experiment(split_data, tmp_path / "first", conditions=[f"base:{QUICK}", GAN], seeds=1, quiet=True)
    gan_dir = Path(next(iter(gan_dirs(tmp_path / "first"))))
    summary = (gan_dir / "summary.json").read_text()
    (gan_dir / "summary.json").unlink()  # as if still being trained by another process ...
    refused = threading.Event()
    real_lock = store.folder_lock

    def spying_lock(folder, what):
        lock = real_lock(folder, what)

        class Spy:
            def __enter__(self):
                try:
                    return lock.__enter__()
                except FolderBusy:
                    refused.set()
                    raise

            def __exit__(self, *exc):
                return lock.__exit__(*exc)

        return Spy()

    monkeypatch.setattr(store, "folder_lock", spying_lock)
    finish = f"open({str(gan_dir / 'summary.json')!r}, 'w').write({summary!r})"  # ... which finishes it
    done = {}
    with held_by_another_process(gan_dir, last=finish):
        second = threading.Thread(
            target=lambda: done.update(
                api.experiment(split_data, tmp_path / "second", conditions=[f"base:{QUICK}", GAN], seeds=1, quiet=True)
            )
        )
        second.start()
        assert refused.wait(timeout=120)  # the second study reached the GAN while the other process held it
    second.join(timeout=120)
    assert done["runs_computed"] == 2
    assert len(counted_gans) == 1  # it waited and used the other process's GAN instead of training its own


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_writes_nothing(split_data, tmp_path, capsys, counted_gans):
    out = tmp_path / "study"
    arguments = ["experiment", str(split_data), "--out", str(out), "--conditions", f"base:{QUICK}", GAN]
    assert main([*arguments, "--seeds", "2", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "2 condition(s) x 2 replicate(s) = 4 runs (0 stored, 4 to run)" in printed
    assert "1 GAN(s): 1 to train, 0 reused" in printed and "no estimate yet" in printed
    assert not out.exists() and not counted_gans
    assert main([*arguments, "--seeds", "2", "--quiet"]) == 0
    capsys.readouterr()
    # Now the times are known: three seeds need one new run per condition, and the GAN is stored.
    plan = api.experiment(split_data, out, conditions=[f"base:{QUICK}", GAN], seeds=3, dry_run=True)["plan"]
    assert plan["stored"] == 4 and plan["to_run"] == 2 and plan["gans_to_train"] == 0
    assert plan["unmeasured_runs"] == 0 and 0 < plan["estimate_seconds"] < 120
    assert main([*arguments, "--seeds", "3", "--dry-run"]) == 0
    assert "about" in capsys.readouterr().out
    assert main([*arguments, "--seeds", "2", "--dry-run"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert len(list(out.glob("runs/*/result.json"))) == 4  # the dry runs added nothing


# A plan as study_plan returns it: 2 conditions x 5 replicates, all timed, on a 4-core CPU.
PLAN = {
    "conditions": ["a", "b"],
    "replicates": 5,
    "runs": 10,
    "stored": 0,
    "to_run": 10,
    "gans_needed": 0,
    "gans_to_train": 0,
    "estimate_seconds": 100.0,
    "known_seconds": 100.0,
    "unmeasured_runs": 0,
    "unmeasured_gans": 0,
    "machine": "cpu",
    "engine": "local",
    "parallel": 1,
    "cores": 4,
}


def test_the_plan_says_how_to_use_spare_cores():
    from pasture.study.plan import plan_text

    plan = PLAN
    assert "--jobs 4 runs 4 at a time" in plan_text(plan)
    assert "--jobs" not in plan_text({**plan, "parallel": 2})  # already parallel
    assert "--jobs" not in plan_text({**plan, "cores": 1})
    assert "--jobs" not in plan_text({**plan, "engine": "ray"})


def test_the_estimate_guesses_untimed_runs_aloud_and_never_leaves_a_gan_out():
    """Issue 28: a plan said "about 32 s" for a study that took 325 s: 12 of its runs had never been
    timed and were left out of the figure. Untimed runs are now guessed at the median of the timed ones
    (and said so); a GAN never trained here cannot be guessed from runs, so there is no total then."""
    from pasture.study.timings import estimate_text, work_estimate

    estimate = work_estimate([10.0, None, 30.0, None], [], parallel=1)
    assert estimate["seconds"] == 10 + 30 + 2 * 20 and estimate["guessed_runs"] == 2
    assert "(2 runs guessed)" in estimate_text(estimate)
    assert work_estimate([10.0, 10.0], [100.0], parallel=2)["seconds"] == 60  # a timed GAN counts as work
    with_untimed_gan = work_estimate([10.0, 10.0], [None], parallel=1)
    assert with_untimed_gan["seconds"] is None and with_untimed_gan["known_seconds"] == 20
    assert estimate_text(with_untimed_gan) is None
    assert work_estimate([None, None], [], parallel=1)["seconds"] is None  # nothing timed: no guess


def test_the_plan_says_when_a_gan_has_never_been_timed():
    from pasture.study.experiment import plan_text

    plan = {
        **PLAN,
        "conditions": ["a", "a+gan"],
        "gans_needed": 1,
        "gans_to_train": 1,
        "estimate_seconds": None,
        "known_seconds": 30.0,
        "unmeasured_gans": 1,
        "parallel": 2,
        "cores": 2,
    }
    text = plan_text(plan)
    assert "about" not in text and "1 GAN(s) never trained on this machine" in text
    guessed = plan_text({**plan, "estimate_seconds": 300.0, "unmeasured_gans": 0, "unmeasured_runs": 4})
    assert "about 5 min" in guessed and "4 of the runs never timed here" in guessed


def test_the_progress_bar_counts_the_gans_to_train_until_their_first_run_ends(monkeypatch, tmp_path):
    """Before, the bar sat at 0/50 for minutes while the GANs trained, with no word of them."""
    from types import SimpleNamespace

    from pasture.study import engines

    def task(key, condition, gan):
        return SimpleNamespace(key=key, condition=SimpleNamespace(name=condition), gan=gan)

    tasks = [task("r1", "a+gan", "g1"), task("r2", "a+gan", "g1"), task("r3", "a", None)]
    monkeypatch.setattr(engines, "gan_key", lambda task: task.gan)
    monkeypatch.setattr(engines, "run_timing_key", lambda task: task.key)
    monkeypatch.setattr(engines, "recall", lambda kind, keys: [5.0 for _ in keys])
    postfixes = []

    class Bar:
        def update(self, n):
            pass

        def set_postfix(self, postfix, refresh=True):
            postfixes.append(dict(postfix))

        def close(self):
            pass

    monkeypatch.setattr(engines, "progress_bar", lambda *args, **kwargs: Bar())

    class Engine:
        def parallel(self):
            return 1

        def run(self, todo, finished):
            for position, task in enumerate(todo):
                finished({"key": task.key}, todo[position + 1 :])

    engines.run_tasks(Engine(), tasks, 3, False, tmp_path, gans={"g1": 120.0})
    assert postfixes[0]["GANs"] == "1 to train first" and postfixes[0]["left"] == "~2 min"  # 3 x 5 s + 120 s
    assert "GANs" not in postfixes[1] and postfixes[1]["left"] == "~10 s"  # r1 trained it
