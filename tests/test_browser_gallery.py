"""The confusion-matrix gallery in a real browser (headless Chromium) at a projector's 1280x720: after a real
tiny comparison saved for one visitor, the panel lists the runs, shows a cell's images with captions that are
not cut, and the disagreements on request."""

from __future__ import annotations

import pytest

from cnncompare import compare
from cnncompare.settings import DataSettings, ModelEntry, TrainSettings
from tests.support import CHROMIUM, CHROMIUM_ARGS, playwright_or_skip

pytestmark = pytest.mark.browser
sync_api = playwright_or_skip()

KEY = "G" * 10 + "-visitor-key-of-gallery"


@pytest.fixture(scope="module")
def gallery_app(tmp_path_factory):
    import gradio as gr
    from conftest import free_port

    from cnncompare import gallery as engine
    from cnncompare.executor.work import DataSpec
    from cnncompare.server import visitors
    from cnncompare.ui import gallery as gui
    from cnncompare.ui.common import Context

    ctx = Context.from_env(tmp_path_factory.mktemp("runs"))
    who = visitors.resolve(KEY)
    spec = DataSpec(DataSettings("shapes", 30), ctx.env, seed=0)  # the gallery's worker opens the same
    ds = spec.open()
    plan = compare.Plan.parse(
        "resnet18@head, resnet18@stages:3 lr=0.03",
        model_defaults=ModelEntry(freeze="head"),
        settings=TrainSettings(epochs=1, size=32, batch_size=32, lr=1e-2, device="cpu"),
    )
    results = compare.run_comparison(plan, ds, out_dir=visitors.visitor_dir(ctx, who, create=True))
    assert gui.remember(ctx, who, results, spec) == ""
    with gr.Blocks() as demo:
        # the page's visitor key, fixed for the test (the app keeps it in gr.BrowserState)
        ctx.visitor_state = gr.Textbox(KEY, visible=False)
        g = gui.build(ctx)
        load = gr.Button("load", elem_id="g-load")
        load.click(g.refresh, g.refresh_inputs, g.outputs)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", engine.load(gui._path(ctx, who)), results
    finally:
        demo.close()


def test_a_cell_and_the_disagreements_show_their_images_with_whole_captions(gallery_app):
    from cnncompare import gallery as engine
    from cnncompare.ui import gallery as gui

    url, g, results = gallery_app
    run, true, pred = gui.selection(g)
    expected = min(len(engine.cell(g, run, true, pred)), engine.MAX_ITEMS)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.set_default_timeout(180_000)  # a shared 2-core machine: models load and heat maps are computed
        page.goto(url)
        page.click("#g-load")
        page.wait_for_function("() => document.querySelector('#g-note').innerText.includes(' predicted ')")
        assert f"**{run}**" not in page.inner_text("#g-note") and run in page.inner_text("#g-note")
        page.wait_for_function(f"() => document.querySelectorAll('#g-images img').length === {expected}")
        # captions are whole: nothing is clipped with an ellipsis
        clipped = page.eval_on_selector_all(
            "#g-images .caption-label", "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).length"
        )
        assert clipped == 0
        # the disagreements
        page.click("#g-run input")
        page.get_by_role("option", name=gui.DISAGREE).click()
        n = min(len(engine.disagreements(g, true)), engine.MAX_ITEMS)  # the true class stays chosen
        page.wait_for_function("() => document.querySelector('#g-note').innerText.includes('different classes')")
        page.wait_for_function(
            f"() => document.querySelector('#g-note').innerText.split('Validation image #').length - 1 === {n}"
        )
        assert page.eval_on_selector_all("#g-images img", "els => els.length") > 0
        # every selector keeps its label, and the predicted class is not asked for where the runs disagree
        page.wait_for_function("() => document.querySelector('#g-pred').innerText.includes(\"each run's own\")")
        labels = page.inner_text("#g-run") + page.inner_text("#g-true") + page.inner_text("#g-pred")
        assert "Run" in labels and "True class" in labels and "Dropdown" not in labels
        assert page.locator("#g-pred input").is_disabled()
        browser.close()
