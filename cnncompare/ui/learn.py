"""Learn tab: a short walkthrough of the four classic families and one-click experiments.

A preset only fills in the Fine-tune tab (and switches to it); nothing runs until Start.
All presets are sized for a CPU: small inputs, few epochs, a cap on images per class.

A preset is one of the engine's lessons (`lessons.py`: the runs, the sentence saying what to look for, and the
reading of the result), written as changes to the Fine-tune form's starting values (the settings schema's
defaults, and the page's own fields): applying it sets every field of that form, through the same
name -> component mapping the Fine-tune handlers read, so nothing from an earlier preset or edit is left behind.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import gradio as gr

from .. import counting, diagram, lessons, models, plots, profiling
from ..env import assets_dir
from ..models import catalog
from . import features as features_ui
from . import forms
from .predict import imagenet_model

NOTES_FILE = assets_dir() / "classroom_notes.md"
WALKTHROUGH = catalog.CLASSIC_FOUR


PRESETS = lessons.LESSONS  # each button is a lesson of the engine's (`cnncompare lesson KEY` runs the same)
PRESETS_BY_KEY = lessons.BY_KEY


KEEP = ("zip_file",)  # the visitor's upload is not a setting: a preset leaves it where it is


def start_values(form: dict) -> dict:
    """The values the Fine-tune form starts with, by name (the fields a preset resets)."""
    return {k: v for k, v in forms.values_of(form).items() if k not in KEEP}


def filled(lesson: lessons.Lesson, start: dict) -> dict:
    """Every field of the form: its starting value (`start_values`), changed by the lesson."""
    values = lesson.form()
    unknown = set(values) - set(start)
    if unknown:
        raise KeyError(f"Lesson {lesson.key} sets fields the Fine-tune form lacks: {', '.join(sorted(unknown))}")
    return {**start, **values}


def apply_preset(key: str, form: dict) -> dict:
    """Outputs {component: value} that set the Fine-tune form (`form`: name -> component) to its starting
    values changed by the lesson; the lesson's explanation goes to the tab by the caller."""
    return forms.fill(form, filled(PRESETS_BY_KEY[key], start_values(form)))


def preset_note(key: str) -> str:
    lesson = PRESETS_BY_KEY[key]
    return (
        f"{lesson.text}\n\n**What you should see:** {lesson.expect} When the runs end, the status reads what they "
        "showed.\n\nPress **Estimate time** to see how long it will take here, then **Start**."
    )


@functools.cache
def family_section(name: str) -> str:
    info = catalog.get(name)
    fam = info.family_info
    p = profiling.profile(name, 224, latency=False)
    groups = models.blocks(models.build(name, device="meta"), 224)
    ref = f", published ImageNet top-1 **{p.ref_top1:.1f} %**" if p.ref_top1 else ""
    rows = ["| block | layers | parameters | output (C×H×W) at 224 px |", "|---|---:|---:|---|"]
    for g in groups:
        shape = "×".join(map(str, g.out_shape)) if g.out_shape else "–"
        rows.append(f"| {g.name} | {len(g.modules)} | {g.params / 1e6:.2f} M | {shape} |")
    return (
        f"**{fam.name}, {fam.year}.** *{fam.paper}.*\n\n{fam.idea}\n\n"
        f"**{name}**: {p.params / 1e6:.1f} M parameters, {p.macs / 1e9:.2f} GMACs per 224 px image{ref}.\n\n"
        + "\n".join(rows)
    )


@functools.cache
def counting_md(key: str) -> str:
    """A counting lesson's table and reading (the same for everyone, counted once: `cnncompare lesson KEY`)."""
    lesson = counting.BY_KEY[key]
    designs, reading = lesson.read()
    rows = [d.row() for d in designs]
    head = list(rows[0])
    table = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    table += ["| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in r.values()) + " |" for r in rows]
    return f"{lesson.text}\n\n" + "\n".join(table) + f"\n\n**What it shows:** {reading.sentence}"


NUMBERS = """
### Reading the numbers
- **Parameters**: every weight of the network. VGG16 keeps 124 M of its 138 M in its three fully connected
  layers (the *pre-logits* block and the head); GoogLeNet and ResNet replaced them with global average pooling.
- **MACs** (multiply-accumulates) measure the work for one image; **FLOPs = 2 × MACs**. Papers often say
  "FLOPs" when they count MACs. Work grows with the square of the input size: 64 px costs 12× less than 224 px.
- **Latency** is measured on the machine running this app, one image at a time: a GPU changes everything,
  so compare models measured together, not numbers from different days.
- **Freezing**: `head` trains only the classifier (feature extraction), `stages:K` freezes the stem and the
  first K stages, `layers:N` the first N weight layers, `none` trains everything (full fine-tuning).
- **Random weights**: where ImageNet weights cannot be downloaded, the app uses random ones and says so.
  Predictions of a random network are meaningless, and a frozen random backbone extracts random features.
"""


@functools.cache
def counting_plot(key: str):
    """A counting lesson's designs drawn side by side, from the same counts as its table (`--plot` in the CLI)."""
    designs, _ = counting.BY_KEY[key].read()
    return plots.counting_figure(key, [d.to_dict() for d in designs])


def _counting_section() -> None:
    """The lessons that count instead of train: a button each, answered at once under it (counted once, shared):
    the table and reading, then the designs drawn."""
    gr.Markdown("### Counted in a second\nTwo design ideas counted from the models themselves, no training needed.")
    for lesson in counting.COUNTING:
        with gr.Row(equal_height=True):
            btn = gr.Button(lesson.title, scale=2, elem_id=f"count-{lesson.key}")
            gr.Markdown(lesson.summary, elem_classes=["cc-preset-summary"])
        with gr.Row():  # side by side on a wide screen, the drawing under the table on a phone
            with gr.Column(scale=2, min_width=320):  # room for the table's numbers on one line
                out = gr.Markdown(elem_id=f"count-{lesson.key}-out", elem_classes=["cc-note"])
            with gr.Column(scale=1, min_width=320, visible=False) as drawn:  # hidden until asked: no blank box
                plot = gr.Plot(show_label=False, elem_id=f"count-{lesson.key}-plot")
        btn.click(
            lambda k=lesson.key: (counting_md(k), counting_plot(k), gr.Column(visible=True)),
            None,
            [out, plot, drawn],
            api_visibility="private",
            queue=False,
        )


def build(ctx, ft: SimpleNamespace, tabs: gr.Tabs) -> SimpleNamespace:
    gr.Markdown(
        "## Four ideas that shaped image classification\nAlexNet showed that deep networks trained on GPUs "
        "win; VGG went deep with small filters; GoogLeNet went wide with cheap 1×1 convolutions; ResNet "
        "made very deep networks trainable with shortcuts. Try an experiment, or read on."
    )
    gr.Markdown(
        "### One-click experiments\nEach button fills in the **Fine-tune** tab (and opens it). "
        "Nothing starts until you press Start there."
    )
    buttons = []
    for preset in PRESETS:
        with gr.Row(equal_height=True):
            btn = gr.Button(preset.title, scale=2, elem_id=f"preset-{preset.key}")
            gr.Markdown(preset.summary, elem_classes=["cc-preset-summary"])
        buttons.append((preset.key, btn))
    form = ft.form
    for preset in PRESETS:  # a lesson naming a field the form lacks fails here, when the app is built
        filled(preset, start_values(form))
    outputs = [comp for name, comp in form.items() if name not in KEEP] + [ft.preset_md, tabs, ft.report, *ft.blank]

    def on_click(key: str):
        # the results, curves, estimate and dataset report of what was on the page before no longer apply
        blank = dict(zip(ft.blank, ft.cleared("The preset is set: press **Estimate time**, then **Start**.")))
        return {
            **apply_preset(key, form),
            **blank,
            ft.report: "",
            ft.preset_md: gr.Markdown(preset_note(key), visible=True),
            tabs: gr.Tabs(selected="finetune"),
        }

    for key, btn in buttons:
        btn.click(lambda k=key: on_click(k), None, outputs, api_visibility="private", queue=False)
    _counting_section()
    gr.Markdown(
        "### Layer by layer\nThe four networks drawn from the models themselves, at one scale: one box per layer "
        "(convolution, pooling, fully connected) or per Inception module and residual block, top to bottom as an "
        "image flows through. Hover a box for its output shape and parameters. AlexNet and VGG end in huge fully "
        "connected layers; GoogLeNet and ResNet replace them with global average pooling and go much deeper."
    )
    gr.Plot(diagram.figure(list(WALKTHROUGH), 224), label="The classic four, layer by layer", elem_id="learn-diagram")
    gr.Markdown("### The four classic families")
    for i, name in enumerate(WALKTHROUGH):
        info = catalog.get(name)
        with gr.Accordion(f"{info.family_info.name} ({info.year}): {name}", open=i == 0):
            gr.Markdown(family_section(name))
            features_ui.example_panel(ctx, name, load=imagenet_model)
    gr.Markdown(NUMBERS)
    if NOTES_FILE.is_file():
        with gr.Accordion("Classroom notes (for teachers)", open=False):
            gr.Markdown(NOTES_FILE.read_text(encoding="utf-8"))
    return SimpleNamespace(buttons=dict(buttons))
