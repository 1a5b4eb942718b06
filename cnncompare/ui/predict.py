"""Predict tab: one image, several models side by side: top-5 classes, time, Grad-CAM."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd
import torch

from .. import catalog, inference, models, runs
from ..errors import CNNCompareError, WeightsUnavailableError
from .common import MODELS, RANDOM_NOTE, file_path, message, parse_names, warn_md
from .gpu import gpu

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
DEFAULT_MODELS = ["alexnet", "vgg16", "googlenet", "resnet50"]
TOP_K = 5


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def imagenet_model(name: str, pretrained: bool):
    """(model, weights text, note) for a catalog/timm model with ImageNet's 1000 classes."""
    device = _device()

    def build():
        if pretrained:
            try:
                model = models.build(name, pretrained=True, device=device).eval()
                models.remember_weights(name, True)
                return model, "ImageNet (pretrained)", ""
            except WeightsUnavailableError:
                models.remember_weights(name, False)
            return models.build(name, device=device).eval(), "random weights", RANDOM_NOTE
        return (models.build(name, device=device).eval(), "random weights",
                "random weights (ImageNet weights switched off): predictions are meaningless")

    return MODELS.get(("imagenet", name, bool(pretrained), device), build)


def find_run(root: Path, name: str) -> runs.SavedRun:
    for saved in runs.list_runs(root):
        if saved.path.name == name or saved.label == name:
            return saved
    raise CNNCompareError(f"No fine-tuned run called '{name}' in the runs folder: press ↻ to refresh the list.")


def run_model(root: Path, name: str):
    saved = find_run(root, name)
    device = _device()
    model = MODELS.get(("run", str(saved.path), device), lambda: saved.load_model(device))
    acc = saved.results.get("val_top1") if saved.results else None
    weights = "fine-tuned" + (" (from ImageNet)" if saved.entry.pretrained else " (from scratch)")
    note = (f"fine-tuned on {saved.config['dataset']['name']} ({len(saved.classes)} classes"
            + (f", validation top-1 {acc:.1f} %" if acc is not None else "") + "): it only knows those classes")
    return model, saved, weights, note


def run_label(saved: runs.SavedRun) -> str:
    """'resnet18 · run 16:25:05' from a run folder named 20261125-162505-resnet18 (else the folder name)."""
    parts = saved.path.name.split("-")
    if len(parts) >= 3 and len(parts[1]) == 6 and parts[1].isdigit():
        t = parts[1]
        return f"{saved.name} · run {t[:2]}:{t[2:4]}:{t[4:]}" + (f" #{parts[-1]}" if parts[-1].isdigit() else "")
    return f"{saved.name} · {saved.path.name}"


def run_choices(root: Path) -> list[tuple[str, str]]:
    """(label, value) pairs of finished runs (those with saved weights), newest first."""
    return [(r.label, r.path.name) for r in runs.list_runs(root) if (r.path / "weights.safetensors").is_file()]


def _image_from(value):
    path = file_path(value)
    if path is None:
        raise CNNCompareError("Upload an image (or click one of the examples) first.")
    return inference.load_image(path)


def _empty():
    return pd.DataFrame(columns=["rank"]), [], []


@gpu(duration=60)
def predict_image(image, models_selected, runs_selected, pretrained, *, root: Path, limit: int | None = None):
    """Top-5 of every chosen model (and fine-tuned run) on one image, with its time and Grad-CAM."""
    try:
        img = _image_from(image)
        names = parse_names(models_selected, limit)
        run_names = parse_names(runs_selected, limit)
        if not names and not run_names:
            raise CNNCompareError("Choose at least one model or fine-tuned run.")
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
                model, weights, note = imagenet_model(name, bool(pretrained))
                label, size, classes = name, None, None
            else:
                model, saved, weights, note = run_model(root, name)
                label = run_label(saved)
                size, classes = saved.settings.size, saved.classes
            pred = inference.predict(model, img, size=size, classes=classes, top_k=TOP_K, cam=True)
        except Exception as err:
            errors.append(warn_md(f"{name}: {message(err)}"))
            continue
        cells = [f"{lab} — {100 * p:.1f} %" for lab, p in pred.top] + [""] * (TOP_K - len(pred.top))
        columns[label] = cells + [f"{pred.time_ms:.1f}", weights]
        note = note or pred.note
        if note:
            notes.setdefault(note, []).append(label)
        if pred.cam is not None:
            top_label, top_p = pred.top[0]
            gallery.append((inference.overlay(img, pred.cam),
                            f"{label}: {top_label} ({100 * top_p:.1f} %), {pred.time_ms:.0f} ms"))
        details.append(dict(model=label, run=name if kind == "run" else None, weights=weights, time_ms=round(pred.time_ms, 2), note=note,
                            top=[dict(label=lab, prob=round(p, 6)) for lab, p in pred.top]))
    rows = [str(i + 1) for i in range(TOP_K)] + ["time (ms)", "weights"]
    table = pd.DataFrame({"rank": rows, **columns})
    head = (f"**{len(details)} model(s).** Top-{TOP_K} classes with their softmax probabilities; time = one "
            f"forward pass at batch 1 on {_device()} after a warm-up. The heat maps (Grad-CAM) show where "
            "each model looked for its top class: red = most important.")
    lines = [head] + [f"**{', '.join(labels)}**: {note}." for note, labels in notes.items()] + errors
    return "\n\n".join(lines), table, gallery, details


def build(ctx) -> SimpleNamespace:
    gr.Markdown("Upload a picture (or click an example) and compare what each network predicts. With "
                "ImageNet weights the models know 1,000 everyday classes; a **fine-tuned run** from the "
                "Fine-tune tab knows only the classes of its dataset.")
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            image = gr.Image(type="filepath", label="Image", height=300, elem_id="pred-image",
                             sources=["upload", "clipboard"])
            examples = sorted(EXAMPLES_DIR.glob("*.jpg"))
            if examples:
                gr.Examples([[str(p)] for p in examples], inputs=[image], label="Examples (drawn pictures)",
                            example_labels=[p.stem for p in examples], examples_per_page=10)
        with gr.Column(scale=3):
            models_dd = gr.Dropdown(choices=catalog.names(), value=DEFAULT_MODELS, multiselect=True,
                                    allow_custom_value=True, elem_id="pred-models",
                                    label="Models (ImageNet classes)")
            pretrained = gr.Checkbox(value=True, label="Use pretrained ImageNet weights when they can be loaded",
                                     info="offline they cannot: the models then have random weights (said so below)")
            with gr.Row(equal_height=True):
                runs_dd = gr.Dropdown(choices=run_choices(ctx.runs_root), value=[], multiselect=True, scale=5,
                                      label="Fine-tuned runs (from the Fine-tune tab)", elem_id="pred-runs")
                refresh = gr.Button("↻", scale=0, min_width=50, elem_id="pred-refresh")
            go_btn = gr.Button("Predict", variant="primary", elem_id="pred-go")
    note = gr.Markdown(elem_classes=["cc-note"], elem_id="pred-note")
    table = gr.Dataframe(label="Top-5, side by side", interactive=False, wrap=True, elem_id="pred-table")
    gallery = gr.Gallery(label="Where each model looked (Grad-CAM for its top class)", columns=5, height=290,
                         object_fit="contain", elem_id="pred-gallery", allow_preview=True)
    with gr.Accordion("Raw predictions (JSON)", open=False):
        details = gr.JSON(label="predictions", elem_id="pred-json")

    def predict(image, models, runs, pretrained):
        return predict_image(image, models, runs, pretrained, root=ctx.runs_root, limit=ctx.max_models)

    def refresh_runs():
        return gr.Dropdown(choices=run_choices(ctx.runs_root))

    # preprocess=False: the image arrives as its uploaded file, so a corrupt file reaches the engine,
    # which answers with a readable message instead of a failure inside the image component.
    event = go_btn.click(predict, [image, models_dd, runs_dd, pretrained], [note, table, gallery, details],
                         api_name="predict", preprocess=False, concurrency_limit=2, concurrency_id="predict")
    refresh.click(refresh_runs, None, runs_dd, api_visibility="private", queue=False)
    return SimpleNamespace(image=image, models=models_dd, runs=runs_dd, pretrained=pretrained, go=go_btn,
                           table=table, gallery=gallery, event=event, refresh_runs=refresh_runs)
