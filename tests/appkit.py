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


def wait_for(client, job: str, limit: float = 600) -> dict:
    deadline = time.time() + limit
    while time.time() < deadline:
        status = client.get(f"/api/jobs/{job}").json()
        if status["state"] != "running":
            return status
        time.sleep(0.1)
    raise AssertionError("the training did not finish")


def wait_in_page(page, expression: str, limit: float = 60) -> None:
    """Until `expression` is true in the page, polled from here. Not page.wait_for_function: it polls
    inside the page by evaluating the string, which the app's CSP forbids (an EvalError whenever the
    condition was not already true at its first look, so it failed on a slower machine only)."""
    deadline = time.time() + limit
    while not page.evaluate(expression):
        assert time.time() < deadline, f"the page never got to {expression}"
        time.sleep(0.1)


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
    deadline = time.time() + 120  # a loaded 2-core machine starts it in seconds, not always in one
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def app_process(runs):
    """A real `pasture app` process on a free port serving `runs`, once it answers; yields (process,
    port, token). Stopped on the way out."""
    import re
    import subprocess
    import sys

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pasture.cli", "app", "--runs", str(runs), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()  # printed once the app is built, before it listens
        token = re.search(r"#token=(\S+)", line).group(1)
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                assert time.time() < deadline, "the app never answered"
                time.sleep(0.2)
        yield server, port, token
    finally:
        server.terminate()
        server.wait(timeout=30)


def peak_rss_kib(pid: int) -> int:
    """The peak resident memory of process `pid` so far (Linux's VmHWM)."""
    import re
    from pathlib import Path

    return int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))


def fake_camera_video(path, segments: list[tuple[str, int]], fps: int = 10, width: int = 160, height: int = 120):
    """A Y4M video for Chromium's fake camera (--use-file-for-fake-video-capture), which plays it in a
    loop: `segments` are (label, seconds) of generated photos (make_image, a new one each second).
    Cows are red and horses blue, so a test can tell from the picture which one the camera shows."""
    import numpy as np

    frames = []
    for label, seconds in segments:
        for second in range(seconds):
            rgb = np.asarray(make_image(label, 500 + second, SIZE).resize((width, height)), dtype=np.float32)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # BT.601 full range, as C420jpeg means
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            planes = [y] + [(c.reshape(height // 2, 2, width // 2, 2).mean((1, 3))) for c in (u, v)]
            frame = b"FRAME\n" + b"".join(np.clip(p, 0, 255).round().astype(np.uint8).tobytes() for p in planes)
            frames += [frame] * fps
    header = f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + b"".join(frames))
    return path


# Playwright waits 30 s by default for a click, a selector or a download: an export of the default model
# took 43 s on a loaded 2-core runner (issue 39), and the test failed on a feature that worked. Pages wait
# for the event itself (the download, the element) up to this limit instead; a test that needs less says so.
PAGE_WAIT_MS = 300_000


class PatientBrowser:
    """A Playwright browser whose pages wait up to PAGE_WAIT_MS for each event."""

    def __init__(self, browser):
        self.browser = browser

    def new_page(self, **options):
        page = self.browser.new_page(**options)
        page.set_default_timeout(PAGE_WAIT_MS)
        return page

    def __getattr__(self, name):
        return getattr(self.browser, name)


@contextmanager
def chromium_browser(camera_video=None):
    """Debian's chromium; with `camera_video` (a Y4M file), its fake camera plays that video and pages
    get the camera without a permission prompt."""
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
                *(
                    [
                        "--use-fake-device-for-media-stream",
                        "--use-fake-ui-for-media-stream",
                        f"--use-file-for-fake-video-capture={camera_video}",
                    ]
                    if camera_video
                    else []
                ),
            ],
        )
        try:
            yield PatientBrowser(browser)
        finally:
            browser.close()
