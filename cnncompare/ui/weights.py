"""Your own weights: a visitor uploads a weights file for a catalog model, and fine-tuning and Predict use it.

Offline (a classroom without internet, a demo server that cannot reach the Hub) the models
would start from random weights, and the lessons about transfer learning fall flat. Here a
visitor uploads a `.safetensors` or `.pth` file for one model:

- only an upload to this page is accepted (`uploads.checked_upload`), never a path on the server;
- before it is read, the bytes it unpacks to are counted from its archive's directory and must fit the
  model's own size (`models.file_bound`): a 1 MB .pth cannot unpack a 1 GB tensor here;
- it is read safely (`models.read_weights`: safetensors, or `torch.load(weights_only=True)`: a
  pickle that holds code is refused) and checked against the model (`models.check_weights`: one
  sentence naming the first missing tensor or differing shape, and which model the file looks
  made for); torchvision's format of VGG, ResNet, DenseNet, Inception v3 loads into timm's models;
- only the tensors the check accepted are stored, as `.safetensors`, in the visitor's own folder
  (`visitors/<hash>/weights/<model>.safetensors`, never served, never listed to anyone else, never
  shared with a workspace) and count against the visitor's quota and the server's cap by their
  stored size; they expire with runs;
- a file whose classifier is not ImageNet's 1000 classes still starts a fine-tuning (the
  classifier is replaced), but Predict does not use it (it would name ImageNet classes).

`weights_for(ctx, visitor, model)` is what fine-tuning and Predict ask: the file to use for that
model when "Start from ImageNet weights" is on, or None.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from .. import models
from ..errors import CNNCompareError, first_line
from ..fileio import atomic_path
from ..models import catalog
from ..server import ledger, visitors
from . import lenient
from .common import Context, file_path, in_line, message, warn_md
from .uploads import UploadedFile, checked_upload, display_name

__all__ = [
    "build",
    "weights_for",
    "weights_map",
    "store",
    "remove",
    "listing",
    "offline_hint",
    "WEIGHTS_DIR",
    "SUFFIXES",
    "COLUMNS",
]

WEIGHTS_DIR = "weights"
SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
COLUMNS = ["model", "file", "MB", "uploaded", "Predict"]
DEFAULT_MODEL = "resnet50"


def _dir(ctx: Context, visitor: visitors.Visitor) -> Path:
    return visitors.personal_dir(ctx, visitor) / WEIGHTS_DIR


def _file_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", model)[:100] + ".safetensors"


def _canonical(ctx: Context, model: str) -> str:
    name = str(model or "").strip()
    if not name:
        raise CNNCompareError("Choose the model these weights are for.")
    ctx.check_model(name)  # unknown names (with suggestions), models too big for this server
    return catalog.get(name).name


def _meta(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception:
        return {}


def weights_for(
    ctx: Context, visitor: visitors.Visitor | None, model_name: str, *, imagenet: bool = False
) -> str | None:
    """The visitor's own weights file for `model_name`, or None.

    Args:
        imagenet: only a file whose classifier has ImageNet's 1000 classes (what Predict needs);
            fine-tuning takes any (its classifier is replaced).
    """
    if visitor is None or not model_name:
        return None
    try:
        name = catalog.get(str(model_name).strip()).name
    except CNNCompareError:
        return None
    path = _dir(ctx, visitor) / _file_name(name)
    if not path.is_file():
        return None
    if imagenet and _meta(path).get("imagenet_classifier") != "yes":
        return None
    return str(path)


def weights_map(ctx: Context, visitor: visitors.Visitor | None, *, imagenet: bool = False) -> dict[str, str]:
    """Every model the visitor has a weights file for -> that file (for a whole plan at once)."""
    if visitor is None:
        return {}
    out = {}
    for row in listing(ctx, visitor):
        path = weights_for(ctx, visitor, row["model"], imagenet=imagenet)
        if path:
            out[row["model"]] = path
    return out


def listing(ctx: Context, visitor: visitors.Visitor) -> list[dict]:
    """The visitor's weights files, one row each: model, the uploaded file's name, MB, when, usable by Predict."""
    folder = _dir(ctx, visitor)
    if not folder.is_dir():
        return []
    rows = []
    for f in sorted(folder.glob("*.safetensors")):
        meta = _meta(f)
        rows.append(
            {
                "model": meta.get("model") or f.stem,
                "file": meta.get("original_name") or f.name,
                "MB": round(f.stat().st_size / 2**20, 1),
                "uploaded": meta.get("uploaded", ""),
                "Predict": "yes" if meta.get("imagenet_classifier") == "yes" else "no (fine-tuning only)",
            }
        )
    return rows


def store(ctx: Context, visitor: visitors.Visitor, model_name: str, upload) -> str:
    """Check an uploaded weights file against `model_name` and keep it in the visitor's folder (replacing their
    earlier file for that model); returns the sentence for the page.

    Raises:
        CNNCompareError: no model, a file that does not fit the model, an unreadable or unsafe file, over the
        visitor's quota (one sentence each).
        gr.Error: a path that is not an upload to this page.
    """
    name = _canonical(ctx, model_name)
    raw = file_path(upload)
    if raw is None:
        raise CNNCompareError("Upload a weights file (.safetensors or .pth) first.")
    path = checked_upload(raw, "The weights file")  # only an upload, never a file of the server
    shown = display_name(raw)[:120]
    if path.suffix.lower() not in SUFFIXES:
        raise CNNCompareError(f"{shown} is not a weights file: upload a .safetensors or .pth file.")
    target = _dir(ctx, visitor) / _file_name(name)
    layout = models.layout(name)
    # bounded before anything is read: the file may unpack to no more than the model's own weights could take
    sd = models.read_weights(path, max_bytes=models.file_bound(layout), max_tensors=models.tensor_bound(layout))
    try:  # an ImageNet classifier: keep it (Predict uses the file too)
        kept = models.check_weights(name, sd, layout, num_classes=1000, file_name=shown)
        imagenet = True
    except CNNCompareError:  # what fine-tuning needs (any classifier: it is replaced), or the sentence why not
        kept = models.check_weights(name, sd, layout, num_classes=2, file_name=shown, known=models.known_layouts)
        imagenet = False
    del sd
    size = sum(t.numel() * t.element_size() for t in kept.values())
    replaced = target.stat().st_size if target.is_file() else 0
    with ledger.reserve(ctx, visitor, max(0, size - replaced), f"{shown} ({size / 2**20:,.0f} MB of weights)"):
        _save(kept, target, name, shown, imagenet)
    ledger.prune_all(ctx)  # the server's cap counts weights files too
    text = (
        f"✅ Stored **{shown}** ({size / 2**20:,.1f} MB of weights) as your weights for **{name}**: fine-tuning"
        + (" and Predict use" if imagenet else " uses")
        + f" them for {name} when 'Start from ImageNet weights' is on. Only you (your browser) can use this file."
    )
    if not imagenet:
        text += (
            " Its classifier is not ImageNet's 1000 classes, so Predict does not use it; fine-tuning can "
            "(the classifier is replaced)."
        )
    return text


def _save(sd: dict, target: Path, name: str, shown: str, imagenet: bool) -> None:
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": name,
        "original_name": shown,
        "uploaded": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "imagenet_classifier": "yes" if imagenet else "no",
    }
    with atomic_path(target) as tmp:
        tensors = {k: v.contiguous() for k, v in sd.items()}
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except RuntimeError:  # tensors that share memory (tied weights): safetensors wants separate copies
            save_file({k: v.clone() for k, v in tensors.items()}, str(tmp), metadata=meta)


def remove(ctx: Context, visitor: visitors.Visitor, model_name: str) -> str:
    """Delete the visitor's weights file for `model_name`; the sentence for the page."""
    try:
        name = catalog.get(str(model_name or "").strip()).name
    except CNNCompareError as err:
        return warn_md(first_line(err))
    path = _dir(ctx, visitor) / _file_name(name)
    if not path.is_file():
        return f"You have no weights file for {name}."
    path.unlink(missing_ok=True)
    return f"Removed your weights for {name}: it starts from ImageNet weights only where they can be downloaded."


def offline_hint(model_name: str) -> str:
    """One sentence on how to get `model_name`'s ImageNet weights elsewhere and upload them here (the offline
    banner's and this panel's text); correct for torchvision- and timm-built catalog models."""
    try:
        return models.weights_hint(model_name)
    except CNNCompareError as err:
        return first_line(err)


# --------------------------------------------------------------------------- the panel


def _table(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows, columns=COLUMNS)


def _layout(models_list: list[str] | None, value: str) -> SimpleNamespace:
    names = models_list or catalog.names()
    value = value if value in names else names[0]
    gr.Markdown(
        "**Your own weights.** Without internet the models start from random weights. Upload ImageNet "
        "weights for a model (.safetensors or .pth); fine-tuning and Predict then use them for that model "
        "when 'Start from ImageNet weights' is on. The file stays in your own folder.",
        elem_classes=["cc-note"],
    )
    with gr.Row():
        model_dd = lenient.Dropdown(names, value=value, label="Model", elem_id="w-model", scale=1, min_width=160)
        upload = UploadedFile(
            label="Weights file (.safetensors or .pth)",
            file_types=list(SUFFIXES),
            type="filepath",
            elem_id="w-file",
            scale=2,
        )
    hint = gr.Markdown(offline_hint(value), elem_id="w-hint")
    status = gr.Markdown("", elem_id="w-status")
    table = gr.Dataframe(headers=COLUMNS, label="Your weights files", interactive=False, wrap=True, elem_id="w-table")
    remove_btn = gr.Button("Remove the file of this model", size="sm", elem_id="w-remove")
    return SimpleNamespace(model_dd=model_dd, upload=upload, hint=hint, status=status, table=table, remove=remove_btn)


def _handlers(ctx: Context) -> SimpleNamespace:
    """The panel's endpoints (API `/upload_weights`, `/remove_weights`, `/list_weights`) and the model's hint."""

    def _who(visitor, request):
        return ctx.visitor(visitor, request)

    def refused(text: str):
        gr.Warning(text)
        return warn_md(text), gr.skip()

    def stored(who, model, file):
        try:
            text = store(ctx, who, model, file)
        except Exception as err:
            text = message(err)
            gr.Warning(text)
            return warn_md(text), _table(listing(ctx, who))
        return text, _table(listing(ctx, who))

    def upload_weights(model, file, visitor=None, request: gr.Request = None):
        """Check an uploaded weights file against `model` and keep it as the caller's weights for that model."""
        yield from in_line(
            ctx,
            "files",
            visitor,
            request,
            lambda who: stored(who, model, file),
            refused=refused,
            waiting=lambda text: (text, gr.skip()),
        )

    def remove_weights(model, visitor=None, request: gr.Request = None):
        """Delete the caller's weights file for `model`."""
        yield from in_line(
            ctx,
            "files",
            visitor,
            request,
            lambda who: (remove(ctx, who, model), _table(listing(ctx, who))),
            refused=refused,
            waiting=lambda text: (text, gr.skip()),
        )

    def list_weights(visitor=None, request: gr.Request = None):
        """The caller's weights files."""
        try:
            return _table(listing(ctx, _who(visitor, request)))
        except CNNCompareError:
            return _table([])

    def on_model(model, visitor=None, request: gr.Request = None):
        try:
            who = _who(visitor, request)
        except CNNCompareError:
            who = None
        have = weights_for(ctx, who, model)
        note = f"You have uploaded weights for {model}." if have else ""
        return offline_hint(model), note

    return SimpleNamespace(
        upload_weights=upload_weights, remove_weights=remove_weights, list_weights=list_weights, on_model=on_model
    )


def build(ctx: Context, *, models_list: list[str] | None = None, value: str = DEFAULT_MODEL) -> SimpleNamespace:
    """The 'Your own weights' panel: model, upload, status, the visitor's files, remove. Call inside a Blocks.

    API: `/upload_weights(model, file[, visitor])`, `/remove_weights(model[, visitor])`,
    `/list_weights([visitor])`.
    """
    ui = _layout(models_list, value)
    model_dd, upload, hint, status, table, remove_btn = ui.model_dd, ui.upload, ui.hint, ui.status, ui.table, ui.remove
    h = _handlers(ctx)
    state = ctx.visitor_state
    extra = [state] if state is not None else []
    # concurrency_limit=None: they wait in the app's fair queue ("files" lane), never in gradio's
    upload.upload(
        h.upload_weights, [model_dd, upload, *extra], [status, table], api_name="upload_weights", concurrency_limit=None
    )
    remove_btn.click(
        h.remove_weights, [model_dd, *extra], [status, table], api_name="remove_weights", concurrency_limit=None
    )
    model_dd.change(h.on_model, [model_dd, *extra], [hint, status], api_visibility="private", queue=False)
    refresh = dict(fn=h.list_weights, inputs=extra or None, outputs=[table])
    return SimpleNamespace(
        model=model_dd,
        file=upload,
        hint=hint,
        status=status,
        table=table,
        remove=remove_btn,
        list_weights=h.list_weights,
        refresh=refresh,
        upload_weights=h.upload_weights,
    )
