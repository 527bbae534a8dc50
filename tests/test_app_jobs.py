"""The app's work: a training can be cancelled and resumed or deleted, the server answers while a Test
or a training runs, and no photo of the user's is left behind on any path (refused, failed, killed) but
beside its run, which takes them when it is deleted."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='the app extra is not installed (pip install -e ".[app]")')
import httpx
from appkit import TOKEN, client_for, live, photos, png, teach, wait_for

from pasture import api
from pasture.app import jobs as jobs_module
from pasture.app import live as live_module
from pasture.app.live import LiveModel
from pasture.app.server import create_app
from pasture.classify import fit


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def client(runs):
    return client_for(create_app(runs, token=TOKEN))


def kept(runs: Path) -> list[str]:
    return sorted(path.name for path in runs.iterdir() if path.name != ".explanations")


@pytest.fixture
def paused_after_first_epoch(monkeypatch):
    """The training waits after its first epoch's checkpoint until the test says go: a cancel then lands
    at a known point, however fast or slow the machine is."""
    go, reached = threading.Event(), threading.Event()
    real = fit._save_checkpoint

    def save_then_wait(*args, **kwargs):
        real(*args, **kwargs)
        reached.set()
        go.wait(timeout=60)

    monkeypatch.setattr(fit, "_save_checkpoint", save_then_wait)
    return reached, go


def test_a_cancelled_training_stops_keeps_its_checkpoint_and_resumes(client, runs, paused_after_first_epoch):
    reached, go = paused_after_first_epoch
    job = teach(client, "slow", epochs=5)
    assert reached.wait(timeout=60)
    cancelled = client.post(f"/api/jobs/{job['job']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["stopping"]
    go.set()
    status = wait_for(client, job["job"])
    assert status["state"] == "cancelled" and "resume" in status["error"]
    assert (runs / "slow" / "checkpoint.pt").is_file() and not (runs / "slow" / "metrics.json").exists()
    assert status["epoch"] == 1  # it stopped at the next step, not at the end
    [row] = client.get("/api/runs").json()
    assert row["name"] == "slow" and not row["finished"] and row["resumable"] and not row["training"]
    assert kept(runs) == [".data-slow", "slow"]  # the photos stay for the resume

    resumed = client.post("/api/runs/slow/resume")
    assert resumed.status_code == 200, resumed.text
    status = wait_for(client, resumed.json()["job"])
    assert status["state"] == "done" and status["epoch"] == 5
    assert kept(runs) == [".data-slow", "slow"]  # finished: the photos stay with the run (Improve reads them)
    assert client.post("/api/runs/slow/resume").status_code == 400  # already finished


def test_an_unfinished_run_can_be_deleted_with_its_photos(client, runs, paused_after_first_epoch):
    reached, go = paused_after_first_epoch
    job = teach(client, "doomed", epochs=5)
    assert reached.wait(timeout=60)
    assert client.delete("/api/runs/doomed").status_code == 409  # training now
    client.post(f"/api/jobs/{job['job']}/cancel")
    go.set()
    assert wait_for(client, job["job"])["state"] == "cancelled"
    assert client.delete("/api/runs/doomed").status_code == 200
    assert kept(runs) == [] and client.get("/api/runs").json() == []
    assert client.delete("/api/runs/doomed").status_code == 404


def test_a_run_trained_elsewhere_cannot_be_resumed_from_the_app(client, runs, split_data):
    api.train(split_data, runs / "cli-run", recipe="scratch", epochs=1, quiet=True)
    (runs / "cli-run" / "metrics.json").unlink()  # as if interrupted
    response = client.post("/api/runs/cli-run/resume")
    assert response.status_code == 400 and "pasture train DATA --out RUN --resume" in response.json()["error"]


def test_a_teach_refused_while_training_stores_nothing(client, runs, paused_after_first_epoch):
    reached, go = paused_after_first_epoch
    job = teach(client, "first", epochs=3)
    assert reached.wait(timeout=60)
    response = client.post(
        "/api/teach",
        data={"classes": '["cow", "horse"]', "name": "second", "mode": "tiny"},
        files=photos("cow", 3) + photos("horse", 3),
    )
    assert response.status_code == 409 and "a training is running (first)" in response.json()["error"]
    assert kept(runs) == [".data-first", "first"]  # nothing of the refused teach
    go.set()
    assert wait_for(client, job["job"])["state"] == "done"
    assert kept(runs) == [".data-first", "first"]  # the finished run's photos, and only them
    assert client.delete("/api/runs/first").status_code == 200
    assert kept(runs) == []  # deleted with their run


def test_a_failed_training_leaves_no_photos(client, runs, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(api, "train", broken)
    status = wait_for(client, teach(client, "bad")["job"])
    assert status["state"] == "error" and "RuntimeError: a bug" in status["error"]
    assert kept(runs) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_start_up_removes_what_a_killed_app_left_and_nothing_else(runs, split_data):
    runs.mkdir()
    dead, alive = _dead_pid(), os.getppid()
    for name in (
        f".upload-{dead}-abc",
        f".predict-{dead}-abc",
        f".target-{dead}-abc",
        ".upload-old",
        f".upload-{alive}-live",
        ".data-gone",
        ".data-finished",
        ".data-unfinished",
        ".data-live",
    ):
        (runs / name / "data").mkdir(parents=True)
        (runs / name / "data" / "photo.png").write_bytes(png("cow", 0))
    (runs / ".data-live" / "owner.pid").write_text(f"{alive}\n")
    api.train(split_data, runs / "finished", recipe="scratch", epochs=1, quiet=True)
    api.train(split_data, runs / "unfinished", recipe="scratch", epochs=1, quiet=True)
    (runs / "unfinished" / "metrics.json").unlink()
    (runs / "my-notes").mkdir()  # the user's own folder
    create_app(runs, token=TOKEN)
    assert kept(runs) == [
        ".data-finished",  # a finished run's photos stay with it (Improve and export's check read them)
        ".data-live",
        ".data-unfinished",
        f".upload-{alive}-live",
        "finished",
        "my-notes",
        "unfinished",
    ]


def test_the_app_answers_while_a_test_runs(runs, split_data, monkeypatch):
    """Labelling photos runs in a worker thread: with it on the event loop (before), every other request
    waited for the whole Test (24.9 s for 100 photos)."""
    api.train(split_data, runs / "done", recipe="scratch", epochs=1, quiet=True)
    entered, release = threading.Event(), threading.Event()
    real = LiveModel.label_photos

    def slow_labels(*args, **kwargs):
        entered.set()
        release.wait(timeout=60)
        return real(*args, **kwargs)

    monkeypatch.setattr(LiveModel, "label_photos", slow_labels)
    headers = {"X-Pasture-Token": TOKEN}
    with live(create_app(runs, token=TOKEN)) as base:
        answers = {}
        testing = threading.Thread(
            target=lambda: answers.update(
                test=httpx.post(
                    f"{base}/api/runs/done/predict",
                    headers=headers,
                    timeout=60,
                    files=[("photos", ("a.png", png("cow", 1), "image/png"))],
                )
            )
        )
        testing.start()
        try:
            assert entered.wait(timeout=30)
            started = time.perf_counter()
            listed = httpx.get(f"{base}/api/runs", headers=headers, timeout=10)  # while the Test is running
            assert listed.status_code == 200 and listed.json()[0]["name"] == "done"
            assert testing.is_alive()  # the Test was still running when the list came back
        finally:
            release.set()
            testing.join(timeout=60)
        assert answers["test"].status_code == 200 and answers["test"].json()[0]["label"] in ("cow", "horse")
        print(f"/api/runs answered in {1000 * (time.perf_counter() - started):.0f} ms during a Test")


def test_predict_loads_the_model_once_and_keeps_it_for_the_next_test(client, runs, monkeypatch):
    assert wait_for(client, teach(client)["job"])["state"] == "done"
    calls = []
    real = api.load
    monkeypatch.setattr(api, "load", lambda run, **kw: calls.append(run) or real(run, **kw))
    decoded = []
    real_decode = live_module.decode_array
    monkeypatch.setattr(
        live_module, "decode_array", lambda path, size: decoded.append(path.name) or real_decode(path, size)
    )
    files = [("photos", (f"p{i}.png", png("cow", 100 + i), "image/png")) for i in range(5)]
    rows = client.post("/api/runs/first/predict", files=files).json()
    assert len(calls) == 1 and [row["file"] for row in rows] == [f"p{i}.png" for i in range(5)]
    assert sorted(decoded) == [f"p{i}.png" for i in range(5)]  # each photo decoded once (it was three times)
    again = client.post("/api/runs/first/predict", files=files[:2]).json()
    assert len(calls) == 1 and len(again) == 2  # the loaded model is kept
    assert kept(runs) == [".data-first", "first"]  # no staged photos left


def test_stale_folder_names_are_the_apps_own(runs):
    assert jobs_module.staging_prefix(".upload-") == f".upload-{os.getpid()}-"


def test_the_served_app_keeps_its_long_lived_objects_out_of_full_collections():
    """A full garbage collection walked every object torch, timm and Captum made (400-500 ms with the GIL
    held, the app's longest silences); serve() freezes them once the work's imports are done."""
    import gc

    from pasture.app.server import HEAVY_MODULES, settle_heap

    gc.unfreeze()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 100_000  # torch alone holds more
        assert all(name in sys.modules for name in HEAVY_MODULES if importlib.util.find_spec(name.split(".")[0]))
    finally:
        gc.unfreeze()
