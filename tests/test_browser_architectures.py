"""The Architectures tab in a real browser at a projector's 1280×720: the diagram and unbroken table headers.

Set CNNCOMPARE_SCREENSHOTS=DIR to keep the screenshots there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import CHROMIUM, CHROMIUM_ARGS, playwright_or_skip

pytestmark = pytest.mark.browser

sync_api = playwright_or_skip()

# Lines of text in each header cell: distinct tops of the rectangles its text occupies.
HEADER_LINES = """els => els.map(el => {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    const tops = new Set();
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        if (!node.textContent.trim() || !node.parentElement.checkVisibility()) continue;
        const range = document.createRange();
        range.selectNodeContents(node);
        for (const r of range.getClientRects()) if (r.width > 0 && r.height > 0) tops.add(Math.round(r.top));
    }
    return [el.innerText.trim(), tops.size];
}).filter(([text]) => text)"""


@pytest.fixture(scope="module")
def page(launched_app):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(launched_app.url)
        yield page
        browser.close()


def _wait(page, script: str, arg=None, timeout_s: float = 120) -> None:
    page.wait_for_function(script, arg=arg, timeout=timeout_s * 1000)


def _wait_text(page, selector: str, text: str, timeout_s: float = 120) -> None:
    _wait(
        page,
        "([sel, text]) => { const el = document.querySelector(sel); return el && el.innerText.includes(text); }",
        [selector, text],
        timeout_s,
    )


def _shot(page, tmp_path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CNNCOMPARE_SCREENSHOTS"):
        out = Path(os.environ["CNNCOMPARE_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / name), full_page=True)
    return path


def test_the_diagram_of_the_classic_four_appears(page, tmp_path):
    _wait_text(page, "#arch-note", "4 of 4 model(s) profiled at 224 px (native)")
    # the note tells the truth about the ticked box: Compare is what is needed, not ticking it
    note = page.inner_text("#arch-note")
    assert "press Compare" in note and "tick" not in note.lower().split("press compare")[0][-40:]
    _wait(page, "() => document.querySelector('#arch-diagram .js-plotly-plot .barlayer') !== null")
    text = page.inner_text("#arch-diagram")
    for name in ("alexnet", "vgg16", "googlenet", "resnet50"):
        assert name in text
    for label in ("conv 11×11 /4, 64", "inception 3a", "inception 5b", "bottleneck /2", "fc 4096 (as 7×7 conv)"):
        assert label in text
    assert "frozen (head)" in text  # the freeze policy shown below it starts at head
    # the ranking is drawn by the event chained after the page's first table: wait for it, then there is one
    _wait(page, "() => document.querySelector('#arch-ranking .js-plotly-plot') !== null")
    assert page.locator("#arch-ranking .js-plotly-plot").count() == 1
    shot = _shot(page, tmp_path, "architectures-1280x720.png")
    assert shot.stat().st_size > 10_000


def test_table_headers_stay_on_one_line_at_1280(page):
    _wait_text(page, "#arch-note", "profiled")
    for table in ("#arch-table", "#arch-blocks"):
        headers = page.eval_on_selector_all(f"{table} th, {table} [role=columnheader]", HEADER_LINES)
        assert headers, f"no header cells found in {table}"
        broken = [text for text, lines in headers if lines != 1]
        assert not broken, f"header cells wrapped in {table}: {broken}"
    # units live in a legend line under the table, not in the headers
    assert "params in millions" in page.inner_text("#arch-note")


def test_a_typed_size_and_a_deeper_policy_redraw_the_diagram(page, tmp_path):
    size = page.locator("#arch-size input")
    size.fill("128")
    size.press("Enter")
    page.click("#arch-compare")
    _wait_text(page, "#arch-note", "4 of 4 model(s) profiled at 128 px", timeout_s=240)
    _wait_text(page, "#arch-diagram", "at 128 px")
    assert "64×31×31" not in page.inner_text("#arch-diagram")  # shapes live in hover text, not on the boxes
    rows = page.eval_on_selector_all(
        "#arch-table div[role=row]",
        "rows => rows.map(r => Array.from(r.querySelectorAll('[role=cell], [role=gridcell], td'))"
        ".map(c => c.innerText.trim()))",
    )
    assert {r[3] for r in rows if r} == {"128"}
    _wait(page, "() => document.querySelector('#arch-ranking-note').innerText.includes('multiply-adds per second')")
    _shot(page, tmp_path, "architectures-measured-1280x720.png")
