"""The app's Improve page (issue 43): a finished probe run keeps its photos, Ask answers with the new
photos to label (served back to the page), Adapt makes the adapted run as a job with what changed, bad
input is a message before any work, and the whole flow in a real browser."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason='the app extra is not installed (pip install -e ".[app]")')

from appkit import TOKEN, chromium_browser, client_for, live, photos, png, wait_for, wait_in_page

from pasture.app.server import create_app


def camera_photos(count: int = 6) -> list[tuple]:
    """A new camera's photos of both classes, sent as the page sends them (one field, any names)."""
    return [
        ("photos", (f"frame_{label}_{i}.png", png(label, i), "image/png"))
        for label in ("cow", "horse")
        for i in range(20, 20 + count // 2)
    ]


def form(fields: dict) -> dict:
    """Text fields sent as multipart/form-data, as the page's FormData sends them."""
    return {key: (None, value) for key, value in fields.items()}


@pytest.fixture(scope="module")
def app_runs(tmp_path_factory):
    """A live app's client and runs folder with one finished probe run, "first", taught from the page."""
    runs = tmp_path_factory.mktemp("improve") / "runs"
    client = client_for(create_app(runs, token=TOKEN))
    response = client.post(
        "/api/teach",
        data={"classes": '["cow", "horse"]', "name": "first", "mode": "probe"},
        files=photos("cow", 6) + photos("horse", 6),
    )
    assert response.status_code == 200, response.text
    assert wait_for(client, response.json()["job"])["state"] == "done"
    return client, runs


def test_a_finished_run_keeps_its_photos_for_improve(app_runs):
    client, runs = app_runs
    assert sorted(p.name for p in (runs / ".data-first" / "data").iterdir()) == ["cow", "horse"]
    [row] = client.get("/api/runs").json()
    assert row["adaptable"] and row["finished"] and not row["resumable"]


def test_ask_then_adapt_makes_a_new_run(app_runs):
    client, runs = app_runs
    asked = client.post("/api/runs/first/ask", data={"k": "3"}, files=camera_photos(6))
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    assert answer["n"] == 6 and answer["classes"] == ["cow", "horse"] and len(answer["rows"]) == 3
    assert sum(answer["estimated_shares"].values()) == pytest.approx(1.0)
    for row in answer["rows"]:
        assert row["guess"] in ("cow", "horse") and 0.5 <= row["confidence"] <= 1.0 and row["label"] == ""
        shown = client.get(row["photo"])  # the page shows each photo to label from the server's copy
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    first = answer["rows"][0]["file"]
    truth = "cow" if "cow" in first else "horse"
    started = client.post(
        "/api/runs/first/adapt",
        files=form({"target": answer["target"], "name": "first-new-camera", "labels": json.dumps({first: truth})}),
    )
    assert started.status_code == 200, started.text
    status = wait_for(client, started.json()["job"])
    assert status["state"] == "done", status
    adapted = status["adapted"]
    assert adapted["n"] == 6 and adapted["labelled"] == 1 and not adapted["kept_original"]
    assert 0.0 <= adapted["changed"] <= 1.0 and set(adapted["shares_after"]) == {"cow", "horse"}
    assert status["metrics"]["n_test"] > 0 and len(status["metrics"]["test_ci95"]) == 2
    config = json.loads((runs / "first-new-camera" / "config.json").read_text())
    assert config["adapted"]["labelled"] == 1 and config["adapted"]["n"] == 6
    names = [row["name"] for row in client.get("/api/runs").json()]
    assert names == ["first", "first-new-camera"]
    # Check: both runs on labelled photos of the new camera that neither saw, paired
    check = client.post(
        "/api/runs/first/check",
        files=[
            *form({"other": "first-new-camera"}).items(),
            *photos("cow", 3, start=40),
            *photos("horse", 3, start=40),
        ],
    )
    assert check.status_code == 200, check.text
    result = check.json()
    assert result["n"] == 6 and [row["run"] for row in result["runs"]] == ["first", "first-new-camera"]
    for row in result["runs"]:
        assert row["ci95"][0] <= row["accuracy"] <= row["ci95"][1] and (row["accuracy"] * 6) % 1 == pytest.approx(0)
    before, after = (row["accuracy"] for row in result["runs"])
    assert after - before == pytest.approx((result["gained"] - result["lost"]) / 6)
    assert 0 < result["p_value"] <= 1
    empty = client.post("/api/runs/first/check", files=form({"other": "first-new-camera"}))
    assert empty.status_code == 400 and "at least one class" in empty.json()["error"]
    # a run of that name exists now: refused before any work
    again = client.post("/api/runs/first/adapt", files=form({"target": answer["target"], "name": "first-new-camera"}))
    assert again.status_code == 400 and "exists" in again.json()["error"]


@pytest.mark.parametrize(
    "fields, status, fragment",
    [
        ({"target": ".target-1-nope"}, 404, "drop them again"),
        ({"target": "../first"}, 404, "drop them again"),
        ({"labels": '{"a.png": "sheep"}'}, 400, "'sheep' is not a class of the run (cow, horse)"),
        ({"labels": '{"nowhere.png": "cow"}'}, 400, "no photo 'nowhere.png' in this batch"),
        ({"labels": '{"../../first/config.json": "cow"}'}, 400, "outside"),
        ({"labels": "[1, 2]"}, 400, "send {photo: class}"),
        ({"labels": "{"}, 400, "not JSON"),
        ({"name": "../escape"}, 400, "run name"),
    ],
)
def test_bad_adapt_requests_are_one_line_messages(app_runs, fields, status, fragment):
    client, runs = app_runs
    answer = client.post("/api/runs/first/ask", data={"k": "2"}, files=camera_photos(4)).json()
    fields_sent = {"target": answer["target"], "name": "never", **fields}
    if fields.get("labels") == '{"a.png": "sheep"}':  # a photo of the batch, a class the run does not have
        fields_sent["labels"] = json.dumps({answer["rows"][0]["file"]: "sheep"})
    response = client.post("/api/runs/first/adapt", files=form(fields_sent))
    assert response.status_code == status and fragment in response.json()["error"], response.text
    assert not (runs / "never").exists() and str(runs) not in response.json()["error"]


def test_ask_refuses_what_it_cannot_use(app_runs, tmp_path):
    client, runs = app_runs
    one = client.post("/api/runs/first/ask", files=camera_photos(2)[:1])
    assert one.status_code == 400 and "at least 2 photos" in one.json()["error"]
    broken = client.post(
        "/api/runs/first/ask", files=[*camera_photos(2), ("photos", ("bad.png", b"not a png", "image/png"))]
    )
    assert broken.status_code == 400 and "bad.png" in broken.json()["error"]
    too_many = client.post("/api/runs/first/ask", data={"k": "500"}, files=camera_photos(2))
    assert too_many.status_code == 400 and "from 1 to 50" in too_many.json()["error"]
    assert client.post("/api/runs/nothing/ask", files=camera_photos(2)).status_code == 404
    assert not list(runs.glob(".target-*/photos/*/bad.png"))  # a refused batch is not kept
    assert client.get("/api/targets/.target-1-x/photos/00000/a.png").status_code == 404


def test_a_scratch_run_is_not_offered_and_refused(tmp_path):
    client = client_for(create_app(tmp_path / "runs", token=TOKEN))
    response = client.post(
        "/api/teach",
        data={"classes": '["cow", "horse"]', "name": "small", "mode": "scratch", "epochs": "1"},
        files=photos("cow", 4) + photos("horse", 4),
    )
    assert wait_for(client, response.json()["job"])["state"] == "done"
    assert client.get("/api/runs").json()[0]["adaptable"] is False
    refused = client.post("/api/runs/small/ask", files=camera_photos(4))
    assert refused.status_code == 400 and "probe and finetune runs" in refused.json()["error"]
    assert not list((tmp_path / "runs").glob(".target-*"))


@pytest.mark.slow
def test_improve_in_a_real_browser(app_runs, tmp_path):
    client, runs = app_runs
    folder = tmp_path / "camera"
    folder.mkdir()
    for _, (file, data, _) in camera_photos(8):
        (folder / file).write_bytes(data)
    with live(create_app(runs, token=TOKEN)) as base, chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(f"{base}/#token={TOKEN}")
        page.click("#tab-improve")
        page.wait_for_selector("#improve-run option[value=first]", state="attached")
        page.set_input_files("#improve-files", [str(path) for path in sorted(folder.iterdir())])
        assert page.inner_text("#improve-count") == "8 photos"
        page.fill("#improve-k", "4")
        page.click("#improve-ask")
        page.wait_for_selector(".ask-card")
        assert page.locator(".ask-card").count() == 4
        wait_in_page(page, "[...document.querySelectorAll('.ask-card img')].every(i => i.naturalWidth > 0)")
        assert "would call" in page.inner_text("#improve-message")
        page.locator(".ask-card").nth(0).focus()
        page.keyboard.press("2")  # the second class, and the focus moves on to the next card
        assert page.locator(".ask-card").nth(0).locator("button[aria-pressed=true]").inner_text() == "2 horse"
        assert page.evaluate("document.activeElement === document.querySelectorAll('.ask-card')[1]")
        page.locator(".ask-card").nth(2).locator("button.class-choice").nth(0).click()
        assert page.inner_text("#improve-go") == "Adapt (2 labelled)"
        page.fill("#improve-name", "browser-adapted")
        page.click("#improve-go")
        page.wait_for_selector("text=changed label", timeout=300_000)
        assert "(2 labelled by you)" in page.inner_text("#improve-result")
        assert page.locator("table.shares tr").count() == 3 and "95% CI" in page.inner_text("#improve-result")
        page.screenshot(path=str(tmp_path / "improve.png"), full_page=True)
        drops = page.locator(".check-drop input[type=file]")
        drops.nth(0).set_input_files([str(path) for path in sorted(folder.glob("frame_cow_*"))])
        drops.nth(1).set_input_files([str(path) for path in sorted(folder.glob("frame_horse_*"))])
        page.click("button.check-go")
        page.wait_for_selector("table.check")
        assert page.locator("table.check tr").count() == 3 and "n=8 photos" in page.inner_text(".check-result")
        assert "McNemar" in page.inner_text(".check-result")
        page.click("#tab-runs")
        page.wait_for_selector("#runs-table >> text=browser-adapted")
        assert not [text for text in errors if "Content Security Policy" in text]
    assert (tmp_path / "improve.png").stat().st_size > 5_000


def test_a_finetuned_run_is_offered_asked_and_adapted(tmp_path):
    """A fine-tuned run (trained with the CLI into the app's runs folder) is adaptable: Ask ranks the new
    photos by its own probabilities, Adapt trains it again as a job (classify.self_training)."""
    from conftest import write_split_data

    from pasture import api
    from pasture.classify import self_training
    from pasture.classify.adapt import guard

    runs = tmp_path / "runs"
    api.train(
        write_split_data(tmp_path / "data"), runs / "tuned", recipe="finetune", image_size=32, epochs=1, quiet=True
    )
    client = client_for(create_app(runs, token=TOKEN))
    [row] = client.get("/api/runs").json()
    assert row["adaptable"] and row["recipe"] == "finetune"
    asked = client.post("/api/runs/tuned/ask", data={"k": "2"}, files=camera_photos(4))
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    assert answer["n"] == 4 and len(answer["rows"]) == 2
    with pytest.MonkeyPatch.context() as patch:  # every new photo sure, and a guard that lets it through
        patch.setattr(self_training, "CONFIDENT", 0.0)
        patch.setattr(self_training, "guard", lambda before, after, classes: guard(before, before, classes))
        started = client.post(
            "/api/runs/tuned/adapt", files=form({"target": answer["target"], "name": "tuned-new", "labels": "{}"})
        )
        assert started.status_code == 200, started.text
        status = wait_for(client, started.json()["job"])
    assert status["state"] == "done", status
    assert not status["adapted"]["kept_original"] and status["adapted"]["n"] == 4
    config = json.loads((runs / "tuned-new" / "config.json").read_text())
    assert config["adapted"]["method"] == self_training.METHOD and config["recipe"]["pretrained"] == "finetune"
