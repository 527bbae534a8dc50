"""The Ray engine on a local Ray instance (ray.init(num_cpus=2)): same runs as the local engine, bit
for bit at the same thread count; a study moves between engines; Ctrl-C keeps finished runs; worker
problems are named. The real head node is in test_ray_cluster.py."""

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import interrupt_on_call, local_ray_instance

from pasture import api
from pasture.cli import main
from pasture.core.errors import Interrupted, UserError
from pasture.core.runs import load_checkpoint

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
from pasture.study import ray_engine  # noqa: E402  (needs ray)

QUICK = "recipe=default,epochs=2,image_size=16,batch_size=8"
GAN = f"g:{QUICK},gan=default,image_size_gan=16,iterations=3,ngf=4,ndf=4,per_class=4"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module."""
    with local_ray_instance(ray, "pray", max(2, os.cpu_count() or 1)) as instance:
        yield instance


def _without_times(value):
    """A stored run with its wall-clock times removed (they are the only thing allowed to differ)."""
    if isinstance(value, dict):
        return {key: _without_times(item) for key, item in value.items() if "seconds" not in key}
    if isinstance(value, list):
        return [_without_times(item) for item in value]
    return value


def _stored(out: Path) -> dict:
    return {
        folder.name: json.loads((folder / "result.json").read_text())
        for folder in (out / "runs").iterdir()
        if (folder / "result.json").is_file()
    }


@pytest.mark.slow
def test_ray_stores_the_same_runs_as_the_local_engine_bit_for_bit(local_ray, split_data, tmp_path, monkeypatch):
    # Ray first, with an empty GAN store: its GAN is trained in a Ray task and stored by the driver.
    threads = max(1, (os.cpu_count() or 1) // 2)  # what each of the local engine's 2 workers gets
    ray_results = api.experiment(
        split_data,
        tmp_path / "ray",
        conditions=[f"a:{QUICK}", GAN],
        seeds=2,
        engine="ray",
        threads_per_run=threads,
        quiet=True,
    )
    ray_gans = list((Path(os.environ["PASTURE_CACHE_DIR"]) / "gans").iterdir())
    assert len(ray_gans) == 1 and (ray_gans[0] / "summary.json").is_file()
    # Then the local engine at the same thread count (2 workers x 1 thread), with its own GAN store,
    # so it trains its own GAN.
    monkeypatch.setenv("PASTURE_CACHE_DIR", str(tmp_path / "other-cache"))
    local_results = api.experiment(
        split_data, tmp_path / "local", conditions=[f"a:{QUICK}", GAN], seeds=2, jobs=2, quiet=True
    )
    ray_runs, local_runs = _stored(tmp_path / "ray"), _stored(tmp_path / "local")
    assert sorted(ray_runs) == sorted(local_runs) and len(ray_runs) == 4
    for key in ray_runs:
        ray_run, local_run = _without_times(ray_runs[key]), _without_times(local_runs[key])
        ray_run.pop("gan_dir"), local_run.pop("gan_dir")  # two GAN stores, by design of this test
        assert ray_run == local_run, key
        assert sorted(p.name for p in (tmp_path / "ray" / "runs" / key).iterdir()) == ["result.json", "top_losses.png"]
    local_gan = tmp_path / "other-cache" / "gans" / ray_gans[0].name
    ray_units = load_checkpoint(ray_gans[0] / "checkpoint.pt")["units"]
    local_units = load_checkpoint(local_gan / "checkpoint.pt")["units"]
    for ray_unit, local_unit in zip(ray_units, local_units):
        for name, tensor in ray_unit["generator"].items():
            assert torch.equal(tensor, local_unit["generator"][name]), name
    assert [row["test"]["mean"] for row in ray_results["conditions"]] == [
        row["test"]["mean"] for row in local_results["conditions"]
    ]


@pytest.mark.slow
def test_a_study_started_on_one_engine_is_finished_on_the_other(local_ray, split_data, tmp_path):
    out = tmp_path / "study"
    api.experiment(split_data, out, conditions=[f"a:{QUICK}"], seeds=1, quiet=True)
    first = out / "runs" / next(iter(_stored(out))) / "result.json"
    written = first.stat().st_mtime_ns
    results = api.experiment(split_data, out, conditions=[f"a:{QUICK}"], seeds=3, engine="ray", quiet=True)
    assert results["runs_computed"] == 2 and results["conditions"][0]["runs"] == 3
    assert first.stat().st_mtime_ns == written  # the local run was kept, not recomputed
    again = api.experiment(split_data, out, conditions=[f"a:{QUICK}"], seeds=3, quiet=True)
    assert again["runs_computed"] == 0


@pytest.mark.slow
def test_ctrl_c_cancels_what_is_pending_and_keeps_finished_runs(local_ray, split_data, tmp_path, monkeypatch):
    out = tmp_path / "study"
    conditions = [f"a:{QUICK}", f"b:{QUICK},lr=0.01"]
    restore = interrupt_on_call(monkeypatch, ray_engine, "store_run", 2)
    with pytest.raises(Interrupted, match="Run the same command again"):
        api.experiment(split_data, out, conditions=conditions, seeds=2, engine="ray", quiet=True)
    assert len(_stored(out)) == 1
    restore()
    results = api.experiment(split_data, out, conditions=conditions, seeds=2, engine="ray", quiet=True)
    assert results["runs_computed"] == 3 and len(_stored(out)) == 4


def test_a_node_with_other_versions_is_named_before_any_work(local_ray):
    engine = ray_engine.RayEngine()
    driver = ray_engine._matched_versions()
    with pytest.raises(UserError, match=re.escape(f"torch {driver['torch']} (driver: 0.0.0)")):
        engine._check_nodes(local_ray, expected={**driver, "torch": "0.0.0"})
    engine._check_nodes(local_ray)  # the same node with the driver's own versions passes


def test_a_worker_with_other_versions_fails_its_task_with_a_clear_error(local_ray, split_data, tmp_path):
    # A node that joins after the check: the task itself checks, and the driver explains the error.
    expected = {**ray_engine._matched_versions(), "pasture": "0.0.0"}
    ref = ray.remote(ray_engine.remote_run).remote({"key": "x"}, expected, [], [])
    with pytest.raises(UserError, match=r"pasture \S+ \(driver: 0\.0\.0\)"):
        ray_engine.RayEngine._get(ray, ref)


def test_a_user_error_in_a_worker_reaches_the_user_as_it_is(local_ray, tmp_path):
    def fails():
        raise UserError("photos/x.jpg: cannot be read; remove it")

    with pytest.raises(UserError, match="photos/x.jpg: cannot be read"):
        ray_engine.RayEngine._get(ray, ray.remote(fails).remote())


def test_engine_options_that_do_not_fit_are_one_line_errors(split_data, tmp_path, capsys):
    cases = {
        ("--engine", "ray", "--jobs", "2"): "--jobs: applies to --engine local",
        ("--ray-address", "127.0.0.1:6379"): "--ray-address: give --engine ray too",
        ("--engine", "ray", "--ray-address", "nowhere"): "--ray-address nowhere: give auto or HOST:PORT",
        ("--threads-per-run", "2"): "--threads-per-run: applies to --engine ray",
    }
    for flags, message in cases.items():
        code = main(
            [
                "experiment",
                str(split_data),
                "--out",
                str(tmp_path / "x"),
                "--conditions",
                f"a:{QUICK}",
                "--seeds",
                "1",
                "--quiet",
                *flags,
            ]
        )
        error = capsys.readouterr().err
        assert code == 2 and message in error and "Traceback" not in error, flags
    assert not (tmp_path / "x").exists()


def test_without_the_ray_extra_the_error_names_the_install_command(split_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    code = main(
        [
            "experiment",
            str(split_data),
            "--out",
            str(tmp_path / "x"),
            "--conditions",
            f"a:{QUICK}",
            "--seeds",
            "1",
            "--engine",
            "ray",
            "--quiet",
        ]
    )
    assert code == 2 and 'pip install -e ".[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "x" / "runs").exists()


@pytest.mark.slow
def test_a_search_on_ray_proposes_and_scores_as_the_local_one(local_ray, split_data, tmp_path):
    pytest.importorskip("optuna", reason="the tune extra is not installed: pip install -e '.[tune]'")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "epochs": {"low": 1, "high": 3}}))
    start = tmp_path / "quick.json"
    start.write_text(json.dumps({"base": "scratch", "recipe": {"epochs": 2, "image_size": 16, "batch_size": 8}}))
    options = {"space": space, "recipe": str(start), "trials": 3, "folds": 2, "seeds": 1, "quiet": True}
    threads = torch.get_num_threads()  # what the local engine's single process uses
    on_ray = api.tune(split_data, tmp_path / "ray", engine="ray", threads_per_run=threads, **options)
    local = api.tune(split_data, tmp_path / "local", **options)
    assert [t["values"] for t in on_ray["trials"]] == [t["values"] for t in local["trials"]]
    assert [t["balanced"] for t in on_ray["trials"]] == [t["balanced"] for t in local["trials"]]
