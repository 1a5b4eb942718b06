"""The Fine-tune tab where it is used: a classroom projector (1280x720) and a phone (390 px wide).

Real app, real browser (Debian's headless Chromium through Playwright), real runs on the generated
data. Set CNNCOMPARE_SCREENSHOTS=DIR to keep the screenshots (look at them: the layout is the point).
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.support import CHROMIUM, CHROMIUM_ARGS, playwright_or_skip

pytestmark = pytest.mark.browser

PROJECTOR = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}

sync_api = playwright_or_skip()


@pytest.fixture(scope="module")
def browser(launched_app):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open(browser, url: str, viewport: dict):
    page = browser.new_page(viewport=viewport)
    page.goto(url)
    page.wait_for_selector("#tab-finetune-button, [role=tab]", timeout=60_000)
    return page


def _wait_text(page, selector: str, pattern: str, timeout_s: float = 120) -> str:
    """Wait until the element's text matches the regular expression; returns the text."""
    page.wait_for_function(
        "([sel, pat]) => { const el = document.querySelector(sel); return el && new RegExp(pat).test(el.innerText); }",
        arg=[selector, pattern],
        timeout=timeout_s * 1000,
    )
    return page.inner_text(selector)


def _shot(page, name: str) -> None:
    folder = os.environ.get("CNNCOMPARE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def _in_viewport(page, selector: str) -> dict:
    box = page.locator(selector).bounding_box()
    view = page.viewport_size
    assert box is not None, f"{selector} is not shown"
    assert box["y"] >= 0 and box["y"] + box["height"] <= view["height"], (selector, box)
    assert box["x"] >= 0 and box["x"] + box["width"] <= view["width"], (selector, box)
    return box


def _set(page, label: str, value: str) -> None:
    box = page.locator("#tab-finetune").get_by_label(label, exact=True)
    box.fill(value)
    box.press("Tab")


def test_a_projector_shows_start_the_status_and_the_curves_together(browser, launched_app):
    page = _open(browser, launched_app.url, PROJECTOR)
    try:
        page.get_by_role("tab", name="Fine-tune").click()
        page.wait_for_selector("#ft-curves .js-plotly-plot")
        for selector in ("#ft-start", "#ft-stop", "#ft-status", "#ft-progress", "#ft-curves"):
            _in_viewport(page, selector)
        _shot(page, "finetune-1280x720.png")
        # the set-up scrolls; Start, the status and the curves stay in view beside it
        page.locator("#ft-lr").scroll_into_view_if_needed()
        for selector in ("#ft-start", "#ft-status", "#ft-curves"):
            _in_viewport(page, selector)
        # a Learn preset fills the form and lands on the Fine-tune tab with its text and Start in view
        page.get_by_role("tab", name="Learn").click()
        page.locator("#preset-optimizers").scroll_into_view_if_needed()
        page.click("#preset-optimizers")
        _wait_text(page, "#ft-preset", "Which optimizer")
        time.sleep(0.5)
        for selector in ("#ft-start", "#ft-status", "#ft-curves"):
            _in_viewport(page, selector)
        assert page.locator("#ft-preset").bounding_box()["y"] < PROJECTOR["height"]
        _shot(page, "finetune-preset-1280x720.png")
    finally:
        page.close()


def test_a_phone_reaches_every_tab_and_tables_scroll_sideways(browser, launched_app):
    page = _open(browser, launched_app.url, PHONE)
    try:
        time.sleep(1.0)  # the tab bar measures itself after the first paint
        for name in ("Architectures", "Predict", "Fine-tune", "Learn", "Class"):
            tab = page.get_by_role("tab", name=name)
            assert tab.is_visible(), f"the {name} tab is hidden on a phone"
            tab.click()
            assert tab.get_attribute("aria-selected") == "true"
        page.get_by_role("tab", name="Fine-tune").click()
        table = page.locator("#ft-table .table-wrap")
        table.scroll_into_view_if_needed()
        sizes = table.evaluate(
            "el => { const v = el.querySelector('.virtual-table-viewport') || el;"
            " return [v.scrollWidth, v.clientWidth]; }"
        )
        assert sizes[0] > sizes[1] + 100, sizes  # wider than the phone: it scrolls sideways
        # no header is squeezed into one character per line: each one is at least as wide as its longest word
        squeezed = page.eval_on_selector_all(
            "#ft-table th .header",
            "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)",
        )
        assert squeezed == []
        _shot(page, "finetune-390.png")
    finally:
        page.close()


def test_a_phone_keeps_start_stop_and_the_progress_at_hand_and_its_charts_legible(browser, launched_app):
    page = _open(browser, launched_app.url, PHONE)
    try:
        time.sleep(1.0)
        page.get_by_role("tab", name="Learn").click()
        page.locator("#preset-sweep").scroll_into_view_if_needed()
        page.click("#preset-sweep")
        _wait_text(page, "#ft-preset", "How much to freeze")
        time.sleep(0.5)
        for where in ("top", "bottom", "the models box"):  # wherever the page is, they are at the bottom of it
            if where == "top":
                page.evaluate("window.scrollTo(0, 0)")
            elif where == "bottom":
                page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            else:
                page.locator("#ft-models").scroll_into_view_if_needed()
            time.sleep(0.3)
            boxes = {sel: _in_viewport(page, sel) for sel in ("#ft-start", "#ft-stop", "#ft-estimate", "#ft-progress")}
            bar, start = boxes["#ft-progress"], boxes["#ft-start"]
            assert bar["y"] + bar["height"] <= start["y"] + 1, (where, bar, start)  # side by side, none covered
        _shot(page, "finetune-preset-390.png")
        # the live curves keep a legible width (their titles apart) and scroll sideways, like the tables
        curves = page.locator("#ft-curves")
        curves.scroll_into_view_if_needed()
        page.wait_for_selector("#ft-curves .js-plotly-plot")
        sizes = curves.evaluate("el => [el.scrollWidth, el.clientWidth]")
        assert sizes[0] >= 520 and sizes[0] > sizes[1], sizes
    finally:
        page.close()


def _image(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 20), ((seed * 40) % 255, (seed * 90) % 255, 120)).save(buf, "PNG")
    return buf.getvalue()


def test_an_uploaded_zip_is_chosen_and_reported_with_its_skipped_files(browser, launched_app, tmp_path):
    upload = tmp_path / "classroom.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        for k, name in enumerate(("apples", "pears")):
            for i in range(6):
                zf.writestr(f"{name}/{i}.png", _image(10 * k + i))
        zf.writestr("pears/notes.jpg", b"a text file renamed .jpg")
        zf.writestr("plums/", b"")  # an empty class folder
    page = _open(browser, launched_app.url, PROJECTOR)
    try:
        page.get_by_role("tab", name="Fine-tune").click()
        assert page.locator("#ft-dataset input[value=shapes]").is_checked()
        page.set_input_files("#ft-zip input[type=file]", str(upload))
        text = _wait_text(page, "#ft-data-report", "Dataset report")
        assert page.locator("#ft-dataset input[value=zip]").is_checked()  # Estimate and Start use the upload
        rows = page.eval_on_selector_all(
            "#ft-data-report tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
        )
        assert ["class", "train", "val"] == rows[0]
        counts = {r[0]: r[1:] for r in rows[1:]}
        assert set(counts) == {"apples", "pears", "total"}
        assert sum(map(int, counts["apples"])) == 6 and sum(map(int, counts["pears"])) == 6  # the bad file is not one
        assert [int(a) + int(p) for a, p in zip(counts["apples"], counts["pears"])] == list(map(int, counts["total"]))
        assert "pears/notes.jpg" in text and "Skipped 1 file" in text
        skipped_line = next(line for line in text.splitlines() if "pears/notes.jpg" in line)
        assert len(skipped_line.split("pears/notes.jpg")[0].strip(" -:()1")) > 3  # its reason is given
        assert "plums/" in text  # the empty folder is named in a note
        assert "/tmp" not in text and str(tmp_path) not in text  # file names only, never server paths
        _shot(page, "finetune-zip-report.png")
    finally:
        page.close()


def test_a_comparison_whose_only_run_fails_says_failed(browser, launched_app):
    page = _open(browser, launched_app.url, PROJECTOR)
    try:
        _wait_text(page, "#arch-note", "profiled at", timeout_s=120)  # the page's load events are over: none refills
        page.get_by_role("tab", name="Fine-tune").click()
        page.locator("#ft-models textarea").fill("alexnet@head")  # AlexNet needs at least 63 px
        _set(page, "Input size (px)", "32")
        _set(page, "Epochs", "1")
        _set(page, "Images per class (0 = all)", "8")
        page.click("#ft-start")
        status = _wait_text(page, "#ft-status", "Failed|Done|Stopped", timeout_s=180)
        assert status.startswith("Failed") and "Done" not in status
        assert "Predict tab" not in status  # nothing was trained, so nothing to pick there
        assert "failed" in page.inner_text("#ft-progress")
        notes = _wait_text(page, "#ft-notes", "failed")
        assert "alexnet@head" in notes and "63" in notes  # the reason, under the table
        _shot(page, "finetune-failed.png")
    finally:
        page.close()
