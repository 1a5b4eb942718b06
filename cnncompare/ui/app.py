"""The whole app: four tabs over the engine, the shared-server layer, and launch settings.

`build_app()` returns the Blocks; `launch(demo, **kw)` starts it with the app's theme, CSS,
upload limit and worker threads (keyword arguments override them, e.g. for tests:
`launch(demo, prevent_thread_lock=True, server_port=PORT)`).

A shared server (docs/SERVER.md): each visitor is a random key kept in their browser
(visitors.py), their runs live in a folder of their own and are never served by path; file
inputs accept only uploads (uploads.py); the work waits in a fair queue (fairqueue.py) with
per-visitor limits; the limits come from `env.Env`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gradio as gr
import timm
import torch
from starlette.middleware import Middleware

from .. import __version__, models
from ..cli import add_app_arguments
from ..env import Env
from ..errors import CNNCompareError
from ..server import ledger, visitors
from ..server.http import BodyLimit, clip_every_log_record
from . import architectures, classroom, finetune, learn, predict
from . import gallery as gallery_ui
from .common import LANES, MODELS, Context, in_line

# The largest catalog model's ImageNet weights fit (VGG19: 548 MB; VGG16: 528 MB), so the VGG lessons work offline
# with a file downloaded elsewhere; a zip of images is bounded by what it unpacks to (CNNCOMPARE_MAX_UNPACK_MB).
MAX_FILE_SIZE = "800mb"
SPACE_PROXIES = "127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"  # trusted on a Space when none are named

CSS = """
.cc-note p, .cc-note li { font-size: 0.95rem; line-height: 1.45; }
.cc-preset:empty { display: none; }
.cc-preset { border-left: 4px solid var(--color-accent); padding: 4px 12px; background: var(--block-background-fill); }
.cc-preset-summary p { margin: 0; }
.cc-progress { position: relative; height: 26px; border-radius: 6px; background: var(--neutral-200);
               overflow: hidden; margin: 0; }
.cc-progress-bar { position: absolute; left: 0; top: 0; bottom: 0; background: var(--color-accent);
                   transition: width 0.6s ease; }
.cc-failed .cc-progress-bar { background: var(--error-background-fill, #fca5a5); }
.cc-progress-text { position: relative; padding-left: 10px; line-height: 26px; font-size: 0.9rem;
                    font-weight: 600; color: var(--body-text-color); mix-blend-mode: normal; }
.cc-workspace p { margin: 0; font-size: 0.85rem; line-height: 1.3; }
/* the banner: two short lines, so a 1280x720 projector keeps its height for the tabs */
.cc-banner h1 { font-size: 1.6rem; margin: 0 0 0.15em 0; }
.cc-banner p { margin: 0.1em 0; font-size: 0.92rem; line-height: 1.35; }
/* Fine-tune: Start, the status and the live curves stay in view while the set-up on the left scrolls */
@media (min-width: 900px) {
  .cc-sticky { position: sticky; top: 6px; align-self: flex-start; }
}
.gradio-container { overflow: clip !important; }  /* clips like 'hidden' without stopping sticky columns */
#ft-live { gap: 8px !important; }  /* a projector: Start, the status, the curves and the reading on one screen */
.cc-estimate { max-height: 190px; overflow-y: auto; }
#ft-status { min-height: 72px; }  /* never cut: it shows the headline and the last few lines of the log */
#ft-status p, #ft-status li { margin: 0.1em 0; font-size: 0.9rem; line-height: 1.35; }
.cc-estimate:empty { display: none; }
.cc-hidden { display: none !important; }
.cc-estimate table { font-size: 0.85rem; margin: 0.2em 0; }
.cc-estimate td, .cc-estimate th { padding: 2px 8px; white-space: normal; }
.cc-estimate p { margin: 0.15em 0; font-size: 0.88rem; line-height: 1.35; }
/* toasts at the bottom of the screen: at the top they covered Estimate, Start and Stop */
.toast-wrap { top: auto !important; bottom: var(--size-4) !important; }
.cc-actions { gap: 8px; }
.cc-report table { font-size: 0.9rem; }
.cc-report td, .cc-report th { padding: 2px 10px; }
.cc-legend p, .cc-legend li { font-size: 0.85rem; line-height: 1.4; }
/* tables: words never break inside; a table wider than the screen scrolls sideways */
.table-wrap th .header, .table-wrap td span { word-break: normal !important; overflow-wrap: normal !important;
                                               hyphens: none; }
.table-wrap { overflow-x: auto; }
.table-wrap td, .table-wrap td * { word-break: normal !important; overflow-wrap: normal !important; }
.table-wrap td, .table-wrap th { white-space: nowrap; }  /* '24,59 / 1' and 'top-1 / %' never again */
/* Grad-CAM captions: whole, on two lines if they must */
.caption-label { white-space: normal !important; overflow: visible !important; text-overflow: clip !important; }
/* phones: every tab stays reachable (the bar wraps instead of hiding tabs behind a menu) */
@media (max-width: 640px) {
  .tab-wrapper { height: auto !important; }
  .tab-container[role=tablist] button { padding: 6px 5px !important; font-size: 0.82rem; }
  .tab-container.visually-hidden button { padding: 6px 5px !important; font-size: 0.82rem; }
  .cc-banner h1 { font-size: 1.3rem; }
  /* diagrams keep a legible width and scroll sideways, as tables do: squeezed, titles and labels overlapped */
  #learn-diagram, #arch-diagram { overflow-x: auto; }
  #learn-diagram .js-plotly-plot, #arch-diagram .js-plotly-plot { min-width: 600px; }
  #ft-curves, #ft-confusion, #ft-acclat, #class-curves, #class-confusion { overflow-x: auto; }
  #ft-curves .js-plotly-plot, #class-curves .js-plotly-plot { min-width: 560px; }
  #ft-confusion .js-plotly-plot, #class-confusion .js-plotly-plot, #ft-acclat .js-plotly-plot { min-width: 520px; }
  /* a phone: Estimate, Start, Stop and the progress stay at the bottom of the screen, wherever the page is */
  #ft-live .cc-actions { position: fixed; left: 0; right: 0; bottom: 0; z-index: 60; margin: 0 !important;
                         padding: 6px 8px; background: var(--background-fill-primary);
                         box-shadow: 0 -2px 6px rgba(0, 0, 0, 0.15); }
  #ft-live .cc-actions button { font-size: 0.9rem; padding: 8px 4px; min-height: 0; white-space: nowrap; }
  #ft-progress { position: fixed; left: 0; right: 0; bottom: 54px; z-index: 60; padding: 2px 8px;
                 background: var(--background-fill-primary); }
  .gradio-container { padding-bottom: 110px !important; }
}
footer { display: none !important; }
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="emerald", neutral_hue="slate")


def _banner() -> str:
    text = (
        "# cnncompare\nClassic CNNs side by side (AlexNet, VGG, GoogLeNet/Inception, ResNet and descendants): "
        "what they cost, what they predict, how well each learns your own images."
    )
    if not models.weights_downloadable():
        text += (
            "\n\n⚠️ **Offline**: no ImageNet weights here, so models start from **random weights** (said where it "
            "matters); **Fine-tune → Your own weights** takes a weights file."
        )
    return text


def build_app(runs_root: str | Path | None = None, *, env: Env | None = None) -> gr.Blocks:
    """The Blocks app. Runs go to `runs_root`, else $CNNCOMPARE_RUNS, else ./runs (each visitor's under
    visitors/); the limits come from `env`, else the environment (`env.Env`)."""
    ctx = Context.from_env(runs_root, env)
    ledger.at_start(ctx)  # leftover *.tmp files, expired runs and weights, old downloads and unpacked uploads
    MODELS.resize(int(ctx.env.model_cache_mb * 2**20))
    with gr.Blocks(title="cnncompare: classic CNNs side by side", delete_cache=(3600, 3600)) as demo:
        # The visitor's key, kept (encrypted) in the browser's storage: a refresh keeps their runs.
        ctx.visitor_state = gr.BrowserState(None, storage_key="cnncompare-visitor", secret=visitors.browser_secret(ctx))
        gr.Markdown(_banner(), elem_classes=["cc-banner"])
        workspace_bar = classroom.bar()  # which workspace this page is in, always said
        with gr.Tabs(selected="architectures") as tabs:
            with gr.Tab("Architectures", id="architectures", elem_id="tab-architectures"):
                arch = architectures.build(ctx)
            with gr.Tab("Predict", id="predict", elem_id="tab-predict") as predict_tab:
                pred = predict.build(ctx)
            with gr.Tab("Fine-tune", id="finetune", elem_id="tab-finetune"):
                ft = finetune.build(ctx)
            with gr.Tab("Learn", id="learn", elem_id="tab-learn"):
                learn.build(ctx, ft, tabs)
            with gr.Tab("Class", id="class", elem_id="tab-class"):
                class_ui = classroom.panel(workspace_bar)  # the class's workspace and its latest comparison
        # A first visit gets a new random key (the browser keeps it); then its runs are listed.
        demo.load(_first_state(ctx), ctx.visitor_state, ctx.visitor_state, api_visibility="private", queue=False).then(
            pred.refresh_runs, pred.refresh_inputs, [pred.runs, pred.runs_note], api_visibility="private", queue=False
        ).then(**classroom.land(ctx, tabs), api_visibility="private", queue=False)
        # Newly finished runs appear in the Predict tab's list.
        ft.start_event.then(
            pred.refresh_runs, pred.refresh_inputs, [pred.runs, pred.runs_note], api_visibility="private", queue=False
        )
        predict_tab.select(
            pred.refresh_runs, pred.refresh_inputs, [pred.runs, pred.runs_note], api_visibility="private", queue=False
        )
        classroom.wire(ctx, class_ui, pred, demo)
        arch.wire_load(demo)
        demo.load(None, None, None, js=gallery_ui.CELL_CLICK_JS, api_visibility="private", queue=False)
        demo.load(**ft.weights.refresh, api_visibility="private")  # the visitor's own weights files
        for panel in (ft.exports, pred.exports):  # the runs a visitor may export
            demo.load(**panel.refresh, api_visibility="private", queue=False)
        predict_tab.select(**pred.exports.refresh, api_visibility="private", queue=False)
        gr.Markdown(
            f"<small>cnncompare {__version__} · torch {torch.__version__} · timm {timm.__version__}</small>",
            elem_id="cc-footer",
        )
        # The visitor's own runs, for API clients (the page's dropdown shows the same list).
        gr.api(_runs_api(ctx), api_name="runs", concurrency_limit=None)
    # Gradio's queue is a backstop: the app's events start at once and wait in ctx.queue, the fair queue.
    # api_open=False: no event skips the queue through /gradio_api/run/... (as on a Space, where it is the default)
    demo.queue(max_size=ctx.env.queue_size, default_concurrency_limit=2, api_open=False)
    demo.cnncompare_context = ctx
    return demo


def _first_state(ctx: Context):
    def first_state(value=None, request: gr.Request = None) -> dict:
        """The browser's stored value, with a key made when it has none, joined to the workspace of a shared link
        (`?workspace=CODE`) when the page was opened with one."""
        state = visitors.new_state(value)
        params = getattr(request, "query_params", None) or {}
        code = str(params.get("workspace") or "").strip()
        if code:
            try:
                return visitors.join_workspace(state, code, ctx.workspaces, visitors.address_of(request))
            except CNNCompareError:
                return state
        return state

    return first_state


def _runs_api(ctx: Context):
    def listed(who) -> dict:
        choices, notes = visitors.visible_runs(ctx, who)
        return {"runs": [[c.label, c.value] for c in choices], "skipped": visitors.skipped_note(notes)}

    def runs(visitor: str | None = None, request: gr.Request = None) -> dict:
        """The caller's fine-tuned runs that can predict (and shared examples): `runs` as (label, name) pairs,
        newest first; `skipped`: a note on run folders that could not be read."""
        # gr.api takes one answer: the last one (a place in the quick lane passes in a moment)
        *_, last = in_line(
            ctx,
            "blocks",
            visitor,
            request,
            listed,
            refused=lambda text: {"runs": [], "skipped": "", "error": text},
            waiting=lambda text: None,
        )
        return last

    return runs


def main(argv: list[str] | None = None) -> int:
    """`python app.py`, `python -m cnncompare.ui`, `cnncompare app`: the web app with --host, --port, --runs."""
    parser = argparse.ArgumentParser(prog="cnncompare app", description="Start the cnncompare web app.")
    add_app_arguments(parser)
    args = parser.parse_args(argv)
    options = {}
    if args.host:
        options["server_name"] = args.host
    if args.port:
        options["server_port"] = args.port
    try:
        launch(build_app(args.runs), **options)
    except CNNCompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def launch(demo: gr.Blocks, **kwargs):
    """Start the app. Server name and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when not given.

    The runs folder is never among `allowed_paths`: runs are served only as per-visitor download copies. What a
    stranger could send the server before any handler runs is bounded here: request bodies (`server.http.BodyLimit`),
    the page state kept per browser session (gradio's `state_session_capacity`, CNNCOMPARE_MAX_SESSIONS), and whose
    X-Forwarded-For is believed (uvicorn's FORWARDED_ALLOW_IPS, set from CNNCOMPARE_TRUSTED_PROXIES: by default
    nobody's, so the connection's own address counts).
    """
    ctx: Context = demo.cnncompare_context
    # uvicorn reads it when gradio starts it (its default believes 127.0.0.1, so anyone on the machine could forge)
    # On a Space every request comes through the Space's own proxy (a private address): without believing it, all
    # visitors would be one address. The proxy appends the client's address, so the right-most untrusted entry of
    # X-Forwarded-For is the visitor's and cannot be forged.
    on_space = bool(os.environ.get("SPACE_ID"))
    os.environ["FORWARDED_ALLOW_IPS"] = ctx.env.trusted_proxies or (SPACE_PROXIES if on_space else "")
    clip_every_log_record()  # no visitor input fills the log, whichever logger writes it
    # Every queued event holds a worker thread while it runs or waits in the fair queue.
    threads = ctx.env.queue_size + sum(LANES.values()) + 16
    options = dict(
        theme=theme(),
        css=CSS,
        ssr_mode=False,
        max_file_size=MAX_FILE_SIZE,
        max_threads=threads,
        state_session_capacity=max(1, ctx.env.max_sessions),
        app_kwargs={"middleware": [Middleware(BodyLimit)]},
    )
    options.update(kwargs)
    # gradio also keeps the undelivered messages of its last 2,000 sessions (fixed in its code): not cut here, since
    # a session pushed out of that store loses the stream of an event still running (a training's page)
    return demo.launch(**options)
