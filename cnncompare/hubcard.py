"""An export as the Hugging Face Hub and timm know a model: timm's config.json layout and a model card.

A timm-built run is exported in the layout timm's own `save_for_hf` writes (`architecture`, `num_classes`,
`num_features`, `label_names`, `model_args` and a `pretrained_cfg` with the input size, interpolation, mean/std and
a crop that reproduces training: the whole image squashed to size x size, `crop_pct` 1.0, `crop_mode` "squash"),
made by timm's `save_config_for_hf` itself, so `timm.create_model("local-dir:FOLDER", pretrained=True)` (or
`hf-hub:OWNER/NAME` once uploaded) gives the run's model, class names and preprocessing. cnncompare's own fields
stay beside them. AlexNet and GoogLeNet are built by torchvision, which timm does not have: their card says so and
gives torchvision's lines.

The model card (README.md) opens with the Hub's front matter (`library_name`, `license`, `tags`) and says what the
model is, what it was trained on, how it started (ImageNet weights, or random weights: from scratch) and how well it
did on the validation split; then the lines that load it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from torch import nn

__all__ = ["hub_fields", "timm_loadable", "model_card", "start_words", "TAGS"]

TAGS = ("image-classification", "timm", "cnncompare")
_INPUT = "input"
# fields of the starting checkpoint's pretrained_cfg that describe that checkpoint, not this export
_NOT_OURS = ("tag", "hf_hub_id", "origin_url", "paper_ids", "paper_name", "notes", "license", "url", "file")


def timm_loadable(config: dict) -> bool:
    """Whether timm alone rebuilds the export: a timm model whose classifier is timm's own."""
    return config["backend"] == "timm" and not (config.get("head") or {}).get("module")


def hub_fields(target: nn.Module, config: dict) -> dict:
    """timm's Hub config for the backend's model `target` (the exported weights loaded), from timm's own writer;
    {} when timm cannot rebuild the export (`timm_loadable`)."""
    if not timm_loadable(config):
        return {}
    from timm.models._hub import save_config_for_hf

    data = dict(
        input_size=tuple(config["input_size"]),
        interpolation=config["interpolation"],
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        crop_pct=1.0,  # training resized the whole image: no centre crop
        crop_mode="squash",
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        save_config_for_hf(target, str(path), model_config=dict(label_names=list(config["classes"])), data_config=data)
        hub = json.loads(path.read_text())
    license_ = hub["pretrained_cfg"].get("license")
    for key in _NOT_OURS:
        hub["pretrained_cfg"].pop(key, None)
    if config["run"].get("pretrained") and license_:
        hub["starting_weights_license"] = license_
    return hub


def start_words(config: dict) -> str:
    """How the run started, in words that are true of it (the entry it ran with, after any offline fallback)."""
    return "fine-tuned from pretrained weights" if config["run"].get("pretrained") else "trained from random weights"


def _front_matter(config: dict) -> str:
    loadable = timm_loadable(config)
    license_ = config.get("starting_weights_license") if config["run"].get("pretrained") else None
    lines = [
        "---",
        f"library_name: {'timm' if loadable else 'pytorch'}",
        f"license: {license_ or 'apache-2.0'}",
        "tags:",
        *[f"- {t}" for t in TAGS if loadable or t != "timm"],
        "pipeline_tag: image-classification",
        "---",
    ]
    return "\n".join(lines)


def _torch_lines(config: dict) -> list[str]:
    arch, head = config["architecture"], config.get("head") or {}
    if config["backend"] == "timm":
        imports = "import json, timm, torch, safetensors.torch as st, torchvision.transforms as T, PIL.Image"
        build = 'model = timm.create_model(cfg["architecture"], num_classes=len(cfg["classes"])).eval()'
    elif arch == "alexnet":
        imports = "import json, torch, torchvision, safetensors.torch as st, torchvision.transforms as T, PIL.Image"
        build = 'model = torchvision.models.alexnet(num_classes=len(cfg["classes"])).eval()'
    else:
        imports = "import json, torch, torchvision, safetensors.torch as st, torchvision.transforms as T, PIL.Image"
        build = (
            'model = torchvision.models.googlenet(num_classes=len(cfg["classes"]), aux_logits=False, '
            'init_weights=False, transform_input=cfg["transform_input"]).eval()'
        )
    lines = [imports, 'cfg = json.load(open("config.json"))', build]
    if head.get("module"):
        lines.append(
            'h, nn = cfg["head"], torch.nn; model.set_submodule(h["module"], nn.Sequential(nn.Flatten(1), '
            'nn.Linear(h["in_features"], h["hidden"]), nn.ReLU(), nn.Dropout(0.5), nn.Linear(h["hidden"], '
            'h["hidden"]), nn.ReLU(), nn.Dropout(0.5), nn.Linear(h["hidden"], len(cfg["classes"]))).eval())'
        )
    return lines + [
        'model.load_state_dict(st.load_file("model.safetensors"), strict=True)',
        'x = T.Compose([T.Resize(cfg["input_size"][1:], T.InterpolationMode(cfg["interpolation"])), T.ToTensor(), '
        'T.Normalize(cfg["mean"], cfg["std"])])(PIL.Image.open("image.jpg").convert("RGB"))',
        'print(cfg["classes"][model(x[None]).argmax().item()])',
    ]


_TIMM_LINES = [
    "import timm, torch, PIL.Image",
    'model = timm.create_model("local-dir:.", pretrained=True).eval()  # or "hf-hub:OWNER/NAME" once uploaded',
    "cfg = timm.data.resolve_data_config({}, model=model)  # the training's preprocessing: resize, no crop",
    'x = timm.data.create_transform(**cfg)(PIL.Image.open("image.jpg").convert("RGB"))',
    'print(model.pretrained_cfg["label_names"][model(x[None]).argmax().item()])',
]


def _onnx_lines() -> list[str]:
    return [
        "import json, numpy as np, onnxruntime as ort, PIL.Image",
        'cfg = json.load(open("config.json")); h, w = cfg["input_size"][1:]',
        'img = PIL.Image.open("image.jpg").convert("RGB").resize((w, h), '
        'PIL.Image.Resampling[cfg["interpolation"].upper()])',
        'x = ((np.asarray(img, np.float32) / 255 - cfg["mean"]) / cfg["std"]).transpose(2, 0, 1)[None]'
        ".astype(np.float32)",
        f'print(cfg["classes"][ort.InferenceSession("model.onnx").run(None, {{"{_INPUT}": x}})[0].argmax()])',
    ]


def _results(config: dict) -> str:
    run = config["run"]
    top1, top5, epochs = run.get("val_top1"), run.get("val_top5"), run.get("epochs")
    if top1 is None:
        return "No epoch finished: the weights are the starting ones."
    five = f", top-5 {top5:.1f} %" if top5 is not None else ""
    return f"Validation top-1 {top1:.1f} %{five} after {epochs} epoch(s), on the held-out part of the same dataset."


def model_card(config: dict, onnx_sentence: str | None) -> str:
    """README.md of an export: front matter, what the model is and how it was made, and the lines that load it."""
    classes, size, run = config["classes"], config["input_size"][1], config["run"]
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    text = [
        _front_matter(config),
        "",
        f"# {run['label']}: exported by cnncompare {config['cnncompare_version']}",
        "",
        f"{config['backend']}'s `{config['architecture']}`, {start_words(config)} on {run['dataset']} "
        f"({len(classes)} classes: {shown}); what stayed frozen: `{run.get('freeze')}`. {_results(config)}",
        "",
        f"Inputs: the whole image resized to {size}x{size} px ({config['interpolation']}, no crop), normalised with "
        "config.json's mean and std.",
    ]
    if config.get("weights") and timm_loadable(config):
        text += ["", "With timm (`pip install timm`):", "", "```python", *_TIMM_LINES, "```"]
    elif config.get("weights") and config["backend"] != "timm":
        text += [
            "",
            f"timm cannot load this export: {config['architecture']} is built by torchvision, which timm does not "
            "have. Load it with torchvision, as below.",
        ]
    if config.get("weights"):
        text += ["", "With PyTorch (`pip install torch torchvision timm safetensors`):", ""]
        text += ["```python", *_torch_lines(config), "```"]
    if (config.get("head") or {}).get("note"):
        text += ["", f"Head: {config['head']['note']}."]
    if config.get("transform_input"):
        text += [
            "",
            "GoogLeNet rescales its normalised inputs itself (`transform_input=True`, as torchvision's ImageNet "
            "weights expect): keep that flag.",
        ]
    if onnx_sentence is not None:
        text += ["", f"ONNX: {onnx_sentence}"]
    if config.get("onnx"):
        text += ["", "With ONNX Runtime (`pip install onnxruntime pillow numpy`):", "", "```python"]
        text += [*_onnx_lines(), "```"]
    return "\n".join(text) + "\n"
