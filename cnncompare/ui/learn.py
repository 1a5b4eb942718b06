"""Learn tab: a short walkthrough of the four classic families and one-click experiments.

A preset only fills in the Fine-tune tab (and switches to it); nothing runs until Start.
All presets are sized for a CPU: small inputs, few epochs, a cap on images per class.

A preset is written as changes to the Fine-tune form's starting values (the settings schema's
defaults, and the page's own fields): applying it sets every field of that form, through the
same name -> component mapping the Fine-tune handlers read, so nothing from an earlier preset
or edit is left behind.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from types import SimpleNamespace

import gradio as gr

from .. import diagram, models, profiling
from ..env import assets_dir
from ..models import catalog
from . import forms

NOTES_FILE = assets_dir() / "classroom_notes.md"
WALKTHROUGH = catalog.CLASSIC_FOUR


@dataclass
class Preset:
    key: str
    title: str
    summary: str  # one line under the button
    text: str  # shown on the Fine-tune tab when the preset is applied
    values: dict = field(default_factory=dict)  # changes to the Fine-tune form's starting values, by field name

    def filled(self, start: dict) -> dict:
        """Every field of the form: its starting value (`forms.values_of(form)`), changed by this preset."""
        unknown = set(self.values) - set(start)
        if unknown:
            raise KeyError(f"Preset {self.key} sets fields the Fine-tune form lacks: {', '.join(sorted(unknown))}")
        return {**start, **self.values}


OFFLINE_NOTE = (
    "Without network access there are no ImageNet weights: the app then says so and starts from "
    "random weights, so a frozen backbone is a *random* feature extractor. That is still a useful "
    "baseline; run the preset where downloads work to see what pretraining adds."
)

CHANCE = (
    "With 8 classes, chance is 12.5 % accuracy and a loss of ln 8 ≈ 2.08: a run whose loss stays there has "
    "learned nothing yet."
)

# VGG11 trains all 133 M weights (120 M in fc6/fc7) every step: these sizes keep two such runs under 3 minutes
# on a 2-core CPU (benchmarks/bench_presets.py measures it)
VGG_FROM_SCRATCH = dict(pretrained=False, optimizer="adam", lr=1e-4, epochs=5, max_per_class=24, size=32, batch_size=16)
VGG_SCALED_DOWN = "Scaled down to fit 3 minutes on a CPU: 32 px inputs, 24 images per class, 5 epochs"

PRESETS = [
    Preset(
        "features",
        "VGG16 vs ResNet-50 as frozen feature extractors",
        "Freeze everything but the classifier: which backbone gives better features? (about 1 min on a 2-core CPU)",
        "**VGG16 vs ResNet-50 as frozen feature extractors.** Both backbones keep their ImageNet weights and stay "
        "frozen (`@head`); only a new linear classifier learns the 8 shape classes. Because nothing before the "
        "classifier changes, each image goes through the frozen network once (VGG16's frozen fully connected "
        "layers fc6 and fc7 included, in inference mode, as in the Keras feature-extraction guide) and the "
        "classifier trains on the stored outputs (the *feature cache*), so 5 epochs cost little more than one for "
        "both. Compare the accuracy with the cost: ResNet-50 has 5× fewer parameters and 4× fewer MACs than "
        "VGG16, so its one pass over the images is also about 4× cheaper. " + OFFLINE_NOTE,
        dict(models="vgg16@head\nresnet50@head", pretrained=True, epochs=5, max_per_class=60, size=64),
    ),
    Preset(
        "keras",
        "Freeze the first 15 layers of VGG16 (the Keras recipe)",
        "Keras' first 15 layers frozen (here: layers:10), next to a fully frozen VGG16. (about 2 min on a 2-core CPU)",
        "**The Keras VGG16 recipe.** The well-known Keras transfer-learning recipe freezes "
        "`model.layers[:15]`. Keras counts the input layer and the pooling layers too, so those 15 layers are "
        "the input, conv blocks 1-4 (10 convolutions) and 4 max-pools: here that is **`layers:10`**, the first 10 "
        "weight layers. Conv block 5 and the fully connected layers keep training, so the network can adapt its "
        "most specific features. The second run freezes everything but the classifier (`head`) for comparison; "
        "look at the *trainable params* column (about 127 M against 33 k) and at the training time. SGD with "
        "momentum and a small learning rate, as in the recipe. " + OFFLINE_NOTE,
        dict(
            models="vgg16@layers:10\nvgg16@head",
            pretrained=True,
            optimizer="momentum",
            lr=1e-3,
            epochs=2,
            max_per_class=40,
            size=64,
        ),
    ),
    Preset(
        "batchnorm",
        "Does BatchNorm help VGG?",
        "VGG11 with and without BatchNorm, trained from scratch. (about 3 min on a 2-core CPU)",
        "**Does BatchNorm help VGG?** VGG11 and VGG11-BN are the same network except for a BatchNorm after every "
        "convolution. Both train **from scratch** (no pretrained weights, every layer trains) with the same "
        "seed, data and optimizer (Adam, learning rate 0.0001). Watch the **training loss**: the plain VGG11 sits "
        "at chance, while the BatchNorm version's loss falls below it within a few epochs (it starts high: its "
        "fully connected layers have no BatchNorm and overshoot at first). "
        + CHANCE
        + " "
        + VGG_SCALED_DOWN
        + "; with so few images the validation "
        "accuracy stays noisy, so read the loss curves. On a GPU, try 64 px, 200 images per class and 10 epochs "
        "to see the accuracy gap too.",
        dict(models="vgg11@none\nvgg11_bn@none", **VGG_FROM_SCRATCH),
    ),
    Preset(
        "init",
        "He vs Glorot initialisation from scratch",
        "The same plain VGG11 twice, started from two initialisations. (about 3 min on a 2-core CPU)",
        "**He vs Glorot initialisation.** Glorot (Xavier, 2010) keeps the variance of activations steady for "
        "symmetric activations like tanh; He (Kaiming, 2015) doubles it to make up for ReLU zeroing half of "
        "them. In a deep plain network without BatchNorm this decides whether the signal survives the depth. "
        "The models box runs VGG11 twice, with `init=he` and `init=glorot` (a per-run setting after the model); "
        "same seed, data and optimizer otherwise. Watch the training loss in the first epochs. "
        + CHANCE
        + " "
        + VGG_SCALED_DOWN
        + ".",
        dict(models="vgg11@none init=he\nvgg11@none init=glorot", **VGG_FROM_SCRATCH),
    ),
    Preset(
        "optimizers",
        "Which optimizer: SGD+momentum, Adam or RMSprop?",
        "ResNet-18 from scratch three times, one optimizer per run. (about 2 min on a 2-core CPU)",
        "**Which optimizer?** A comparison runs one optimizer per run, so this preset runs the *same* ResNet-18 "
        "three times, each line with its own `optimizer=` and `lr=`: same seed (so the same starting weights), "
        "same data, only the optimizer differs. Each gets its customary learning rate: SGD with momentum needs "
        "a larger one (0.01) than the adaptive methods Adam and RMSprop (0.001). Compare the loss curves: how fast "
        "does each start, and where does it end? " + CHANCE + " Scaled down to fit 3 minutes on a CPU: 64 px, "
        "60 images per class, 4 epochs.",
        dict(
            models="resnet18@none optimizer=momentum lr=0.01\nresnet18@none optimizer=adam lr=0.001\n"
            "resnet18@none optimizer=rmsprop lr=0.001",
            pretrained=False,
            epochs=4,
            max_per_class=60,
            size=64,
        ),
    ),
    Preset(
        "sweep",
        "How much to freeze? A freeze-depth sweep of ResNet-18",
        "One model five times, from everything training to only the classifier, in one chart. "
        "(about 2 min on a 2-core CPU)",
        "**How much to freeze?** The same ResNet-18 runs five times, freezing more each time: `none` (full "
        "fine-tuning), `stages:1`, `stages:2`, `stages:3` (the stem and the first K of its 4 stages stay fixed) and "
        "`head` (only the classifier trains). Same seed, data and optimizer. When it ends, the chart beside the "
        "downloads puts the five runs in one picture: validation accuracy against training time, each point "
        "as large as its number of trainable parameters. Freezing more trains fewer weights and runs faster; with "
        "ImageNet weights the frozen layers are already good feature extractors, so accuracy falls off slowly. "
        "The diagram on the Architectures tab shades what each policy freezes. " + OFFLINE_NOTE,
        dict(
            models="resnet18@none\nresnet18@stages:1\nresnet18@stages:2\nresnet18@stages:3\nresnet18@head",
            pretrained=True,
            epochs=3,
            max_per_class=40,
            size=64,
        ),
    ),
]
PRESETS_BY_KEY = {p.key: p for p in PRESETS}


KEEP = ("zip_file",)  # the visitor's upload is not a setting: a preset leaves it where it is


def start_values(form: dict) -> dict:
    """The values the Fine-tune form starts with, by name (the fields a preset resets)."""
    return {k: v for k, v in forms.values_of(form).items() if k not in KEEP}


def apply_preset(key: str, form: dict) -> dict:
    """Outputs {component: value} that set the Fine-tune form (`form`: name -> component) to its starting
    values changed by the preset; the preset's explanation goes to the tab by the caller."""
    return forms.fill(form, PRESETS_BY_KEY[key].filled(start_values(form)))


def preset_note(key: str) -> str:
    return PRESETS_BY_KEY[key].text + "\n\nPress **Estimate time** to see how long it will take here, then **Start**."


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
    for preset in PRESETS:  # a preset naming a field the form lacks fails here, when the app is built
        preset.filled(start_values(form))
    outputs = [comp for name, comp in form.items() if name not in KEEP] + [ft.preset_md, tabs]

    def on_click(key: str):
        return {
            **apply_preset(key, form),
            ft.preset_md: gr.Markdown(preset_note(key), visible=True),
            tabs: gr.Tabs(selected="finetune"),
        }

    for key, btn in buttons:
        btn.click(lambda k=key: on_click(k), None, outputs, api_visibility="private", queue=False)
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
    gr.Markdown(NUMBERS)
    if NOTES_FILE.is_file():
        with gr.Accordion("Classroom notes (for teachers)", open=False):
            gr.Markdown(NOTES_FILE.read_text(encoding="utf-8"))
    return SimpleNamespace(buttons=dict(buttons))
