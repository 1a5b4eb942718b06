"""The app in a real browser: headless Chromium (Debian's) driven by Playwright.

Set CNNCOMPARE_SCREENSHOTS=DIR to also keep the screenshot there; scripts/screenshots.py
takes the full set of tab screenshots for docs/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.support import CHROMIUM, CHROMIUM_ARGS, playwright_or_skip

pytestmark = pytest.mark.browser

sync_api = playwright_or_skip()


@pytest.fixture(scope="module")
def app_url(launched_app):
    return launched_app.url


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url)
        yield page
        browser.close()


def _wait_text(page, selector: str, text: str, timeout_s: float = 60) -> None:
    page.wait_for_function(
        "([sel, text]) => { const el = document.querySelector(sel); return el && el.innerText.includes(text); }",
        arg=[selector, text],
        timeout=timeout_s * 1000,
    )


def _table_rows(page, selector: str) -> list[list[str]]:
    """The visible data rows of a gr.Dataframe (gradio 6 draws them as div[role=row] after the header row)."""
    return page.eval_on_selector_all(
        f"{selector} div[role=row]",
        "rows => rows.map(r => Array.from(r.querySelectorAll('[role=cell], [role=gridcell], td'))"
        ".map(c => c.innerText.trim()))",
    )


def test_profile_two_models_in_the_browser(page, tmp_path):
    _wait_text(page, "#arch-note", "4 of 4 model(s) profiled")  # the counting-only table shown on load
    for name in ("vgg16", "googlenet"):  # keep alexnet and resnet50
        page.locator("#arch-models .token", has_text=name).locator(".token-remove").click()
    size = page.locator("#arch-size input")
    size.fill("64")
    size.press("Enter")
    page.click("#arch-compare")
    _wait_text(page, "#arch-note", "2 of 2 model(s) profiled at 64 px", timeout_s=120)
    rows = {r[0]: r for r in _table_rows(page, "#arch-table") if r}
    assert set(rows) == {"alexnet", "resnet50"}
    assert rows["alexnet"][3] == "64" and rows["resnet50"][4] == "25.56"  # input px, params (M)
    assert rows["alexnet"][9] not in ("", "–")  # latency p50 measured (the box is ticked by default)
    assert page.locator("#arch-acc .js-plotly-plot").count() == 1
    shot = tmp_path / "architectures-two-models.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("CNNCOMPARE_SCREENSHOTS"):
        out = Path(os.environ["CNNCOMPARE_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "browser-test-architectures.png"), full_page=True)


def test_preset_fills_the_finetune_tab_and_stop_ends_a_run(page):
    page.get_by_role("tab", name="Learn").click()
    page.click("#preset-optimizers")
    _wait_text(page, "#ft-preset", "Which optimizer?")
    assert page.get_by_role("tab", name="Fine-tune").get_attribute("aria-selected") == "true"
    models_box = page.locator("#ft-models textarea")
    assert "resnet18@none optimizer=rmsprop lr=0.001" in models_box.input_value()
    # a long run, stopped from the page: the run ends and the page shows what it reached
    models_box.fill("resnet18@none")
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("50")
    epochs.press("Tab")
    page.click("#ft-start")
    _wait_text(page, "#ft-status", "step", timeout_s=120)
    time.sleep(1.0)
    page.click("#ft-stop")
    _wait_text(page, "#ft-status", "Stopped", timeout_s=90)
    rows = _table_rows(page, "#ft-table")
    assert rows and rows[0][0] == "resnet18@none"
    _wait_text(page, "#ft-notes", "stopped early (stopped by user)")


def _started(folder: str) -> str:
    """The time a run folder ('20261125-162505-resnet18') was made, as the Predict list shows it ('16:25:05')."""
    t = folder.split("-")[1]
    return f"{t[:2]}:{t[2:4]}:{t[4:]}"


def _run_options(page) -> list[str]:
    page.get_by_role("tab", name="Predict").click()
    page.locator("#pred-refresh").click()
    time.sleep(1.0)
    page.locator("#pred-runs input").click()
    time.sleep(0.5)
    options = [o.inner_text() for o in page.get_by_role("option").all()]
    page.keyboard.press("Escape")
    return options


def test_a_visitors_runs_survive_a_page_refresh_and_stay_private(page, app_url):
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#ft-models textarea").fill("resnet18@head")
    for label, value in (("Epochs", "1"), ("Input size (px)", "32"), ("Images per class (0 = all)", "8")):
        box = page.locator("#tab-finetune").get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")
    page.click("#ft-start")
    _wait_text(page, "#ft-status", "Done", timeout_s=180)
    folder = _table_rows(page, "#ft-table")[0][-1]
    assert folder.endswith("resnet18")
    assert any(_started(folder) in o and "resnet18@head" in o for o in _run_options(page))
    # the key is kept in the browser's storage, encrypted: a refresh keeps the runs
    stored = page.evaluate("() => window.localStorage.getItem('cnncompare-visitor')")
    try:  # ciphertext (base64 may hold any letters, "key" too): never the {"key": …, "code": …} value itself
        parsed = json.loads(stored)
    except ValueError:
        parsed = None
    assert stored and not (isinstance(parsed, dict) and "key" in parsed) and '"key"' not in stored
    page.reload()
    _wait_text(page, "#arch-note", "profiled at", timeout_s=120)
    assert any(_started(folder) in o and "resnet18@head" in o for o in _run_options(page))
    # another browser (a new context: its own storage) is another visitor and sees none of them
    other = page.context.browser.new_context().new_page()
    try:
        other.goto(app_url)
        _wait_text(other, "#arch-note", "profiled at", timeout_s=120)
        assert not any(_started(folder) in o for o in _run_options(other))
    finally:
        other.close()


def _use_code(page, code: str) -> None:
    page.get_by_role("tab", name="Predict").click()
    accordion = page.get_by_text("Your runs are private to this browser")
    if not page.locator("#pred-code").is_visible():
        accordion.click()
    page.locator("#pred-code input").fill(code)
    page.click("#pred-join")


def _create_code(page) -> str:
    """A new workspace, made by the server (a typed code the server never made is refused): its code."""
    page.get_by_role("tab", name="Predict").click()
    if not page.locator("#pred-create").is_visible():
        page.get_by_text("Your runs are private to this browser").click()
    page.click("#pred-create")
    _wait_text(page, "#pred-workspace", "Created a workspace")
    text = page.inner_text("#pred-workspace")
    return re.search(r"workspace=([\w-]+)", text).group(1)


def test_a_workspace_code_shares_runs_between_browsers(page, app_url):
    code = _create_code(page)
    page.get_by_role("tab", name="Fine-tune").click()
    page.click("#ft-start")  # the form as the previous test left it: one quick run
    _wait_text(page, "#ft-status", "Done", timeout_s=180)
    folder = _table_rows(page, "#ft-table")[0][-1]
    other = page.context.browser.new_context().new_page()
    try:
        other.goto(app_url)
        _wait_text(other, "#arch-note", "profiled at", timeout_s=120)
        assert not any(_started(folder) in o for o in _run_options(other))
        _use_code(other, code)
        _wait_text(other, "#pred-workspace", "shared workspace")
        assert any(_started(folder) in o and "resnet18@head" in o for o in _run_options(other))
        _use_code(other, "")  # back to its own (empty) runs
        _wait_text(other, "#pred-workspace", "Back to your own runs")
        assert not any(_started(folder) in o for o in _run_options(other))
    finally:
        other.close()
    _use_code(page, "")


def test_a_counting_lesson_answers_at_once_on_the_learn_tab(page):
    page.get_by_role("tab", name="Learn").click()
    page.locator("#count-stacked").scroll_into_view_if_needed()
    page.click("#count-stacked")
    _wait_text(page, "#count-stacked-out", "What it shows", timeout_s=60)
    text = page.inner_text("#count-stacked-out")
    assert "1,179,648" in text and "3,211,264" in text and "7×7" in text  # the table, counted from VGG16
    assert page.locator("#count-stacked-out table").count() == 1
    # the same click draws the designs: a box per layer, titled with the same counts
    page.wait_for_selector("#count-stacked-plot .js-plotly-plot", timeout=60_000)
    drawn = page.inner_text("#count-stacked-plot")
    assert "3 stacked 3×3 (VGG): 1,769,472 weights, sees 7×7" in drawn and "589,824 weights" in drawn
    assert page.locator("#count-reductions-plot .js-plotly-plot").count() == 0  # only the lesson asked for


def test_feature_maps_of_the_chosen_models_side_by_side(page):
    """The Predict tab's example picture and its classic four: each model's stages and first-layer filters."""
    page.get_by_role("tab", name="Predict").click()
    page.get_by_text("star", exact=True).first.click()
    page.get_by_text("Inside the networks: what each stage sees").click()  # open the accordion
    page.click("#fx-go")
    _wait_text(page, "#fx-note", "resnet50 at 224 px", timeout_s=240)
    note = page.inner_text("#fx-note")
    for name in ("alexnet", "vgg16", "googlenet", "resnet50"):
        assert f"{name} at 224 px" in note
    assert "random weights" in note or "ImageNet" in note  # which weights the maps come from, said
    assert note.count("untrained network") <= 1  # a note shared by the models is said once
    page.wait_for_function("() => document.querySelectorAll('#fx-gallery img').length >= 8")  # stages + filters
    if os.environ.get("CNNCOMPARE_SCREENSHOTS"):
        out = Path(os.environ["CNNCOMPARE_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "feature-maps.png"), full_page=True)


def test_a_family_page_shows_what_its_network_sees_in_the_example_picture(page):
    """The Learn tab's family pages: the model's stages and first-layer filters on the app's example picture."""
    page.get_by_role("tab", name="Learn").click()
    page.locator("#learn-fx-alexnet").scroll_into_view_if_needed()
    page.click("#learn-fx-alexnet")
    _wait_text(page, "#learn-fx-alexnet-note", "alexnet at 224 px", timeout_s=240)
    page.wait_for_function("() => document.querySelectorAll('#learn-fx-alexnet-gal img').length >= 2")  # + filters
    srcs = "sel => Array.from(document.querySelectorAll(sel + ' img')).map(i => i.src)"
    learn, predict = page.evaluate(srcs, "#learn-fx-alexnet-gal"), page.evaluate(srcs, "#fx-gallery")
    # the stages of the house, never the Predict tab's earlier picture again (the filters are the same for both)
    assert learn[0] not in predict
    if os.environ.get("CNNCOMPARE_SCREENSHOTS"):
        out = Path(os.environ["CNNCOMPARE_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        page.locator("#learn-fx-alexnet-gal").scroll_into_view_if_needed()
        page.screenshot(path=str(out / "learn-feature-maps.png"))
