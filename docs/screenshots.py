"""The app's screenshots in the docs, taken from a real run: `python docs/screenshots.py RUNS_DIR`.

RUNS_DIR must hold a default (probe) run named cows-vs-horses trained on ../shared/data/cowhorse-dev
(`pasture train ../shared/data/cowhorse-dev --out RUNS_DIR/cows-vs-horses`). The app serves RUNS_DIR in
a thread; Debian's chromium (through Playwright) fills each page with the shared photos at 1,280 px,
at a phone's 390 px and in the dark scheme, and writes docs/app-*.png. Photos are read from
../shared/data, never copied into the repository.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from pasture.app.server import create_app

DOCS = Path(__file__).resolve().parent
SHARED = DOCS.parents[1] / "shared" / "data"
TOKEN = "screenshots"
RUN = "cows-vs-horses"


def serve(runs: Path, port: int = 7861) -> str:
    server = uvicorn.Server(
        uvicorn.Config(create_app(runs, token=TOKEN), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def photos(folder: Path, count: int) -> list[str]:
    return [str(path) for path in sorted(folder.iterdir()) if path.suffix.lower() in (".jpg", ".jpeg", ".png")][:count]


def main(runs: Path) -> None:
    base = serve(runs)
    dev = SHARED / "cowhorse-dev"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
            page.goto(f"{base}/#token={TOKEN}")
            names, inputs = page.locator(".class-name"), page.locator(".class-files")
            for index, label in enumerate(("cow", "horse")):
                names.nth(index).fill(label)
                inputs.nth(index).set_input_files(photos(dev / "train" / label, 12))
            page.fill("#run-name", "cows-vs-horses-2")
            suffix = "" if scheme == "light" else "-dark"
            page.screenshot(path=str(DOCS / f"app-teach{suffix}.png"), full_page=True)
            if scheme == "dark":
                break
            page.click("#tab-test")
            page.select_option("#test-run", RUN)
            tests = [photos(dev / "test" / "cow", 1)[0], photos(dev / "test" / "horse", 1)[0]]
            tests.append(str(sorted((SHARED / "others" / "dog").iterdir())[0]))  # none of the classes
            page.set_input_files("#test-files", tests)
            page.click("#predict")
            page.wait_for_selector("text=3 of 3 photos labelled", timeout=120_000)
            page.wait_for_function("[...document.querySelectorAll('figure.near img')].every(i => i.naturalWidth > 0)")
            page.screenshot(path=str(DOCS / "app-test.png"), full_page=True)
            page.click("#tab-runs")
            page.wait_for_selector(f"#runs-table >> text={RUN}")
            page.locator("#runs-table button.open").first.click()
            page.wait_for_selector("#run-details svg.chart")
            page.screenshot(path=str(DOCS / "app-runs.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(DOCS / "app-phone-runs.png"), full_page=False)
            page.click("#tab-teach")
            page.screenshot(path=str(DOCS / "app-phone-teach.png"), full_page=False)
            page.set_viewport_size({"width": 1280, "height": 900})
            page.click("#tab-improve")
            page.select_option("#improve-run", RUN)
            sources = SHARED / "cowhorse-sources"
            page.set_input_files(
                "#improve-files", [str(p) for p in sorted(sources.rglob("*.jpg"))[::2]]
            )  # 120, both classes
            page.fill("#improve-k", "8")
            page.click("#improve-ask")
            page.wait_for_selector(".ask-card", timeout=300_000)
            page.wait_for_function("[...document.querySelectorAll('.ask-card img')].every(i => i.naturalWidth > 0)")
            page.screenshot(path=str(DOCS / "app-improve.png"), full_page=True)
        browser.close()
    for shot in DOCS.glob("app-*.png"):  # 256 colours: a tenth of the bytes, the page still sharp
        Image.open(shot).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(shot, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
