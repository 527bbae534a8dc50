"""The local web app: every endpoint through FastAPI's test client, bad input answered in the page while
the server keeps running, and the whole teach -> train -> test -> export path in a real browser
(Playwright driving Debian's chromium; skipped with the reason where either is missing)."""

from __future__ import annotations

import importlib.util
import io
import shutil
import socket
import threading
import time

import pytest

from conftest import make_image

pytest.importorskip("fastapi", reason='the app extra is not installed (pip install -e ".[app]")')
from fastapi.testclient import TestClient  # noqa: E402

from pasture.app.server import create_app  # noqa: E402

SIZE = 32  # px of the generated photos


def png(label: str, index: int) -> bytes:
    buffer = io.BytesIO()
    make_image(label, index, SIZE).save(buffer, format="PNG")
    return buffer.getvalue()


def photos(label: str, count: int, start: int = 0) -> list[tuple]:
    return [(f"class_{0 if label == 'cow' else 1}", (f"{label}_{i}.png", png(label, i), "image/png"))
            for i in range(start, start + count)]


def wait_for(client: TestClient, job: str, limit: float = 120) -> dict:
    deadline = time.time() + limit
    while time.time() < deadline:
        status = client.get(f"/api/jobs/{job}").json()
        if status["state"] != "running":
            return status
        time.sleep(0.2)
    raise AssertionError("the training did not finish")


@pytest.fixture
def client(tmp_path):
    return TestClient(create_app(tmp_path / "runs", max_file_bytes=200_000))


@pytest.fixture
def taught(client):
    response = client.post("/api/teach", data={"classes": '["cow", "horse"]', "name": "first", "mode": "tiny",
                                               "epochs": "2"}, files=photos("cow", 6) + photos("horse", 6))
    assert response.status_code == 200, response.text
    assert response.json()["run"] == "first" and response.json()["epochs"] == 2
    status = wait_for(client, response.json()["job"])
    assert status["state"] == "done", status
    return status


def test_teach_trains_and_reports_accuracy_with_its_interval(client, taught):
    metrics = taught["metrics"]
    assert metrics["n_test"] == 6 and metrics["classes"] == ["cow", "horse"]
    assert metrics["test_ci95"][0] <= metrics["test_accuracy"] <= metrics["test_ci95"][1]
    assert taught["epoch"] == 2


def test_runs_details_files_predict_and_export(client, taught, tmp_path):
    [row] = client.get("/api/runs").json()
    assert row["name"] == "first" and row["finished"] and row["n_test"] == 6
    details = client.get("/api/runs/first").json()
    assert "Test accuracy" in details["card"]
    assert client.get("/api/runs/first/files/curves.png").headers["content-type"] == "image/png"
    assert client.get("/api/runs/first/files/config.json").status_code == 404  # only what the app shows
    response = client.post("/api/runs/first/predict", files=[("photos", ("new.png", png("cow", 900), "image/png")),
                                                            ("photos", ("notes.txt", b"hello", "text/plain"))])
    good, bad = response.json()
    assert good["file"] == "new.png" and good["label"] in ("cow", "horse")
    if importlib.util.find_spec("captum") is not None:  # with the explain extra: where the model looked
        heatmap = client.get(good["heatmap"])
        assert heatmap.status_code == 200 and heatmap.headers["content-type"] == "image/png"
        assert client.get("/api/explanations/../../first/files").status_code == 404
    assert sum(good["probabilities"].values()) == pytest.approx(1.0)
    assert bad["file"] == "notes.txt" and "not an image" in bad["error"]
    onnx = client.get("/api/runs/first/export")
    assert onnx.status_code == 200 and len(onnx.content) > 10_000 and (tmp_path / "runs" / "first" / "model.onnx").is_file()


@pytest.mark.parametrize("fields,files,fragment", [
    ({"classes": '["cow"]'}, photos("cow", 4), "at least two classes"),
    ({"classes": '["cow", "horse"]'}, photos("cow", 4), "class horse: give at least 2 photos"),
    ({"classes": '["cow", "horse"]'}, photos("cow", 3) + [("class_1", ("a.txt", b"text", "text/plain"))] * 2,
     "a.txt: is not an image"),
    ({"classes": '["cow", "horse"]'}, photos("cow", 3) + [("class_1", ("big.png", b"0" * 300_000, "image/png"))] * 2,
     "above the 0 MB limit"),
    ({"classes": '["../x", "horse"]'}, photos("cow", 3) + photos("horse", 3), "class name '../x' holds a path separator"),
    ({"classes": '["cow", "horse"]', "name": "../../escape"}, photos("cow", 3) + photos("horse", 3),
     "run name '../../escape'"),
])
def test_bad_input_is_a_message_and_the_server_keeps_running(client, tmp_path, fields, files, fragment):
    response = client.post("/api/teach", data={"mode": "tiny", "epochs": "1", **fields}, files=files)
    assert response.status_code == 400 and fragment in response.json()["error"], response.json()
    assert client.get("/api/runs").status_code == 200  # still serving
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == []  # nothing half-written
    assert not (tmp_path / "escape").exists()


def test_a_run_outside_the_runs_folder_is_refused(client):
    for name in ("..", "%2e%2e", "..%2Fetc"):
        response = client.get(f"/api/runs/{name}")
        assert response.status_code in (400, 404)
    assert client.get("/api/runs/nothing").status_code == 404


# ---------------------------------------------------------------------------------------------- browser


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def live_server(tmp_path):
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(tmp_path / "runs"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_teach_train_test_export_in_a_real_browser(live_server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    folder = tmp_path / "photos"
    folder.mkdir()
    for label in ("cow", "horse"):
        for index in range(6):
            (folder / f"{label}_{index}.png").write_bytes(png(label, index))
    shots = tmp_path / "screenshots"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(live_server)
        names, inputs = page.locator(".class-name"), page.locator(".class-files")
        names.nth(0).fill("cow")
        names.nth(1).fill("horse")
        inputs.nth(0).set_input_files([str(p) for p in sorted(folder.glob("cow_*"))])
        inputs.nth(1).set_input_files([str(p) for p in sorted(folder.glob("horse_*"))])
        page.fill("#run-name", "browser-run")
        page.fill("#epochs", "2")
        page.click("#train")
        page.wait_for_selector("text=Test accuracy", timeout=120_000)
        assert "95% CI" in page.inner_text("#teach-result") and "n=6" in page.inner_text("#teach-result")
        page.screenshot(path=str(shots / "teach.png"), full_page=True)
        page.click("#tab-test")
        page.wait_for_selector("#test-run option", state="attached")
        page.set_input_files("#test-files", [str(folder / "cow_0.png"), str(folder / "horse_0.png")])
        page.click("#predict")
        page.wait_for_selector("td.label")
        assert page.locator("td.label").count() == 2
        page.wait_for_selector("img.heatmap")  # where the model looked, when captum is installed (it is in dev)
        page.screenshot(path=str(shots / "test.png"), full_page=True)
        page.click("#tab-runs")
        page.wait_for_selector("#runs-table >> text=browser-run")
        with page.expect_download() as download:
            page.click("#runs-table >> text=ONNX")
        target = tmp_path / "downloaded.onnx"
        download.value.save_as(str(target))
        assert target.stat().st_size > 10_000
        page.click("#runs-table >> text=open")
        page.wait_for_selector("text=Model card")
        page.screenshot(path=str(shots / "runs.png"), full_page=True)
        # bad input in the page: one class only, and the server keeps serving
        page.click("#tab-teach")
        names.nth(1).fill("")
        inputs.nth(1).set_input_files([])
        page.fill("#run-name", "second")
        page.click("#train")
        page.wait_for_selector(".message.error")
        assert "at least two classes" in page.inner_text("#teach-message")
        browser.close()
    assert all((shots / name).stat().st_size > 5_000 for name in ("teach.png", "test.png", "runs.png"))


def test_the_page_needs_no_internet(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>pasture</title>" in page.text
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text  # nothing fetched
    assert client.get("/api/jobs/unknown").status_code == 404


def test_a_damaged_run_folder_is_a_message_not_a_crash(client, taught, tmp_path):
    (tmp_path / "runs" / "first" / "config.json").write_text("{ not json")
    assert client.get("/api/runs").json() == []  # left out of the list
    response = client.get("/api/runs/first")
    assert response.status_code == 400 and "config.json" in response.json()["error"]
