"""Inside the networks, on the Predict tab: for the picture and models chosen there, what each stage produces (its
strongest channels at the stage's own resolution) and the first layer's kernels, model beside model
(`cnncompare.featuremaps`; `cnncompare features` writes the same pictures).

Computed like a prediction: in the "predict" lane of the fair queue, with the models the Predict tab keeps, and kept
under the picture's identity (the app's examples for everyone, an upload for its visitor alone); the pictures are
written, counted in the visitor's ledger, into their own folder, replacing their previous ones.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr

from .. import data, featuremaps, inference
from ..env import assets_dir
from ..errors import CNNCompareError
from ..fileio import write_atomic
from ..server import ledger
from ..serving import BoundedCache
from .common import in_line, message, parse_names, warn_md

__all__ = ["panel", "wire", "example_panel", "FEATURES", "EXAMPLE"]

SIZE, TOP = 224, 6
EXAMPLE = assets_dir() / "examples" / "house.jpg"  # the Learn tab's picture: the same for everyone
FEATURES = BoundedCache(64 * 2**20, size=lambda fm: 1024 + fm.nbytes())


def panel() -> SimpleNamespace:
    with gr.Accordion("Inside the networks: what each stage sees", open=False, elem_id="fx-panel"):
        gr.Markdown(
            "For the picture and the models above: each stage's six strongest channels, drawn at the stage's own "
            "resolution (224 px in, 7×7 at the end), and the first layer's filters. Models side by side."
        )
        go = gr.Button("Show the feature maps", elem_id="fx-go")
        note = gr.Markdown(elem_classes=["cc-note"], elem_id="fx-note")
        gallery = gr.Gallery(
            label="Feature maps",
            columns=2,
            height="auto",
            object_fit="contain",  # a grid whole, its stage names included
            elem_id="fx-gallery",
            preview=False,
        )
    return SimpleNamespace(go=go, note=note, gallery=gallery)


def _maps(image, names, pretrained, *, ctx, visitor, open_image: Callable, identity: Callable, load: Callable):
    img, digest = open_image(image, ctx.env.max_image_mpix)
    names = parse_names(names, ctx.max_models)
    if not names:
        raise CNNCompareError("Choose at least one ImageNet model above.")
    pictures, lines, notes = [], [], {}
    for name in names:
        try:
            ctx.check_model(name)
            key = (identity(digest, visitor), name, SIZE, bool(pretrained))
            fm = FEATURES.get(key, lambda n=name: featuremaps.feature_maps(img, load(n, bool(pretrained)), SIZE, TOP))
        except CNNCompareError as err:
            lines.append(f"- **{name}**: {message(err)}")
            continue
        pictures.append((featuremaps.grid_image(fm), f"{name}: stage by stage ({fm.weights})"))
        kernels = featuremaps.kernels_image(fm)
        if kernels is not None:
            pictures.append((kernels, f"{name}: first-layer filters"))
        lines.append(f"- {fm.summary()}")
        if fm.note:
            notes.setdefault(fm.note, []).append(name)
    said = [f"*{', '.join(who)}: {note}*" for note, who in notes.items()]  # each note once, with its models
    return "\n".join(lines + [""] + said), _written(ctx, visitor, pictures)


def _written(ctx, visitor, pictures: list) -> list[tuple[str, str]]:
    """The pictures as PNG files in the visitor's own folder, counted in their ledger before they are written; the
    next request's replace them (so a visitor keeps one set, whatever they ask)."""
    blobs = []
    for pic, caption in pictures:
        buf = io.BytesIO()
        pic.save(buf, "PNG")
        blobs.append((buf.getvalue(), caption))
    with ledger.reserve(ctx, visitor, sum(len(b) for b, _ in blobs), "The feature maps", "downloads"):
        folder = ledger.latest_dir(visitor, "maps")
        for old in folder.glob("*.png"):
            old.unlink(missing_ok=True)
        out = []
        for i, (blob, caption) in enumerate(blobs):
            path = folder / ledger.picture_name(f"maps-{i}", blob, ".png", folder)
            write_atomic(path, blob)
            out.append((str(path), caption))
    return out


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


def _example(_value, max_mpix: float):
    """The app's own example picture (not a visitor's upload): shared by everyone, so kept once for all."""
    return inference.load_image(EXAMPLE, max_mpix), data.file_digest(EXAMPLE)


def example_panel(ctx, name: str, *, load: Callable) -> None:
    """A family page's look inside: `name`'s feature maps of the example picture, on demand (Learn tab)."""
    btn = gr.Button(f"What {name} sees: its feature maps of an example picture", elem_id=f"learn-fx-{name}")
    note = gr.Markdown(elem_classes=["cc-note"], elem_id=f"learn-fx-{name}-note")
    gallery = gr.Gallery(
        show_label=False, columns=2, height="auto", object_fit="contain", preview=False, elem_id=f"learn-fx-{name}-gal"
    )

    def show(visitor=None, request: gr.Request = None):
        def work(who):
            yield "Computing the feature maps…", gr.skip()
            try:
                yield _maps(
                    str(EXAMPLE),
                    [name],
                    True,
                    ctx=ctx,
                    visitor=who,
                    open_image=_example,
                    identity=lambda d, v: d,
                    load=load,
                )
            except Exception as err:  # one sentence, never a traceback
                yield warn_md(message(err)), []

        refused = lambda text: (warn_md(text), [])  # noqa: E731
        yield from in_line(ctx, "predict", visitor, request, work, refused=refused, waiting=lambda t: (t, gr.skip()))

    inputs = [ctx.visitor_state] if ctx.visitor_state is not None else None
    btn.click(show, inputs, [note, gallery], api_visibility="private", concurrency_limit=None, concurrency_id="predict")
