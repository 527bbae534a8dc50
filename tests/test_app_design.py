"""The app as a product (issue 44): in Chromium at 1,280 and 390 px, light and dark, the class cards use
the width, nothing scrolls sideways, text and buttons keep their contrast (WCAG AA, 4.5:1), the keyboard's
focus is visible, the tabs say which page is shown, and the run's page draws its charts and card."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi", reason='the app extra is not installed (pip install -e ".[app]")')

from appkit import TOKEN, chromium_browser, live

from pasture import api
from pasture.app.server import create_app


def _rgb(css: str) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in re.findall(r"[\d.]+", css)[:3])
    return r, g, b


def _luminance(css: str) -> float:
    def channel(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in _rgb(css))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: str, background: str) -> float:
    high, low = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _colours(page, selector: str) -> tuple[str, str]:
    return page.evaluate(
        "s => { const e = document.querySelector(s), c = getComputedStyle(e); return [c.color, c.backgroundColor]; }",
        selector,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import write_split_data

    root = tmp_path_factory.mktemp("design")
    api.train(write_split_data(root / "data"), root / "runs" / "first", quiet=True, image_size=48)
    return root / "runs"


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_pages_read_well_at_desktop_and_phone_width(runs, scheme):
    with live(create_app(runs, token=TOKEN)) as base, chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
        page.goto(f"{base}/#token={TOKEN}")
        body_text, body_ground = page.evaluate(
            "() => [getComputedStyle(document.body).color, getComputedStyle(document.body).backgroundColor]"
        )
        assert (_luminance(body_ground) < 0.05) == (scheme == "dark")  # the dark scheme is dark
        assert contrast(body_text, body_ground) >= 4.5
        text, ground = _colours(page, "#train")  # the primary button
        assert contrast(text, ground) >= 4.5
        text, ground = _colours(page, "#tab-teach")  # the tab shown
        assert contrast(text, ground) >= 4.5
        # the class cards use the width: two side by side at 1,280 px, each with a grid for its photos
        first, second = (page.locator(".card").nth(i).bounding_box() for i in (0, 1))
        assert first["y"] == second["y"] and second["x"] > first["x"] + first["width"]
        # the keyboard's focus is visible
        page.focus("#add-class")
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Tab")
        outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        assert page.evaluate("() => document.activeElement.id") == "add-class" and outline != "none"
        page.click("#tab-runs")
        assert page.get_attribute("#tab-runs", "aria-selected") == "true"
        assert page.get_attribute("#tab-teach", "aria-selected") == "false"
        page.locator("#runs-table button.open").first.click()
        page.wait_for_selector("#run-details svg.chart")
        assert page.locator("#run-details .model-card h2").count() >= 5  # rendered, not raw Markdown
        page.set_viewport_size({"width": 390, "height": 844})
        for tab in ("teach", "test", "improve", "runs"):
            page.click(f"#tab-{tab}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, tab
