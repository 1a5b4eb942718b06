"""Make a dataset with your camera, on the Fine-tune tab (`cnncompare.capture`): name a class, let the camera record
into it (three frames a second) or snap one frame, upload pictures instead where there is no camera; see the counts
and the pictures, delete bad ones; then train on the classes like on an upload ('your camera' in the dataset list:
the same report, split, admission and quota).

Where things go: the classes live in the visitor's own data folder (`ledger.camera_dir`), every picture counted in
their ledger before it is written; the thumbnails shown are written, counted, into their download folder. Frames
arrive as the streaming camera sends them (`uploads.CameraFrame`: bounded, costed from the header before decoding).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from types import SimpleNamespace

import gradio as gr
from PIL import Image

from .. import capture, inference
from ..errors import CNNCompareError, shown
from ..fileio import write_atomic
from ..server import ledger
from ..serving import Throttle
from .common import message, warn_md
from .uploads import UploadedFiles, camera_input, display_name

__all__ = ["panel", "wire", "CAPTURE_EVERY_S"]

CAPTURE_EVERY_S = 1 / 3  # frames kept per second while recording: enough variety, little disk
MAX_UPLOADS = 50  # pictures in one upload of the fallback
THUMB = 72
THROTTLE = Throttle(CAPTURE_EVERY_S)
_SNAPS: OrderedDict[str, None] = OrderedDict()  # visitors whose next frame is kept whatever the checkbox says
MAX_SNAPS = 10_000  # a stranger pressing Snap under many keys keeps at most this many (the oldest go)


def panel() -> SimpleNamespace:
    with gr.Accordion("Make a dataset with your camera", open=False, elem_id="cam-panel"):
        gr.Markdown(
            "Name a class, point the camera at it, tick **Capture** and press the camera's **Record**: three "
            "frames a second go into the class. Untick, rename (e.g. `cup`, then `no_cup`) and capture the next "
            f"one. At least {capture.MIN_TO_TRAIN} pictures per class, at most {capture.MAX_PER_CLASS}; "
            f"{capture.MAX_CLASSES} classes. No camera? Upload pictures into the class instead. Then press "
            "**Train on these classes**: they are kept in your own folder on this server and shown to no one else.",
            elem_classes=["cc-note"],
        )
        with gr.Row():
            name = gr.Textbox("class_1", label="Class", max_lines=1, elem_id="cam-class", scale=2)
            capturing = gr.Checkbox(False, label="Capture while the camera records", elem_id="cam-capturing")
        camera = camera_input(
            "Camera (press Record to stream; nothing is kept unless Capture is ticked or you Snap)", "cam-video"
        )
        with gr.Row():
            snap = gr.Button("Snap one frame", elem_id="cam-snap", min_width=90)
            use = gr.Button("Train on these classes", variant="primary", elem_id="cam-use", min_width=90)
        pictures = UploadedFiles(
            label="Or upload pictures into this class (JPEG or PNG, several at once)",
            file_count="multiple",
            file_types=["image"],
            type="filepath",
            height=110,
            elem_id="cam-upload",
        )
        counts = gr.Markdown(elem_id="cam-counts", elem_classes=["cc-note"])
        with gr.Row():
            view = gr.Dropdown([], label="Show the pictures of", elem_id="cam-view", scale=2)
            show = gr.Button("Show", elem_id="cam-show", min_width=60, scale=0)
        thumbs = gr.Gallery(
            label="Pictures (click one, then delete it)",
            columns=8,
            height=180,
            allow_preview=False,
            elem_id="cam-thumbs",
        )
        shown = gr.State([])  # (class, file names) in the gallery's order: what a click picks
        picked = gr.State(None)
        with gr.Row():
            delete = gr.Button("Delete the picked picture", elem_id="cam-delete", size="sm")
            delete_class = gr.Button("Delete this class", elem_id="cam-delete-class", size="sm", variant="stop")
    return SimpleNamespace(
        name=name,
        capturing=capturing,
        camera=camera,
        snap=snap,
        use=use,
        pictures=pictures,
        counts=counts,
        view=view,
        show=show,
        thumbs=thumbs,
        shown=shown,
        picked=picked,
        delete=delete,
        delete_class=delete_class,
    )


def _captures(ctx, who) -> capture.Captures:
    return capture.Captures(ledger.camera_dir(ctx, who))


def _counts_md(caps: capture.Captures, said: str = "") -> str:
    why = caps.ready()
    tail = f"*{why}*" if why else "Ready: press **Train on these classes**, then Estimate or Start."
    return "\n\n".join(x for x in (said, f"**Your classes**: {caps.summary()}", tail) if x)


def _store(ctx, who, cls: str, img: Image.Image) -> capture.Frame:
    """One picture into class `cls`, counted in the visitor's ledger before it is written."""
    caps = _captures(ctx, who)
    cls = capture.class_name(cls)
    blob = capture.encode(img)
    with ledger.reserve(ctx, who, len(blob), "The picture", "data"):
        return caps.add(cls, blob)


def _thumbs(ctx, who, cls: str | None) -> tuple[list, tuple]:
    """The class's pictures as small JPEGs in the visitor's download folder (counted; the previous set replaced),
    and (class, names) in the same order."""
    frames = _captures(ctx, who).classes().get(cls or "", [])
    blobs = []
    for f in frames:
        with Image.open(f.path) as img:  # written by `capture.encode`: small, ours
            img = img.convert("RGB")
            img.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
            blobs.append(buf.getvalue())
    with ledger.reserve(ctx, who, sum(map(len, blobs)), "The thumbnails", "downloads"):
        folder = ledger.latest_dir(who, "camera")
        for old in folder.glob("*.jpg"):
            old.unlink(missing_ok=True)
        out = [
            (str(write_atomic(folder / f"{i:03d}-{f.name}", b)), f"{cls} {i + 1}")
            for i, (f, b) in enumerate(zip(frames, blobs))
        ]
    return out, (cls, [f.name for f in frames])


def _view(ctx, who, cls: str | None, said: str = ""):
    """(counts, the class selector, the gallery, what it shows, no picked picture) after a change."""
    caps = _captures(ctx, who)
    names = list(caps.counts())
    cls = cls if cls in names else (names[-1] if names else None)
    pics, order = _thumbs(ctx, who, cls)
    return _counts_md(caps, said), gr.Dropdown(choices=names, value=cls), pics, order, None


def _adders(ctx) -> SimpleNamespace:
    """What puts pictures into a class: the camera's frames, Snap, the uploads."""

    def on_frame(frame, cls, capturing, visitor=None, request: gr.Request = None):
        try:
            who = ctx.visitor(visitor, request)
            snapped = who.id in _SNAPS
            if frame is None or not (capturing or snapped) or not (snapped or THROTTLE.take(who.id)):
                return gr.skip()
            _SNAPS.pop(who.id, None)
            kept = _store(ctx, who, cls, frame)
            return _counts_md(_captures(ctx, who), f"Kept a frame in **{kept.cls}**.")
        except CNNCompareError as err:
            return warn_md(message(err))

    def on_snap(cls, visitor=None, request: gr.Request = None):
        try:
            who = ctx.visitor(visitor, request)
            capture.class_name(cls)
        except CNNCompareError as err:
            return warn_md(message(err))
        _SNAPS[who.id] = None
        while len(_SNAPS) > MAX_SNAPS:
            _SNAPS.popitem(last=False)
        return "The camera's next frame goes into the class (press the camera's **Record** if it is not streaming)."

    def on_upload(files, cls, visitor=None, request: gr.Request = None):
        try:
            who = ctx.visitor(visitor, request)
            cls = capture.class_name(cls)
            files = list(files or [])
            if len(files) > MAX_UPLOADS:
                raise CNNCompareError(f"Upload at most {MAX_UPLOADS} pictures at a time (got {len(files)}).")
            kept, bad = 0, []
            for path in files:
                try:
                    img = inference.load_image(path, ctx.env.max_image_mpix)  # costed from its header first
                except CNNCompareError:
                    bad.append(display_name(path))
                    continue
                _store(ctx, who, cls, img)
                kept += 1
            names = ", ".join(shown(b, 40) for b in bad[:5])
            said = f"Added {kept} picture(s) to **{cls}**." + (f" Not images: {names}." if bad else "")
            return _view(ctx, who, cls, said)
        except CNNCompareError as err:
            return warn_md(message(err)), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    return SimpleNamespace(on_frame=on_frame, on_snap=on_snap, on_upload=on_upload)


def _viewers(ctx) -> SimpleNamespace:
    """What shows and deletes pictures."""

    def on_show(cls, typed, visitor=None, request: gr.Request = None):
        try:
            return _view(ctx, ctx.visitor(visitor, request), cls or str(typed or "").strip())
        except CNNCompareError as err:
            return warn_md(message(err)), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def on_pick(evt: gr.SelectData):
        return evt.index

    def delete(who, order, picked, whole: bool):
        cls, names = order if order else (None, [])
        if not cls:
            raise CNNCompareError("Show a class first.")
        if whole:
            _captures(ctx, who).remove(cls)
            return _view(ctx, who, None, f"Deleted the class **{cls}**.")
        if not isinstance(picked, int) or not 0 <= picked < len(names):
            raise CNNCompareError("Click a picture first, then delete it.")
        _captures(ctx, who).remove(cls, names[picked])  # only a name the folder lists
        return _view(ctx, who, cls, f"Deleted picture {picked + 1} of **{cls}**.")

    def on_delete(order, picked, visitor=None, request: gr.Request = None):
        try:
            return delete(ctx.visitor(visitor, request), order, picked, False)
        except CNNCompareError as err:
            return warn_md(message(err)), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    def on_delete_class(order, visitor=None, request: gr.Request = None):
        try:
            return delete(ctx.visitor(visitor, request), order, None, True)
        except CNNCompareError as err:
            return warn_md(message(err)), gr.skip(), gr.skip(), gr.skip(), gr.skip()

    return SimpleNamespace(on_show=on_show, on_pick=on_pick, on_delete=on_delete, on_delete_class=on_delete_class)


def wire(ctx, cam: SimpleNamespace, state) -> None:
    """The panel's events; `state`: the visitor's key (None when the tab is built on its own)."""
    extra = [state] if state is not None else []
    view_out = [cam.counts, cam.view, cam.thumbs, cam.shown, cam.picked]
    private = dict(api_visibility="private", show_progress="hidden")

    a, v = _adders(ctx), _viewers(ctx)
    cam.camera.stream(
        a.on_frame,
        [cam.camera, cam.name, cam.capturing, *extra],
        cam.counts,
        stream_every=0.3,
        time_limit=300,
        concurrency_limit=None,  # an open camera holds its event for its time limit: no slots to run out of
        concurrency_id="camera",
        **private,
    )
    cam.snap.click(a.on_snap, [cam.name, *extra], cam.counts, queue=False, **private)
    cam.pictures.upload(a.on_upload, [cam.pictures, cam.name, *extra], view_out, concurrency_limit=2, **private)
    gr.on(
        [cam.show.click, cam.view.input],
        v.on_show,
        [cam.view, cam.name, *extra],
        view_out,
        concurrency_limit=4,
        **private,
    )
    cam.thumbs.select(v.on_pick, None, cam.picked, queue=False, **private)
    cam.delete.click(v.on_delete, [cam.shown, cam.picked, *extra], view_out, **private)
    cam.delete_class.click(v.on_delete_class, [cam.shown, *extra], view_out, **private)
