"""The camera in a real browser: Chromium's fake camera (--use-fake-device-for-media-stream) plays a Y4M video this
test makes from two synthetic scenes (a red square, a blue disc). Two classes captured from the page, a fine-tune
started on them, its report and results shown; then the run answers the camera live, throttled."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support import CHROMIUM, CHROMIUM_ARGS, playwright_or_skip, scene, write_y4m

pytestmark = pytest.mark.browser

sync_api = playwright_or_skip()

CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def _page(p, url: str, video: Path, storage=None):
    browser = p.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS + CAMERA_ARGS + [f"--use-file-for-fake-video-capture={video}"]
    )
    context = browser.new_context(
        permissions=["camera"], viewport={"width": 1280, "height": 1000}, storage_state=storage
    )
    page = context.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Fine-tune").wait_for(timeout=60_000)
    return browser, context, page


def _count(page, cls: str) -> int:
    found = re.search(rf"\b{cls}: (\d+)", page.inner_text("#cam-counts"))
    return int(found.group(1)) if found else 0


def _record(page, box: str) -> None:
    """Start the camera of component `box` streaming (the page asks for the camera first)."""
    page.locator(box).get_by_text("Click to Access Webcam").click()
    page.locator(f'{box} button[aria-label="capture photo"]').click()


def _capture(page, cls: str, at_least: int = 10) -> None:
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_text("Make a dataset with your camera").click()
    name = page.locator("#cam-class input")
    name.fill("")
    name.type(cls)
    page.locator("#cam-capturing input").check()
    _record(page, "#cam-video")
    page.wait_for_function(
        "([cls, n]) => { const text = document.querySelector('#cam-counts').innerText;"
        " const m = text.match(new RegExp(cls + ': (\\\\d+)')); return m && +m[1] >= n; }",
        arg=[cls, at_least],
        timeout=120_000,
    )
    page.locator("#cam-capturing input").uncheck()


def _wait(page, selector: str, text: str, timeout_s: float = 120) -> None:
    page.wait_for_function(
        "([sel, text]) => { const el = document.querySelector(sel); return el && el.innerText.includes(text); }",
        arg=[selector, text],
        timeout=timeout_s * 1000,
    )


def test_two_classes_from_the_camera_train_and_the_run_answers_the_camera_live(launched_app, tmp_path):
    red = write_y4m(tmp_path / "red.y4m", scene("red"))
    blue = write_y4m(tmp_path / "blue.y4m", scene("blue"))
    with sync_api.sync_playwright() as p:
        browser, context, page = _page(p, launched_app.url, red)
        _capture(page, "red")
        storage = context.storage_state()  # the same visitor (their key lives in the browser) ...
        browser.close()
        browser, context, page = _page(p, launched_app.url, blue, storage)  # ... in front of another scene
        try:
            _capture(page, "blue")
            assert _count(page, "red") >= 10  # the first class is still theirs
            page.click("#cam-show")
            page.wait_for_function("() => document.querySelectorAll('#cam-thumbs img').length >= 10")
            before = _count(page, "blue")
            page.locator("#cam-thumbs img").first.click()
            page.click("#cam-delete")
            _wait(page, "#cam-counts", "Deleted picture 1 of blue")
            assert _count(page, "blue") == before - 1
            page.click("#cam-use")
            _wait(page, "#ft-data-report", "Dataset report")
            report = page.inner_text("#ft-data-report")
            assert "2 classes" in report and "blue" in report and "red" in report
            models = page.locator("#ft-models textarea")
            models.fill("")
            models.type("resnet18@head")
            page.click("#ft-start")
            _wait(page, "#ft-status", "Done: 1 run(s) trained", timeout_s=400)
            assert "Dataset camera: 2 classes" in page.locator("#ft-status").text_content()  # folded under the reading
            page.locator("#ft-table").scroll_into_view_if_needed()
            _wait(page, "#ft-table", "resnet18@head")  # the results table has the run

            page.get_by_role("tab", name="Predict").click()
            page.click("#pred-refresh")
            page.locator("#pred-runs input").click()
            page.get_by_role("option", name=re.compile("resnet18@head")).first.click()
            page.keyboard.press("Escape")
            page.get_by_text("Live: predictions on your camera").click()
            _record(page, "#live-cam")
            page.wait_for_function(
                "() => { const m = document.querySelector('#live-note').innerText.match(/Answered (\\d+) frame\\(s\\), "
                "skipped (\\d+)/); return m && +m[1] >= 3 && +m[2] >= 1; }",
                timeout=120_000,
            )
            note = page.inner_text("#live-note")
            assert "resnet18@head" in note and "at most 2 a second" in note
            assert "only knows those classes" in note
            top = page.inner_text("#live-top")
            assert "blue" in top or "red" in top  # the run's own classes, not ImageNet's
            if os.environ.get("CNNCOMPARE_SCREENSHOTS"):
                out = Path(os.environ["CNNCOMPARE_SCREENSHOTS"])
                out.mkdir(parents=True, exist_ok=True)
                page.locator("#live-top").scroll_into_view_if_needed()
                page.screenshot(path=str(out / "live-camera.png"))
        finally:
            browser.close()
