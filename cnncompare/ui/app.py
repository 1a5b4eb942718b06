"""The whole app: four tabs over the engine, a queue, and launch settings.

`build_app()` returns the Blocks; `launch(demo, **kw)` starts it with the app's theme, CSS,
upload limit and file permissions (keyword arguments override them, e.g. for tests:
`launch(demo, prevent_thread_lock=True, server_port=PORT)`).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from .. import models
from . import architectures, finetune, learn, predict
from .common import Context

QUEUE_MAX_SIZE = 64  # waiting events over all users; more are refused with a "queue full" message
MAX_FILE_SIZE = "200mb"

CSS = """
.cc-note p, .cc-note li { font-size: 0.95rem; line-height: 1.45; }
.cc-preset:empty { display: none; }
.cc-preset { border-left: 4px solid var(--color-accent); padding: 4px 12px; background: var(--block-background-fill); }
.cc-preset-summary p { margin: 0; }
.cc-progress { position: relative; height: 26px; border-radius: 6px; background: var(--neutral-200);
               overflow: hidden; margin: 4px 0 8px 0; }
.cc-progress-bar { position: absolute; left: 0; top: 0; bottom: 0; background: var(--color-accent);
                   transition: width 0.6s ease; }
.cc-progress-text { position: relative; padding-left: 10px; line-height: 26px; font-size: 0.9rem;
                    font-weight: 600; color: var(--body-text-color); mix-blend-mode: normal; }
.cc-banner p { margin: 0.2em 0; }
#ft-status { min-height: 110px; }
footer { display: none !important; }
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="emerald", neutral_hue="slate")


def _banner() -> str:
    text = ("# cnncompare\nPut classic CNN image classifiers side by side — AlexNet, VGG, GoogLeNet/Inception, "
            "ResNet and their descendants: what they cost, what they predict, and how well each learns your "
            "own small dataset when some of its layers stay frozen.")
    if not models.weights_downloadable():
        text += ("\n\n⚠️ **Offline mode**: pretrained ImageNet weights cannot be downloaded here, so models start "
                 "from **random weights** (every page says so where it matters). The `shapes` dataset is "
                 "generated on this machine, so fine-tuning works fully offline.")
    return text


def build_app(runs_root: str | Path | None = None) -> gr.Blocks:
    """The Blocks app. Fine-tuning runs go to `runs_root`, else $CNNCOMPARE_RUNS, else ./runs."""
    ctx = Context.from_env(runs_root)
    with gr.Blocks(title="cnncompare: classic CNNs side by side", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(_banner(), elem_classes=["cc-banner"])
        with gr.Tabs(selected="architectures") as tabs:
            with gr.Tab("Architectures", id="architectures", elem_id="tab-architectures"):
                arch = architectures.build(ctx)
            with gr.Tab("Predict", id="predict", elem_id="tab-predict") as predict_tab:
                pred = predict.build(ctx)
            with gr.Tab("Fine-tune", id="finetune", elem_id="tab-finetune"):
                ft = finetune.build(ctx)
            with gr.Tab("Learn", id="learn", elem_id="tab-learn"):
                learn.build(ctx, ft, tabs)
        # Newly finished runs appear in the Predict tab's list.
        ft.start_event.then(pred.refresh_runs, None, pred.runs, api_visibility="private", queue=False)
        predict_tab.select(pred.refresh_runs, None, pred.runs, api_visibility="private", queue=False)
        arch.wire_load(demo)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=2)
    demo.cnncompare_context = ctx
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Start the app. Server name and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when not given."""
    ctx: Context = demo.cnncompare_context
    allowed = [str(ctx.runs_root)] + list(kwargs.pop("allowed_paths", None) or [])
    options = dict(theme=theme(), css=CSS, ssr_mode=False, max_file_size=MAX_FILE_SIZE, allowed_paths=allowed)
    options.update(kwargs)
    return demo.launch(**options)
