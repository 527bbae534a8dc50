"""`pasture predict RUN` on a probe run without torch (classify.probe_file, issue 42): the run's own rows
from ONNX Runtime and numpy, and the torch path whenever the fast one cannot be trusted."""

from __future__ import annotations

import sys

import pytest
from conftest import predict_without_torch, write_class_folders, write_split_data

from pasture import api
from pasture.classify import backbones, probe_file
from pasture.classify.probe_file import PROBE_FILE, probe_run_scorer
from pasture.export import onnx_runner

pytest.importorskip("onnxruntime")
SIZE = 48


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory):
    """A probe run of one member and one of two (each with its probe.npz), and photos to label; the runs
    and their backbone's graph share one cache folder."""
    root = tmp_path_factory.mktemp("probe-file")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PASTURE_CACHE_DIR", str(root / "cache"))
        data = write_split_data(root / "data")
        backbones._sessions.clear()
        api.train(data, root / "one", recipe="probe", image_size=SIZE, quiet=True)
        api.train(data, root / "two", recipe="probe", image_size=SIZE, ensemble=2, quiet=True)
    photos = write_class_folders(root / "new", {"cow": 3, "horse": 3}, size=40, start=50)
    return root, photos


@pytest.fixture(autouse=True)
def shared_cache(probe_runs, monkeypatch):
    monkeypatch.setenv("PASTURE_CACHE_DIR", str(probe_runs[0] / "cache"))


@pytest.mark.parametrize("run", ["one", "two"])
def test_a_probe_run_predicts_its_own_rows_without_torch(probe_runs, run):
    root, photos = probe_runs
    assert (root / run / PROBE_FILE).is_file()
    assert probe_run_scorer(root / run) is not None
    fast = predict_without_torch(root / run, photos)  # asserts torch was never imported
    slow = api.predict(root / run, [photos])  # LoadedRun: the checkpoint and familiarity.pt, read by torch
    assert [row["file"] for row in fast] == [row["file"] for row in slow]
    for ours, theirs in zip(fast, slow):
        assert ours["label"] == theirs["label"] and ours["familiar"] == theirs["familiar"]
        assert ours["familiarity"] == pytest.approx(theirs["familiarity"], abs=1e-6)
        for name, p in theirs["probabilities"].items():
            assert ours["probabilities"][name] == pytest.approx(p, abs=1e-5)


def test_the_csv_is_the_runs_csv(probe_runs, tmp_path, monkeypatch):
    from pasture.cli import main

    root, photos = probe_runs
    assert main(["predict", str(root / "two"), str(photos), "--csv", str(tmp_path / "fast.csv"), "--quiet"]) == 0
    monkeypatch.setattr(onnx_runner, "probe_run_scorer", lambda *args: None)  # the torch path
    assert main(["predict", str(root / "two"), str(photos), "--csv", str(tmp_path / "slow.csv"), "--quiet"]) == 0
    fast, slow = (
        [line.split(",") for line in (tmp_path / name).read_text().splitlines()] for name in ("fast.csv", "slow.csv")
    )
    assert fast[0] == slow[0] and len(fast) == len(slow) == 7
    for ours, theirs in zip(fast[1:], slow[1:]):
        assert ours[:2] == theirs[:2] and ours[-2:] == theirs[-2:]  # file, label; familiar, skipped
        assert all(abs(float(a) - float(b)) <= 2e-6 for a, b in zip(ours[2:-2], theirs[2:-2]))


@pytest.mark.parametrize("why", ["checkpoint changed", "no graph", "told torch", "no runtime", "a GPU", "no file"])
def test_the_torch_path_serves_when_the_fast_one_cannot(probe_runs, tmp_path, monkeypatch, why):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(probe_runs[0] / "one", run)
    device = "auto"
    assert probe_run_scorer(run, device) is not None  # the copy is served fast until ...
    if why == "checkpoint changed":  # a run trained again into the folder by an older pasture
        (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes() + b"\0")
    elif why == "no graph":
        monkeypatch.setenv("PASTURE_CACHE_DIR", str(tmp_path / "empty-cache"))
    elif why == "told torch":
        monkeypatch.setenv(probe_file.RUNTIME_VARIABLE, "torch")
    elif why == "no runtime":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
    elif why == "a GPU":
        device = "cuda"
    else:
        (run / PROBE_FILE).unlink()
    assert probe_run_scorer(run, device) is None


def test_runs_the_fast_path_cannot_serve_write_no_file(split_data, tmp_path):
    api.train(split_data, tmp_path / "tta", recipe="probe", image_size=SIZE, tta=True, quiet=True)
    api.train(split_data, tmp_path / "cnn", recipe="scratch", epochs=1, image_size=16, quiet=True)
    assert not (tmp_path / "tta" / PROBE_FILE).exists() and not (tmp_path / "cnn" / PROBE_FILE).exists()


def test_force_removes_the_probes_own_files(split_data, tmp_path):
    """A probe's familiarity bank and probe.npz are pasture's files: `train --force` with another recipe
    removes them, so the new run is not scored with the old run's bank (they stayed before)."""
    run = tmp_path / "run"
    api.train(split_data, run, recipe="probe", image_size=SIZE, quiet=True)
    assert (run / "familiarity.pt").is_file() and (run / PROBE_FILE).is_file()
    api.train(split_data, run, recipe="scratch", epochs=1, image_size=16, quiet=True, force=True)
    assert not (run / "familiarity.pt").exists() and not (run / PROBE_FILE).exists()
    assert api.load(run).familiarity is None
    rows = api.predict(run, [split_data / "test"])
    assert rows and "familiarity" not in rows[0]
