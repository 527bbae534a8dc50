"""The local web app: every endpoint through FastAPI's test client, bad input answered in the page while
the server keeps running, and the whole teach -> train -> test -> export path in a real browser
(Playwright driving Debian's chromium; skipped with the reason where either is missing)."""

from __future__ import annotations

import importlib.util
import re
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason='the app extra is not installed (pip install -e ".[app]")')

from appkit import TOKEN, chromium_browser, client_for, fake_camera_video, live, photos, png, wait_for, wait_in_page
from PIL import Image

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
        # occlusion is made on demand, from the photo the Test kept, by the kept model
        made = client.post(good["occlusion"])
        assert made.status_code == 200 and client.get(made.json()["image"]).content.startswith(b"\x89PNG")
        gone = client.post("/api/runs/first/explanations/0123456789ab/0/occlusion")
        assert gone.status_code == 400 and "test the photo again" in gone.json()["error"]
    assert sum(good["probabilities"].values()) == pytest.approx(1.0)
    assert bad["file"] == "notes.txt" and "not an image" in bad["error"]
    assert client.get("/api/runs/first/files/model.onnx").status_code == 404  # not exported yet
    made = client.post("/api/runs/first/export")
    assert made.status_code == 200 and made.json()["file"] == "/api/runs/first/files/model.onnx"
    onnx = client.get(made.json()["file"])
    assert onnx.status_code == 200 and len(onnx.content) == made.json()["bytes"] > 10_000
    assert 'filename="first.onnx"' in onnx.headers["content-disposition"]
    assert (tmp_path / "runs" / "first" / "model.onnx").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        ".data-first",
        ".explanations",
        "first",
    ]  # no staging


def test_live_frames_are_labelled_by_one_loaded_model(client, taught):
    """The Test page's camera: one frame per request, answered with the label and probabilities, and the
    run loaded once for all frames (loading is most of a frame's time)."""
    live_model = client.app.app.state.live
    rows = []
    for index in range(3):
        response = client.post(
            "/api/runs/first/live", files=[("frame", ("frame.jpg", png("horse", 700 + index), "image/jpeg"))]
        )
        assert response.status_code == 200, response.text
        rows.append(response.json())
    assert live_model.loads == 1
    assert all(
        row["label"] in ("cow", "horse") and sum(row["probabilities"].values()) == pytest.approx(1.0) for row in rows
    )
    # the same answer as predict gives for the same photo
    [predicted] = client.post(
        "/api/runs/first/predict", files=[("photos", ("same.png", png("horse", 700), "image/png"))]
    ).json()
    assert predicted["probabilities"] == pytest.approx(rows[0]["probabilities"], abs=1e-5)
    two = [("frame", ("a.jpg", png("cow", 1), "image/jpeg")), ("frame", ("b.jpg", png("cow", 2), "image/jpeg"))]
    assert client.post("/api/runs/first/live", files=two).status_code in (400, 413)
    broken = client.post("/api/runs/first/live", files=[("frame", ("frame.jpg", b"not a picture", "image/jpeg"))])
    assert broken.status_code == 400 and "the camera frame" in broken.json()["error"]
    assert (
        client.post("/api/runs/nothing/live", files=[("frame", ("f.jpg", png("cow", 1), "image/jpeg"))]).status_code
        == 404
    )
    assert client.delete("/api/runs/first").status_code == 200
    assert live_model._model is None  # a deleted run's model is not kept in memory


def test_downloads_offer_each_installed_format(client, taught, tmp_path):
    import zipfile

    offered = [row["name"] for row in client.get("/api/formats").json()]
    assert offered[0] == "onnx" and set(offered) <= {"onnx", "onnx-int8", "openvino", "coreml", "tflite"}
    refused = client.post("/api/runs/first/export?format=onnx.zip")
    assert refused.status_code == 400 and "choose one of onnx" in refused.json()["error"]
    if "tflite" not in offered:  # an installed format only: the page shows no button for the others
        missing = client.post("/api/runs/first/export?format=tflite")
        assert missing.status_code == 400 and "TFLite export needs litert_torch" in missing.json()["error"]
    if "openvino" not in offered:
        pytest.skip("OpenVINO is not installed (the openvino extra)")
    made = client.post("/api/runs/first/export?format=openvino").json()
    assert made["name"] == "first.openvino.zip" and made["file"] == "/api/runs/first/files/openvino.zip"
    answer = client.get(made["file"])
    assert 'filename="first.openvino.zip"' in answer.headers["content-disposition"]
    (tmp_path / "got.zip").write_bytes(answer.content)
    with zipfile.ZipFile(tmp_path / "got.zip") as archive:
        assert sorted(archive.namelist()) == ["openvino/model.bin", "openvino/model.xml"]
    # asked again: served from the folder, not exported again
    before = (tmp_path / "runs" / "first" / "openvino.zip").stat().st_mtime_ns
    assert client.post("/api/runs/first/export?format=openvino").json()["bytes"] == made["bytes"]
    assert (tmp_path / "runs" / "first" / "openvino.zip").stat().st_mtime_ns == before


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
            "choose probe or scratch",
        ),
        (
            {"classes": '["cow", "horse"]', "mode": "accurate", "epochs": "3"},
            photos("cow", 3) + photos("horse", 3),
            "the probe recipe has none",
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
        text = text.replace('"http://www.w3.org/2000/svg"', "")  # SVG's namespace: a name, never fetched
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
        page.goto(f"{base}/#token={TOKEN}")
        assert page.url == f"{base}/"  # the token went into the tab's storage and out of the address bar
        names, inputs = page.locator(".class-name"), page.locator(".class-files")
        names.nth(0).fill("cow")
        names.nth(1).fill("horse")
        inputs.nth(0).set_input_files([str(p) for p in sorted(folder.glob("cow_*"))])
        inputs.nth(1).set_input_files([str(p) for p in sorted(folder.glob("horse_*"))])
        inputs.nth(1).set_input_files([str(folder / "cow_0.png")])  # a wrong photo, added to the horses...
        cards = page.locator(".card")
        assert cards.nth(1).locator(".thumb img").count() == 7 and "7 photos" in cards.nth(1).inner_text()
        cards.nth(1).locator(".thumb button.remove").nth(6).click()  # ...and removed with a click
        assert cards.nth(1).locator(".thumb img").count() == 6 and "6 photos" in cards.nth(1).inner_text()
        page.fill("#run-name", "browser-run")
        assert page.locator("input[name=mode]:checked").get_attribute("value") == "probe"  # the default recipe
        assert page.locator("#epochs").is_disabled()  # a probe has no epochs
        page.click("#train")
        page.wait_for_selector("text=Test accuracy")
        assert "95% CI" in page.inner_text("#teach-result") and "n=6" in page.inner_text("#teach-result")
        page.screenshot(path=str(shots / "teach.png"), full_page=True)
        page.click("#tab-test")
        page.wait_for_selector("#test-run option", state="attached")
        checker = np.kron(np.indices((6, 6)).sum(0) % 2, np.ones((8, 8))) * 255  # none of the classes
        Image.fromarray(np.stack([checker] * 3, -1).astype(np.uint8)).save(folder / "checker.png")
        page.set_input_files(
            "#test-files", [str(folder / name) for name in ("cow_0.png", "horse_0.png", "checker.png")]
        )
        assert page.inner_text("#test-count") == "cow_0.png, horse_0.png, checker.png"
        page.click("#predict")
        page.wait_for_selector("article.result .label")  # the first photo's card shows before the others are done
        page.wait_for_selector("text=3 of 3 photos labelled")  # one request a photo, with a count
        assert page.locator("article.result .label").count() == 3
        assert page.locator("article.result .prob").count() == 6  # a bar per class on each card
        assert page.locator(".unfamiliar").count() == 1  # the checkerboard, and only it
        flagged = page.locator("article.result", has=page.locator(".unfamiliar"))
        assert "unlike anything it was taught" in flagged.inner_text() and "checker.png" in flagged.inner_text()
        # beside each photo, the training photos the model compares it with, as thumbnails
        assert page.locator(".result .nearest").count() == 3 and page.locator("figure.near").count() == 9
        wait_in_page(page, "[...document.querySelectorAll('figure.near img')].every(i => i.naturalWidth > 0)")
        assert "distance" in page.locator(".result .nearest").first.inner_text()
        page.wait_for_selector("img.heatmap")  # where the model looked, when captum is installed (it is in dev)
        page.locator("button.occlude").first.click()  # occlusion on demand
        page.wait_for_selector("img.occlusion")
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
        # the card rendered as HTML (headings and tables, not Markdown in a monospace block), and the
        # run's charts drawn in the page as SVG: the C search and the per-class accuracy
        assert page.locator("#run-details .model-card h2").count() >= 5
        assert "## " not in page.inner_text("#run-details .model-card")
        assert page.locator("#run-details svg.chart").count() == 2
        assert "chosen C" in page.inner_text("#run-details")
        assert page.locator("#run-details table.confusion td").count() == 4
        page.screenshot(path=str(shots / "runs.png"), full_page=True)
        # bad input in the page: one class only, and the server keeps serving
        page.click("#tab-teach")
        page.locator(".card button.remove-class").nth(1).click()
        assert page.locator(".card").count() == 1
        page.fill("#run-name", "second")
        page.click("#train")
        page.wait_for_selector(".message.error")
        assert "at least two classes" in page.inner_text("#teach-message")
        assert not [text for text in errors if "Content Security Policy" in text]  # the page obeys its own CSP
    assert all((shots / name).stat().st_size > 5_000 for name in ("teach.png", "test.png", "runs.png"))


def _shown_colour(page, video: str) -> str:
    """ "cow" (red) or "horse" (blue): what the fake camera shows now in the <video> `video`."""
    return page.evaluate(
        """video => {
            const v = document.querySelector(video), c = document.createElement("canvas");
            c.width = 16; c.height = 12;
            const g = c.getContext("2d"); g.drawImage(v, 0, 0, 16, 12);
            const d = g.getImageData(0, 0, 16, 12).data;
            let r = 0, b = 0;
            for (let i = 0; i < d.length; i += 4) { r += d[i]; b += d[i + 2]; }
            return r > b ? "cow" : "horse";
        }""",
        video,
    )


def _wait_until(condition, limit: float = 120) -> None:
    """Poll `condition` (page.wait_for_function would evaluate a string: the page's CSP forbids eval)."""
    deadline = time.time() + limit
    while not condition():
        assert time.time() < deadline, "the page never got there"
        time.sleep(0.1)


def _wait_for_colour(page, video: str, label: str) -> None:
    """Until the fake camera turns to `label`: the start of its segment, so a whole segment (5 s) is left
    to record in."""
    _wait_until(lambda: _shown_colour(page, video) != label)
    _wait_until(lambda: _shown_colour(page, video) == label)


def _fits_the_width(page, width: int) -> None:
    """No sideways scrollbar: the page is no wider than the screen."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.slow
def test_camera_records_two_classes_trains_and_labels_live(tmp_path):
    """Teachable Machine's gesture in Chromium's fake camera: hold to record frames into two classes,
    train, then watch the live label follow what the camera shows (the video alternates cow and horse).
    Screenshots of each page at desktop and phone width go to the test's tmp folder."""
    video = fake_camera_video(tmp_path / "camera.y4m", [("cow", 5), ("horse", 5)])
    shots = tmp_path / "screenshots"
    served = create_app(tmp_path / "runs", token=TOKEN)
    with live(served) as base, chromium_browser(camera_video=video) as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(f"{m.text} {m.location.get('url')}") if m.type == "error" else None)
        page.goto(f"{base}/#token={TOKEN}")
        cards = page.locator(".card")
        for index, label in enumerate(("cow", "horse")):
            card = cards.nth(index)
            card.locator(".class-name").fill(label)
            card.locator("button.use-camera").click()
            card_video = f".card:nth-child({index + 1}) video"
            _wait_until(lambda v=card_video: page.evaluate("v => document.querySelector(v).videoWidth", v) > 0)
            _wait_for_colour(page, card_video, label)
            record = card.locator("button.record")
            recorded = card.locator(".thumb img")
            # held until 3 frames are in (4 a second; slower on a loaded machine), then released
            if label == "cow":  # held with the mouse
                record.hover()
                page.mouse.down()
                _wait_until(lambda recorded=recorded: recorded.count() >= 3)
                page.mouse.up()
            else:  # held with the keyboard: Space down on the focused button, then up
                record.focus()
                page.keyboard.down(" ")
                _wait_until(lambda recorded=recorded: recorded.count() >= 3)
                page.keyboard.up(" ")
            page.wait_for_timeout(100)  # a frame already being drawn may still land
            frames = recorded.count()
            page.wait_for_timeout(400)
            assert card.locator(".thumb img").count() == frames  # released: recording stopped
        page.screenshot(path=str(shots / "teach-camera.png"), full_page=True)
        page.fill("#run-name", "camera-run")
        page.click("#train")
        page.wait_for_selector("text=Test accuracy")
        page.screenshot(path=str(shots / "teach-desktop.png"), full_page=True)
        page.click("#tab-test")
        page.wait_for_selector("#test-run option", state="attached")
        page.click("#test-camera")
        page.wait_for_selector(".live-class")
        seen = set()
        deadline = time.time() + 60
        while seen != {"cow", "horse"} and time.time() < deadline:
            seen.add(page.inner_text(".live-class"))
            page.wait_for_timeout(150)
        assert seen == {"cow", "horse"}, seen  # the label changed with what the camera showed
        page.screenshot(path=str(shots / "test-desktop.png"), full_page=True)
        page.click("#test-camera-stop")
        assert page.locator("#live").is_hidden()
        page.click("#tab-runs")
        page.wait_for_selector("#runs-table >> text=camera-run")
        page.screenshot(path=str(shots / "runs-desktop.png"), full_page=True)
        # the same pages at a phone's width: no sideways scrolling
        page.set_viewport_size({"width": 390, "height": 844})
        for tab in ("teach", "test", "improve", "runs"):
            page.click(f"#tab-{tab}")
            assert page.get_attribute(f"#tab-{tab}", "aria-selected") == "true"
            _fits_the_width(page, 390)
            page.screenshot(path=str(shots / f"{tab}-phone.png"), full_page=True)
        assert not errors, errors
    assert served.app.state.live.loads == 1  # every frame was labelled by the one loaded model
