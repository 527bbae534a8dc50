"""The local web app: every endpoint through FastAPI's test client, bad input answered in the page while
the server keeps running, and the whole teach -> train -> test -> export path in a real browser
(Playwright driving Debian's chromium; skipped with the reason where either is missing)."""

from __future__ import annotations

import importlib.util
import re

import pytest

pytest.importorskip("fastapi", reason='the app extra is not installed (pip install -e ".[app]")')

from appkit import TOKEN, chromium_browser, client_for, live, photos, png, wait_for

from pasture.app.server import create_app


@pytest.fixture
def client(tmp_path):
    return client_for(create_app(tmp_path / "runs", max_file_bytes=200_000, token=TOKEN))


@pytest.fixture
def taught(client):
    response = client.post(
        "/api/teach",
        data={"classes": '["cow", "horse"]', "name": "first", "mode": "tiny", "epochs": "2"},
        files=photos("cow", 6) + photos("horse", 6),
    )
    assert response.status_code == 200, response.text
    assert response.json()["run"] == "first" and response.json()["epochs"] == 2
    status = wait_for(client, response.json()["job"])
    assert status["state"] == "done", status
    return status


def test_teach_trains_and_reports_accuracy_with_its_interval(client, taught):
    metrics = taught["metrics"]
    assert metrics["n_test"] == 6 and metrics["classes"] == ["cow", "horse"]
    correct = sum(metrics["confusion"][i][i] for i in range(2))
    assert metrics["test_accuracy"] == pytest.approx(correct / 6)
    # The Wilson interval of correct/6, written out here (the score interval with z = 1.96): the page's
    # "95% CI" is that interval, not any pair of numbers around the estimate.
    z, p = 1.959964, correct / 6
    centre, half = (p + z * z / 12) / (1 + z * z / 6), z * (p * (1 - p) / 6 + z * z / 144) ** 0.5 / (1 + z * z / 6)
    assert metrics["test_ci95"] == pytest.approx([max(0.0, centre - half), min(1.0, centre + half)], abs=1e-4)
    assert taught["epoch"] == 2


def test_runs_details_files_predict_and_export(client, taught, tmp_path):
    [row] = client.get("/api/runs").json()
    assert row["name"] == "first" and row["finished"] and row["n_test"] == 6 and not row["training"]
    details = client.get("/api/runs/first").json()
    assert "Test accuracy" in details["card"]
    assert client.get("/api/runs/first/files/curves.png").headers["content-type"] == "image/png"
    assert client.get("/api/runs/first/files/config.json").status_code == 404  # only what the app shows
    response = client.post(
        "/api/runs/first/predict",
        files=[
            ("photos", ("new.png", png("cow", 900), "image/png")),
            ("photos", ("notes.txt", b"hello", "text/plain")),
        ],
    )
    good, bad = response.json()
    assert good["file"] == "new.png" and good["label"] in ("cow", "horse")
    if importlib.util.find_spec("captum") is not None:  # with the explain extra: where the model looked
        heatmap = client.get(good["heatmap"])
        assert heatmap.status_code == 200 and heatmap.headers["content-type"] == "image/png"
        assert client.get("/api/explanations/../../first/files").status_code == 404
    assert sum(good["probabilities"].values()) == pytest.approx(1.0)
    assert bad["file"] == "notes.txt" and "not an image" in bad["error"]
    assert client.get("/api/runs/first/files/model.onnx").status_code == 404  # not exported yet
    made = client.post("/api/runs/first/export")
    assert made.status_code == 200 and made.json()["file"] == "/api/runs/first/files/model.onnx"
    onnx = client.get(made.json()["file"])
    assert onnx.status_code == 200 and len(onnx.content) == made.json()["bytes"] > 10_000
    assert 'filename="first.onnx"' in onnx.headers["content-disposition"]
    assert (tmp_path / "runs" / "first" / "model.onnx").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [".explanations", "first"]  # no staging left


LONG = "x" * 300


@pytest.mark.parametrize(
    "fields,files,fragment",
    [
        ({"classes": '["cow"]'}, photos("cow", 4), "at least two classes"),
        ({"classes": '["cow", "horse"]'}, photos("cow", 4), "class horse: give at least 2 photos"),
        (
            {"classes": '["cow", "horse"]'},
            photos("cow", 3) + [("class_1", ("a.txt", b"text", "text/plain"))] * 2,
            "a.txt: is not an image",
        ),
        (
            {"classes": '["cow", "horse"]'},
            photos("cow", 3) + [("class_1", ("big.png", b"0" * 300_000, "image/png"))] * 2,
            "big.png: above the 195 KiB limit per photo",
        ),
        (
            {"classes": '["../x", "horse"]'},
            photos("cow", 3) + photos("horse", 3),
            "class name '../x' holds a path separator",
        ),
        (
            {"classes": '["cow", "horse"]', "name": "../../escape"},
            photos("cow", 3) + photos("horse", 3),
            "run name '../../escape'",
        ),
        ({"classes": "cow, horse"}, photos("cow", 3) + photos("horse", 3), "classes: not a JSON list"),
        ({"classes": f'["{LONG}", "horse"]'}, photos("cow", 3) + photos("horse", 3), "longer than 100 characters"),
        (
            {"classes": '["cow", "horse"]', "name": LONG},
            photos("cow", 3) + photos("horse", 3),
            "longer than 100 characters",
        ),
        (
            {"classes": '["cow", "horse"]', "name": ".data-x"},
            photos("cow", 3) + photos("horse", 3),
            "cannot start with a dot",
        ),
        (
            {"classes": '["cow", "horse"]', "epochs": "abc"},
            photos("cow", 3) + photos("horse", 3),
            "epochs 'abc': give a whole number from 1 to 1000",
        ),
        ({"classes": '["cow", "horse"]', "epochs": "0"}, photos("cow", 3) + photos("horse", 3), "epochs '0'"),
        ({"classes": '["cow", "horse"]', "epochs": "100000"}, photos("cow", 3) + photos("horse", 3), "epochs '100000'"),
        (
            {"classes": '["cow", "horse"]', "mode": "fast"},
            photos("cow", 3) + photos("horse", 3),
            "choose accurate or tiny",
        ),
        (
            {"classes": '["cow", "horse"]', "mode": "accurate", "epochs": "3"},
            photos("cow", 3) + photos("horse", 3),
            "the accurate mode has none",
        ),
    ],
)
def test_bad_input_is_a_message_and_the_server_keeps_running(client, tmp_path, fields, files, fragment):
    response = client.post("/api/teach", data={"mode": "tiny", "epochs": "1", **fields}, files=files)
    assert response.status_code in (400, 413) and fragment in response.json()["error"], response.json()
    assert "\n" not in response.json()["error"]  # one line
    assert client.get("/api/runs").status_code == 200  # still serving
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [".explanations"]  # nothing half-written
    assert not (tmp_path / "escape").exists()


def test_a_long_upload_name_is_shortened_not_a_crash(client, tmp_path):
    long_name = "a" * 246 + ".png"  # 250 bytes: valid on disk, but the staging prefix used to push it over 255
    files = [("class_0", (long_name, png("cow", i), "image/png")) for i in range(3)] + photos("horse", 3)
    response = client.post(
        "/api/teach", data={"classes": '["cow", "horse"]', "name": "long", "mode": "tiny", "epochs": "1"}, files=files
    )
    assert response.status_code == 200, response.text
    assert wait_for(client, response.json()["job"])["state"] == "done"


def test_a_run_outside_the_runs_folder_is_refused(client):
    for name in ("..", "%2e%2e", "..%2Fetc"):
        response = client.get(f"/api/runs/{name}")
        assert response.status_code in (400, 404)
    assert client.get("/api/runs/nothing").status_code == 404


def test_the_page_needs_no_internet_and_holds_no_inline_script(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>pasture</title>" in page.text
    script = client.get("/static/page.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    for text in (page.text, script.text, client.get("/static/page.css").text):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text  # nothing fetched
    assert "<script>" not in page.text and not re.search(r"\son[a-z]+\s*=", page.text)  # no inline code at all
    assert "innerHTML" not in script.text and "onclick" not in script.text  # data never becomes markup
    assert client.get("/api/jobs/unknown").status_code == 404
    assert client.get("/static/../server.py").status_code == 404


def test_a_damaged_run_folder_is_a_message_not_a_crash(client, taught, tmp_path):
    (tmp_path / "runs" / "first" / "config.json").write_text("{ not json")
    assert client.get("/api/runs").json() == []  # left out of the list
    response = client.get("/api/runs/first")
    assert response.status_code == 400 and "config.json" in response.json()["error"]


# ---------------------------------------------------------------------------------------------- browser


@pytest.mark.slow
def test_teach_train_test_export_in_a_real_browser(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for label in ("cow", "horse"):
        for index in range(6):
            (folder / f"{label}_{index}.png").write_bytes(png(label, index))
    shots = tmp_path / "screenshots"
    with live(create_app(tmp_path / "runs", token=TOKEN)) as base, chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(f"{base}/?token={TOKEN}")
        assert page.url == f"{base}/"  # the token went into a cookie and out of the address bar
        names, inputs = page.locator(".class-name"), page.locator(".class-files")
        names.nth(0).fill("cow")
        names.nth(1).fill("horse")
        inputs.nth(0).set_input_files([str(p) for p in sorted(folder.glob("cow_*"))])
        inputs.nth(1).set_input_files([str(p) for p in sorted(folder.glob("horse_*"))])
        page.fill("#run-name", "browser-run")
        assert page.locator("input[name=mode]:checked").get_attribute("value") == "accurate"  # the default
        assert page.locator("#epochs").is_disabled()  # the accurate mode has no epochs
        page.click("#train")
        page.wait_for_selector("text=Test accuracy", timeout=120_000)
        assert "95% CI" in page.inner_text("#teach-result") and "n=6" in page.inner_text("#teach-result")
        page.screenshot(path=str(shots / "teach.png"), full_page=True)
        page.click("#tab-test")
        page.wait_for_selector("#test-run option", state="attached")
        page.set_input_files("#test-files", [str(folder / "cow_0.png"), str(folder / "horse_0.png")])
        page.click("#predict")
        page.wait_for_selector("td.label", timeout=120_000)  # two backbones, Grad-CAM and occlusion per photo
        assert page.locator("td.label").count() == 2
        page.wait_for_selector("img.heatmap")  # where the model looked, when captum is installed (it is in dev)
        page.screenshot(path=str(shots / "test.png"), full_page=True)
        page.click("#tab-runs")
        page.wait_for_selector("#runs-table >> text=browser-run")
        with page.expect_download() as download:
            page.click("#runs-table button.onnx")
        target = tmp_path / "downloaded.onnx"
        download.value.save_as(str(target))
        assert target.stat().st_size > 10_000 and download.value.suggested_filename == "browser-run.onnx"
        page.click("#runs-table button.open")
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
        assert not [text for text in errors if "Content Security Policy" in text]  # the page obeys its own CSP
    assert all((shots / name).stat().st_size > 5_000 for name in ("teach.png", "test.png", "runs.png"))
