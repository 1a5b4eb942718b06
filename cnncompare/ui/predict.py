"""Predict tab: one image, several models side by side: top-5 classes, time, Grad-CAM."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd
import torch

from .. import data, inference, models, runs
from ..env import assets_dir
from ..errors import CNNCompareError
from ..models import catalog
from ..server import ledger, visitors
from ..serving import Batcher, BoundedCache
from . import exports, lenient
from . import features as features_ui
from . import live as live_ui
from . import weights as weights_ui
from .common import MODELS, file_path, in_line, message, parse_names, warn_md
from .gpu import gpu
from .uploads import UploadedImage, checked_upload, display_name

EXAMPLES_DIR = assets_dir() / "examples"
DEFAULT_MODELS = list(catalog.CLASSIC_FOUR)
TOP_K = 5
NO_HEAT_MAP = inference.NO_HEAT_MAP


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _imagenet_key(name: str, pretrained: bool, weights_file: str | None) -> tuple:
    stamp = None
    if pretrained and weights_file:
        stat = Path(weights_file).stat()
        stamp = (weights_file, stat.st_mtime_ns, stat.st_size)  # a new upload for the model is a new entry
    return ("imagenet", name, bool(pretrained), _device(), stamp)


def imagenet_model(name: str, pretrained: bool, weights_file: str | None = None) -> inference.LoadedModel:
    """The engine's `inference.imagenet_model` (a weights file, else ImageNet weights, else random weights with a
    note), kept in the shared model cache; `weights_file`: the visitor's own upload for this model."""
    build = lambda: inference.imagenet_model(name, bool(pretrained), weights_file, _device())  # noqa: E731
    return MODELS.get(_imagenet_key(name, pretrained, weights_file), build, size=lambda v: models.model_bytes(v.model))


def run_model(ctx, visitor: visitors.Visitor, name: str):
    """(model, saved run, weights text, note) of one of the visitor's runs (or a shared example)."""
    saved = visitors.find_run(ctx, visitor, name)
    device = _device()
    model = MODELS.get(_run_key(saved), lambda: saved.load_model(device))
    acc = saved.results.get("val_top1") if saved.results else None
    frozen = saved.entry.freeze != "none"
    weights = "fine-tuned" + (
        " (from ImageNet)"
        if saved.entry.pretrained
        else " (on random-weight features)"
        if frozen
        else " (from scratch)"
    )
    note = (
        f"fine-tuned on {saved.config['dataset']['name']} ({len(saved.classes)} classes"
        + (f", validation top-1 {acc:.1f} %" if acc is not None else "")
        + "): it only knows those classes"
    )
    return model, saved, weights, note


def run_label(saved: runs.SavedRun) -> str:
    """The run's own label (as in the Fine-tune table) and when it ran: 'resnet18@none optimizer=adam · 16:25:05'
    (two runs with the same settings stay apart)."""
    return f"{saved.run_label} · {saved.time_text.split()[-1]}"


def run_choices(ctx, visitor: visitors.Visitor) -> tuple[list[tuple[str, str]], str]:
    """(label, value) pairs of the visitor's finished runs (newest first, then shared examples), and a note on
    run folders that could not be read (skipped)."""
    choices, notes = visitors.visible_runs(ctx, visitor)
    return [(c.label, c.value) for c in choices], visitors.skipped_note(notes)


def _image_from(value, max_mpix: float):
    """(the decoded image, the digest of its bytes: what identifies it in the prediction cache)."""
    path = file_path(value)
    if path is None:
        raise CNNCompareError("Upload an image (or click one of the examples) first.")
    path = checked_upload(path, "The image")
    inference.check_pixels(path, max_mpix, display_name(path))  # from its header: too many pixels never decode
    try:
        return inference.load_image(path, max_mpix), data.file_digest(path)
    except CNNCompareError:  # the engine's sentence names the file by its server path: name the upload instead
        raise CNNCompareError(f"Could not read the image '{display_name(path)}': upload a JPEG or PNG file.") from None


@functools.lru_cache(maxsize=1)
def _example_digests() -> frozenset[str]:
    return frozenset(data.file_digest(f) for f in EXAMPLES_DIR.glob("*") if f.is_file())


def _identity(digest: str, visitor: visitors.Visitor) -> str:
    """What a prediction of this image is kept under: the app's own example pictures are shared by everyone (a class
    clicking the same example computes it once); a visitor's upload is kept for them alone, so how fast an answer
    comes says nothing about what anyone else uploaded."""
    return digest if digest in _example_digests() else f"{visitor.id}:{digest}"


def _run_key(saved: runs.SavedRun) -> tuple:
    weights = saved.path / "weights.safetensors"
    return ("run", str(saved.path), weights.stat().st_mtime_ns if weights.is_file() else 0, _device())


def _run_batch(model_key: tuple, items: list) -> list[inference.Prediction]:
    """One batch of visitors' images for one model (`serving.Batcher`): top-k and Grad-CAM in one pass."""
    model, _, size, classes = items[0]
    return inference.predict_batch(model, [it[1] for it in items], size=size, classes=classes, top_k=TOP_K)


# A prediction is a pure function of (the image's bytes, the model and its weights): kept and shared, bounded in
# bytes (a heat map is 200 KB). Predictions of one model that arrive within 50 ms run as one batch.
PREDICTIONS = BoundedCache(256 * 2**20, size=lambda p: 4096 + (p.cam.nbytes if p.cam is not None else 0))
BATCHER = Batcher(_run_batch, window_s=0.05, max_batch=16)


def _predict(model_key: tuple, digest: str, model, img, size, classes) -> inference.Prediction:
    """The prediction of this image by this model: the kept one, else computed in a batch with the other
    visitors' images for the same model arriving at the same moment."""
    return PREDICTIONS.get((digest, model_key), lambda: BATCHER.submit(model_key, (model, img, size, classes))[0])


# A heat map is sent as a file of the visitor's own, under a name no other visitor uses (the encoded image is kept
# by content, like the prediction): gradio stores an image it is handed by the hash of its bytes and rewrites that
# file every time, so two visitors getting the same picture at once could be served it half-written. A visitor's
# next prediction overwrites their files (one prediction of theirs runs at a time), so repeating one adds nothing.
HEAT_MAPS = BoundedCache(64 * 2**20, size=len)


def heat_map_bytes(key: tuple, digest: str, img, cam) -> bytes:
    """The heat map over the picture, as WebP, kept by content."""

    def encode() -> bytes:
        buf = io.BytesIO()
        inference.overlay(img, cam).save(buf, "WEBP", quality=90)
        return buf.getvalue()

    return HEAT_MAPS.get((digest, key), encode)


def _heat_map_file(key: tuple, digest: str, img, cam, folder: Path, n: int) -> str:
    if n == 0:  # a new answer: the previous one's pictures go (one prediction of a visitor's runs at a time)
        for old in folder.glob("heat-map-*"):
            old.unlink(missing_ok=True)
    blob = heat_map_bytes(key, digest, img, cam)
    path = folder / ledger.picture_name(f"heat-map-{n}", blob, ".webp", folder)
    path.write_bytes(blob)
    return str(path)


def predict_one(ctx, visitor: visitors.Visitor, img, digest: str, models_selected, runs_selected, pretrained):
    """What the live camera shows: the first chosen fine-tuned run (else the first chosen ImageNet model) on one
    picture, through the same cache and batcher as Predict. Returns (label, weights, note, prediction, key).

    Raises:
        CNNCompareError: nothing chosen, an unknown model or run, in one sentence.
    """
    run_names = parse_names(runs_selected, ctx.max_models)
    names = parse_names(models_selected, ctx.max_models)
    if run_names:
        model, saved, weights, note = run_model(ctx, visitor, run_names[0])
        label, size, classes, key = run_label(saved), saved.settings.size, saved.classes, _run_key(saved)
    elif names:
        ctx.check_model(names[0])
        own = weights_ui.weights_for(ctx, visitor, names[0], imagenet=True) if pretrained else None
        loaded = imagenet_model(names[0], bool(pretrained), own)
        model, weights, note = loaded.model, loaded.weights, loaded.note
        label, size, classes, key = names[0], None, None, _imagenet_key(names[0], bool(pretrained), own)
    else:
        raise CNNCompareError("Choose a model or one of your fine-tuned runs above.")
    return label, weights, note, _predict(key, digest, model, img, size, classes), key


def _empty():
    return pd.DataFrame(columns=["rank"]), [], []


@gpu(duration=60)
def predict_image(image, models_selected, runs_selected, pretrained, *, ctx, visitor: visitors.Visitor):
    """Top-5 of every chosen model (and fine-tuned run) on one image, with its time and Grad-CAM."""
    limit = ctx.max_models
    try:
        img, digest = _image_from(image, ctx.env.max_image_mpix)
        digest = _identity(digest, visitor)
        names = parse_names(models_selected, limit)
        run_names = parse_names(runs_selected, limit)
        if not names and not run_names:
            raise CNNCompareError("Choose at least one model or fine-tuned run.")
        if len(names) + len(run_names) > limit:
            raise CNNCompareError(
                f"Choose at most {limit} models and runs at a time (got {len(names) + len(run_names)})."
            )
    except Exception as err:
        text = message(err)
        gr.Warning(text)
        return (warn_md(text), *_empty())
    columns: dict[str, list[str]] = {}
    gallery, details, errors = [], [], []
    notes: dict[str, list[str]] = {}  # note -> models it applies to (one line for all random-weight models)
    jobs = [("model", n) for n in names] + [("run", n) for n in run_names]
    for kind, name in jobs:
        try:
            if kind == "model":
                ctx.check_model(name)  # the catalog, or a timm model under this server's size cap
                own = weights_ui.weights_for(ctx, visitor, name, imagenet=True) if pretrained else None
                loaded = imagenet_model(name, bool(pretrained), own)
                model, weights, note = loaded.model, loaded.weights, loaded.note
                label, size, classes, key = name, None, None, _imagenet_key(name, bool(pretrained), own)
            else:
                model, saved, weights, note = run_model(ctx, visitor, name)
                label = run_label(saved)
                size, classes, key = saved.settings.size, saved.classes, _run_key(saved)
            pred = _predict(key, digest, model, img, size, classes)
        except Exception as err:
            errors.append(warn_md(f"{name}: {message(err)}"))
            continue
        cells = [f"{lab} — {100 * p:.1f} %" for lab, p in pred.top] + [""] * (TOP_K - len(pred.top))
        columns[label] = cells + [f"{pred.time_ms:.1f}", weights]
        model_notes = [note] if note else []  # e.g. random weights
        if pred.note and not (note and pred.note.startswith("random weights")):  # said once per model
            model_notes.append(pred.note)
        if pred.cam is None and not any("heat map" in n for n in model_notes):
            model_notes.append(NO_HEAT_MAP)
        for n in model_notes:
            notes.setdefault(n, []).append(label)
        if pred.cam is not None:
            top_label, top_p = pred.top[0]
            grid = f", from a {pred.cam_grid[0]}×{pred.cam_grid[1]} map" if pred.cam_grid else ""
            heat = _heat_map_file(key, digest, img, pred.cam, ledger.heat_maps_dir(visitor), len(gallery))
            gallery.append((heat, f"{label}: {top_label} ({100 * top_p:.1f} %){grid}"))
        details.append(
            dict(
                model=label,
                run=name if kind == "run" else None,
                weights=weights,
                time_ms=round(pred.time_ms, 2),
                note="; ".join(model_notes),
                heat_map=pred.cam is not None,
                top=[dict(label=lab, prob=round(p, 6)) for lab, p in pred.top],
            )
        )
    rows = [str(i + 1) for i in range(TOP_K)] + ["time (ms)", "weights"]
    table = pd.DataFrame({"rank": rows, **columns})
    head = (
        f"**{len(details)} model(s).** Top-{TOP_K} classes with their softmax probabilities; time = one forward "
        f"and backward pass per image on {_device()} (top-5 and heat map together; images other visitors sent at the "
        "same moment run in the same batch, and an image this server has seen is answered from its memory). The "
        "heat maps (Grad-CAM) show where each model looked for its top class: red = most important. For a model's "
        "own batch-1 latency, see the Architectures tab."
    )
    lines = [head] + [f"**{', '.join(labels)}**: {note}." for note, labels in notes.items()] + errors
    return "\n\n".join(lines), table, gallery, details


def _workspace_panel() -> SimpleNamespace:
    """Create, join or leave a shared workspace (its events are wired by `build` where the visitor's key exists)."""
    with gr.Accordion("Your runs are private to this browser (shared workspaces)", open=False):
        gr.Markdown(
            "Runs you fine-tune are kept for this browser only: nobody else sees, uses or downloads "
            "them, and a page refresh keeps them. A **workspace** lets several browsers share their runs "
            "(a class): one person creates it and shares its link; everyone who opens the link (or types "
            "its code here) sees and adds to the same runs. Weights files you upload stay yours. Runs "
            "are deleted after a while and when the space runs out: keep the zip download of the ones "
            "that matter.",
            elem_classes=["cc-note"],
        )
        with gr.Row(equal_height=True):
            create = gr.Button("Create a workspace", scale=1, elem_id="pred-create")
            leave = gr.Button("Back to my own runs", scale=1, elem_id="pred-leave")
        with gr.Row(equal_height=True):
            code = gr.Textbox(
                label="Workspace code",
                type="password",
                scale=4,
                elem_id="pred-code",
                placeholder="the code of a workspace someone created",
            )
            join = gr.Button("Join", scale=1, elem_id="pred-join")
        workspace_md = gr.Markdown(elem_id="pred-workspace")
    return SimpleNamespace(create=create, leave=leave, code=code, join=join, md=workspace_md)


def _outputs() -> tuple:
    """Under the form: the note, the top-5 table, the heat maps and the raw predictions."""
    note = gr.Markdown(elem_classes=["cc-note"], elem_id="pred-note")
    table = gr.Dataframe(label="Top-5, side by side", interactive=False, wrap=True, elem_id="pred-table")
    gallery = gr.Gallery(
        label="Where each model looked (Grad-CAM for its top class)",
        columns=5,
        height=290,
        object_fit="contain",
        elem_id="pred-gallery",
        allow_preview=True,
    )
    with gr.Accordion("Raw predictions (JSON)", open=False):
        details = gr.JSON(label="predictions", elem_id="pred-json")
    return note, table, gallery, details


def _layout(ctx) -> SimpleNamespace:
    gr.Markdown(
        "Upload a picture (or click an example) and compare what each network predicts. With "
        "ImageNet weights the models know 1,000 everyday classes; a **fine-tuned run** from the "
        "Fine-tune tab knows only the classes of its dataset."
    )
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            # Only uploads are opened: a file named by its path on the server is refused (uploads.py).
            image = UploadedImage(
                type="filepath", label="Image", height=300, elem_id="pred-image", sources=["upload", "clipboard"]
            )
            image.max_mpix = ctx.env.max_image_mpix
            examples = sorted(EXAMPLES_DIR.glob("*.jpg"))
            if examples:
                gr.Examples(
                    [[str(p)] for p in examples],
                    inputs=[image],
                    label="Examples (drawn pictures)",
                    example_labels=[p.stem for p in examples],
                    examples_per_page=10,
                )
        with gr.Column(scale=3):
            models_dd = lenient.Dropdown(
                choices=catalog.names(),
                value=DEFAULT_MODELS,
                multiselect=True,
                allow_custom_value=True,
                elem_id="pred-models",
                label="Models (ImageNet classes)",
                info=f"the catalog, or any timm model under {ctx.env.max_model_params_m:,.0f} M parameters",
            )
            pretrained = gr.Checkbox(
                value=True,
                label="Use pretrained ImageNet weights when they can be loaded",
                info="offline they cannot: the models then have random weights (said so below)",
            )
            with gr.Row(equal_height=True):
                # the choices differ per visitor (set when the page loads): any name is taken, and the handler
                # finds it among the caller's own runs only
                runs_dd = lenient.Dropdown(
                    choices=[],
                    value=[],
                    multiselect=True,
                    scale=5,
                    allow_custom_value=True,
                    label="Your fine-tuned runs (from the Fine-tune tab)",
                    elem_id="pred-runs",
                )
                refresh = gr.Button("↻", scale=0, min_width=50, elem_id="pred-refresh")
            runs_note = gr.Markdown(elem_id="pred-runs-note")
            with gr.Accordion("Take a run home: standalone weights and ONNX", open=False):
                export_panel = exports.build(ctx, "pred")
            ws = _workspace_panel()
            go_btn = gr.Button("Predict", variant="primary", elem_id="pred-go")
    note, table, gallery, details = _outputs()
    live = live_ui.panel()
    fx = features_ui.panel()
    return SimpleNamespace(
        image=image,
        models_dd=models_dd,
        pretrained=pretrained,
        runs_dd=runs_dd,
        refresh=refresh,
        runs_note=runs_note,
        export_panel=export_panel,
        ws=ws,
        go_btn=go_btn,
        note=note,
        table=table,
        gallery=gallery,
        details=details,
        fx=fx,
        live=live,
    )


def _workspace_handlers(ctx, refresh_runs) -> SimpleNamespace:
    """Join (by code), create and leave a workspace; each answers (state, note, runs list, runs note)."""

    def joined(code_text, visitor, request, created: bool = False):
        try:
            value = visitors.join_workspace(visitor, code_text, ctx.workspaces, visitors.address_of(request))
        except CNNCompareError as err:
            return ws_refused(str(err))
        dd, skipped = refresh_runs(value, request)
        if not value["code"]:
            text = "Back to your own runs."
        elif created:
            page = str((getattr(request, "headers", None) or {}).get("referer") or "").split("?")[0][:200]
            link = f"{page}?workspace={value['code']}" if page else f"this page's address + ?workspace={value['code']}"
            text = (
                f"Created a workspace, and you are in it. Share its link (shown only now, so copy it): `{link}`. "
                "Everyone who opens it shares the runs listed above; new runs go there."
            )
        else:
            text = "Using the shared workspace of that code: its runs are listed above, and your new runs go there."
        return value, text, dd, skipped

    def ws_refused(text: str):
        return gr.skip(), warn_md(text), gr.skip(), gr.skip()

    def ws_waiting(text: str):
        return gr.skip(), text, gr.skip(), gr.skip()

    # workspace events wait in the fair queue like every other request (2,000 calls once took 59 s of the server)
    def use_code(code_text, visitor=None, request: gr.Request = None):
        work = lambda who: joined(code_text, visitor, request)  # noqa: E731
        yield from in_line(ctx, "blocks", visitor, request, work, refused=ws_refused, waiting=ws_waiting)

    def create_workspace(visitor=None, request: gr.Request = None):
        def work(who):
            try:  # a few per visitor (and per address) in ten minutes
                code = ctx.workspaces.create(who.id, who.address)
            except CNNCompareError as err:
                return ws_refused(str(err))
            return joined(code, visitor, request, created=True)

        yield from in_line(ctx, "blocks", visitor, request, work, refused=ws_refused, waiting=ws_waiting)

    def leave_workspace(visitor=None, request: gr.Request = None):
        # the key alone: a stored code this server no longer knows (a restart without its runs folder) must not
        # stop anyone from going back to their own runs
        key = visitor.get("key") if isinstance(visitor, dict) else visitor
        yield from use_code("", {"key": key} if key else None, request)

    return SimpleNamespace(use_code=use_code, create=create_workspace, leave=leave_workspace)


def build(ctx) -> SimpleNamespace:
    """The tab: its layout (`_layout`), then the prediction, the runs list and the workspaces wired to it."""
    ui = _layout(ctx)
    image, models_dd, pretrained, runs_dd, refresh = ui.image, ui.models_dd, ui.pretrained, ui.runs_dd, ui.refresh
    runs_note, export_panel, go_btn = ui.runs_note, ui.export_panel, ui.go_btn
    note, table, gallery, details = ui.note, ui.table, ui.gallery, ui.details
    state = ctx.visitor_state

    def refused(text: str):
        gr.Warning(text)
        return (warn_md(text), *_empty())

    def predict(image, models, runs, pretrained, visitor=None, request: gr.Request = None):
        """Top-5 of every chosen model (and of the caller's own fine-tuned runs) on one uploaded image.
        `visitor`: the caller's key (the page sends it; API clients may leave it out)."""
        yield from in_line(
            ctx,
            "predict",
            visitor,
            request,
            lambda who: predict_image(image, models, runs, pretrained, ctx=ctx, visitor=who),
            refused=refused,
            waiting=lambda text: (text, gr.skip(), gr.skip(), gr.skip()),
        )

    def refresh_runs(visitor=None, request: gr.Request = None):
        try:
            choices, skipped = run_choices(ctx, ctx.visitor(visitor, request))
        except CNNCompareError as err:
            return gr.Dropdown(choices=[]), warn_md(str(err))
        return gr.Dropdown(choices=choices), skipped

    wh = _workspace_handlers(ctx, refresh_runs)
    inputs = [image, models_dd, runs_dd, pretrained] + ([state] if state is not None else [])
    event = go_btn.click(
        predict,
        inputs,
        [note, table, gallery, details],
        api_name="predict",
        concurrency_limit=None,
        concurrency_id="predict",
    )
    features_ui.wire(
        ctx,
        ui.fx,
        [image, models_dd, pretrained] + ([state] if state is not None else []),
        open_image=_image_from,
        identity=_identity,
        load=imagenet_model,
    )
    live_ui.wire(
        ctx,
        ui.live,
        [models_dd, runs_dd, pretrained] + ([state] if state is not None else []),
        answer=predict_one,
        heat_map=heat_map_bytes,
        identity=_identity,
    )
    refresh_inputs = [state] if state is not None else None
    refresh.click(refresh_runs, refresh_inputs, [runs_dd, runs_note], api_visibility="private", queue=False)
    if state is not None:
        ws_outputs = [state, ui.ws.md, runs_dd, runs_note]
        ws = dict(api_visibility="private", concurrency_limit=None)
        gr.on([ui.ws.join.click, ui.ws.code.submit], wh.use_code, [ui.ws.code, state], ws_outputs, **ws)
        ui.ws.create.click(wh.create, [state], ws_outputs, **ws)
        ui.ws.leave.click(wh.leave, [state], ws_outputs, **ws)
    return SimpleNamespace(
        exports=export_panel,
        image=image,
        models=models_dd,
        runs=runs_dd,
        runs_note=runs_note,
        pretrained=pretrained,
        go=go_btn,
        table=table,
        gallery=gallery,
        event=event,
        refresh_runs=refresh_runs,
        refresh_inputs=refresh_inputs,
    )
