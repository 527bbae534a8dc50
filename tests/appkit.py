"""What the app's tests share: generated photos, a test client that is the user's own page (right Host,
the launch token), a live uvicorn server, and Debian's chromium through Playwright."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from conftest import make_image

SIZE = 32  # px of the generated photos
TOKEN = "test-launch-token"
HOST = "127.0.0.1:7860"


def png(label: str, index: int) -> bytes:
    buffer = io.BytesIO()
    make_image(label, index, SIZE).save(buffer, format="PNG")
    return buffer.getvalue()


def photos(label: str, count: int, start: int = 0) -> list[tuple]:
    return [
        (f"class_{0 if label == 'cow' else 1}", (f"{label}_{i}.png", png(label, i), "image/png"))
        for i in range(start, start + count)
    ]


def client_for(app, token: str | None = TOKEN):
    """A TestClient that is the user's page: Host 127.0.0.1:7860 and the token in its header."""
    from fastapi.testclient import TestClient

    headers = {"X-Pasture-Token": token} if token else {}
    return TestClient(app, base_url=f"http://{HOST}", headers=headers)


def wait_for(client, job: str, limit: float = 120) -> dict:
    deadline = time.time() + limit
    while time.time() < deadline:
        status = client.get(f"/api/jobs/{job}").json()
        if status["state"] != "running":
            return status
        time.sleep(0.1)
    raise AssertionError("the training did not finish")


def teach(client, name: str = "first", epochs: int = 2, mode: str = "tiny") -> dict:
    response = client.post(
        "/api/teach",
        data={"classes": '["cow", "horse"]', "name": name, "mode": mode, "epochs": str(epochs)},
        files=photos("cow", 6) + photos("horse", 6),
    )
    assert response.status_code == 200, response.text
    return response.json()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def live(app):
    """`app` served by uvicorn on a free port of 127.0.0.1 in a thread; yields its base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium_browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()
