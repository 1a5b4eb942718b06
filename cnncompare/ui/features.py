"""Inside the networks, on the Predict tab: for the picture and models chosen there, what each stage produces (its
strongest channels at the stage's own resolution) and the first layer's kernels, model beside model
(`cnncompare.featuremaps`; `cnncompare features` writes the same pictures).

Computed like a prediction: in the "predict" lane of the fair queue, with the models the Predict tab keeps, and kept
under the picture's identity (the app's examples for everyone, an upload for its visitor alone).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr

from .. import featuremaps
from ..errors import CNNCompareError
from ..serving import BoundedCache
from .common import in_line, message, parse_names, warn_md

__all__ = ["panel", "wire", "FEATURES"]

SIZE, TOP = 224, 6
FEATURES = BoundedCache(64 * 2**20, size=lambda fm: 1024 + fm.nbytes())


def panel() -> SimpleNamespace:
    with gr.Accordion("Inside the networks: what each stage sees", open=False, elem_id="fx-panel"):
        gr.Markdown(
            "For the picture and the models above: each stage's six strongest channels, drawn at the stage's own "
            "resolution (224 px in, 7×7 at the end), and the first layer's filters. Models side by side."
        )
        go = gr.Button("Show the feature maps", elem_id="fx-go")
        note = gr.Markdown(elem_classes=["cc-note"], elem_id="fx-note")
        gallery = gr.Gallery(label="Feature maps", columns=2, height="auto", elem_id="fx-gallery", preview=False)
    return SimpleNamespace(go=go, note=note, gallery=gallery)


def _maps(image, names, pretrained, *, ctx, visitor, open_image: Callable, identity: Callable, load: Callable):
    img, digest = open_image(image, ctx.env.max_image_mpix)
    names = parse_names(names, ctx.max_models)
    if not names:
        raise CNNCompareError("Choose at least one ImageNet model above.")
    shown, lines = [], []
    for name in names:
        try:
            ctx.check_model(name)
            key = (identity(digest, visitor), name, SIZE, bool(pretrained))
            fm = FEATURES.get(key, lambda n=name: featuremaps.feature_maps(img, load(n, bool(pretrained)), SIZE, TOP))
        except CNNCompareError as err:
            lines.append(f"- **{name}**: {message(err)}")
            continue
        shown.append((featuremaps.grid_image(fm), f"{name}: stage by stage ({fm.weights})"))
        kernels = featuremaps.kernels_image(fm)
        if kernels is not None:
            shown.append((kernels, f"{name}: first-layer filters"))
        lines.append(f"- {fm.summary()}" + (f". *{fm.note}*" if fm.note else ""))
    return "\n".join(lines), shown


def wire(ctx, fx: SimpleNamespace, inputs: list, *, open_image: Callable, identity: Callable, load: Callable) -> None:
    """`inputs`: the Predict tab's picture, models and pretrained box (and the visitor's key, when the page keeps
    one). `open_image`, `identity`, `load`: the tab's own (an upload only; its cache identity; its kept models)."""

    def show(image, names, pretrained, visitor=None, request: gr.Request = None):
        def work(who):
            yield "Computing the feature maps…", gr.skip()
            try:
                yield _maps(
                    image, names, pretrained, ctx=ctx, visitor=who, open_image=open_image, identity=identity, load=load
                )
            except Exception as err:  # one sentence, never a traceback
                yield warn_md(message(err)), []

        yield from in_line(
            ctx,
            "predict",
            visitor,
            request,
            work,
            refused=lambda text: (warn_md(text), []),
            waiting=lambda text: (text, gr.skip()),
            warn=True,
        )

    fx.go.click(
        show, inputs, [fx.note, fx.gallery], api_visibility="private", concurrency_limit=None, concurrency_id="predict"
    )
