"""Live predictions on the camera, on the Predict tab: the first chosen fine-tuned run (the classes you captured,
say) or ImageNet model answers the camera's frames, top-3 and heat map, as Teachable Machine does for one model.

Each frame is a prediction like any other (the "predict" lane of the fair queue, the same cache and batcher, the
heat map counted in the visitor's ledger before it is written), but a camera sends four frames a second: each
visitor gets at most `LIVE_EVERY_S`'s worth of answers, the frames between are skipped and counted on the page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr
import numpy as np
from PIL import Image

from ..errors import CNNCompareError
from ..fileio import write_atomic
from ..server import ledger
from ..serving import Throttle
from .common import in_line, message, warn_md
from .uploads import camera_input

__all__ = ["panel", "wire", "LIVE_EVERY_S", "THROTTLE"]

LIVE_EVERY_S = 0.5  # at most two answers a second per visitor: a 2-core CPU answers a class of 30 at that rate
TOP = 3
SHOWN = 224  # pixels of the heat map on the page
THROTTLE = Throttle(LIVE_EVERY_S)


def panel() -> SimpleNamespace:
    with gr.Accordion("Live: predictions on your camera", open=False, elem_id="live-panel"):
        gr.Markdown(
            "Press the camera's **Record**: the first fine-tuned run chosen above (or else the first model) "
            f"answers what the camera sees, at most {1 / LIVE_EVERY_S:g} frames a second. Fine-tune on classes "
            "made with your camera (Fine-tune tab) to see your own classes recognised live.",
            elem_classes=["cc-note"],
        )
        with gr.Row():
            camera = camera_input("Camera (press Record)", "live-cam")
            heat = gr.Image(label="Where it looked", interactive=False, height=260, elem_id="live-heat")
        top = gr.Label(num_top_classes=TOP, label="What it sees", elem_id="live-top")
        note = gr.Markdown(elem_id="live-note", elem_classes=["cc-note"])
    return SimpleNamespace(camera=camera, heat=heat, top=top, note=note)


def _at_least(cam: np.ndarray, side: int) -> np.ndarray:
    """A heat map of a small input (a 64 px run) drawn at `side` pixels, so it is seen beside the camera."""
    if min(cam.shape) >= side:
        return cam
    return np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((side, side), Image.BILINEAR))


def _answer(ctx, who, frame, inputs, answer: Callable, heat_map: Callable, identity: Callable):
    models, runs, pretrained = inputs
    digest = identity(hashlib.sha256(frame.tobytes()).hexdigest()[:16], who)  # a frame is the visitor's own
    label, weights, note, pred, key = answer(ctx, who, frame, digest, models, runs, pretrained)
    heat = None
    if pred.cam is not None:
        blob = heat_map(key, digest, frame, _at_least(pred.cam, SHOWN))
        with ledger.reserve(ctx, who, len(blob), "The heat map", "downloads"):
            folder = ledger.latest_dir(who, "live")
            for old in folder.glob("*.webp"):
                old.unlink(missing_ok=True)
            heat = str(write_atomic(folder / ledger.picture_name("live", blob, ".webp", folder), blob))
    taken, skipped = THROTTLE.counts(who.id)
    lines = [
        f"**{label}** ({weights}): {pred.time_ms:.0f} ms for this frame. Answered {taken} frame(s), skipped "
        f"{skipped} (at most {1 / LIVE_EVERY_S:g} a second for each visitor)."
    ]
    if note:
        lines.append(f"*{note}.*")
    return "\n\n".join(lines), {lab: float(p) for lab, p in pred.top[:TOP]}, heat


def wire(ctx, live: SimpleNamespace, inputs: list, *, answer: Callable, heat_map: Callable, identity: Callable):
    """`inputs`: the Predict tab's models, runs and pretrained box (and the visitor's key, when the page keeps one);
    `answer`, `heat_map`, `identity`: the tab's own (`predict.predict_one`, its heat maps, its cache identity)."""

    def on_frame(frame, models, runs, pretrained, visitor=None, request: gr.Request = None):
        # A plain function, not a generator: the camera sends its next frame when this event has ended, and
        # gradio keeps a generator's stream event open.
        skip = (gr.skip(), gr.skip(), gr.skip())
        try:
            who = ctx.visitor(visitor, request)
        except CNNCompareError as err:
            return warn_md(message(err)), gr.skip(), gr.skip()
        if frame is None or not THROTTLE.take(who.id):
            return skip

        def work(who):
            try:
                return _answer(ctx, who, frame, (models, runs, pretrained), answer, heat_map, identity)
            except Exception as err:  # one sentence, never a traceback
                return warn_md(message(err)), gr.skip(), gr.skip()

        refused = lambda text: (warn_md(text), gr.skip(), gr.skip())  # noqa: E731
        said = list(in_line(ctx, "predict", visitor, request, work, refused=refused, waiting=lambda text: skip))
        return said[-1] if said else skip  # the place in line is not shown: the answer (or the refusal) is

    live.camera.stream(
        on_frame,
        [live.camera, *inputs],
        [live.note, live.top, live.heat],
        stream_every=0.25,
        time_limit=120,
        concurrency_limit=None,
        concurrency_id="predict",
        api_visibility="private",
        show_progress="hidden",
    )
