"""What each stage of a network produces for one image: its strongest channels as small pictures, side by side.

For each stage end the model itself names (`feature_info`: VGG's blocks, ResNet's layers, GoogLeNet's inception
groups, AlexNet's pools) the output is taken with a forward hook during one inference pass, its `top` channels by mean
activation are kept, and each is drawn min-max scaled at the stage's own resolution (so a 7×7 map looks coarse, as
it is). The first convolution's kernels are drawn as colour images. Pure: the same image, model and weights give
the same pictures (the web face keeps them, like predictions).

`cnncompare features IMAGE --models ...` writes the same grids as PNG files.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from . import inference, models

__all__ = ["Stage", "FeatureMaps", "feature_maps", "grid_image", "kernels_image"]

RANDOM_NOTE = (
    "random weights (no ImageNet weights here): these are the feature maps of an untrained network, which only "
    "blur and mix the picture; with ImageNet weights the early stages pick out edges and colours, the later ones parts"
)
TILE = 72  # px per channel picture in a grid
LABEL_W = 150  # px of the label column


@dataclass
class Stage:
    name: str  # the module the model names as a stage end
    shape: tuple[int, int, int]  # (C, H, W) of its output
    channels: list[int]  # the strongest channels, strongest first
    maps: np.ndarray = field(repr=False)  # (top, H, W) uint8, each channel min-max scaled


@dataclass
class FeatureMaps:
    model: str
    size: int
    weights: str  # where the weights came from ("ImageNet (pretrained)", "random weights")
    note: str  # said when the weights are random: the maps are those of an untrained network
    stages: list[Stage]
    kernels: np.ndarray | None = field(default=None, repr=False)  # (N, k, k, 3) uint8, the first convolution's

    def nbytes(self) -> int:
        return sum(s.maps.nbytes for s in self.stages) + (self.kernels.nbytes if self.kernels is not None else 0)

    def summary(self) -> str:
        shapes = ", ".join(f"{s.name} {'×'.join(map(str, s.shape))}" for s in self.stages)
        return f"{self.model} at {self.size} px ({self.weights}): {shapes}"


def _scaled(x: torch.Tensor) -> np.ndarray:
    """Each map of (N, H, W) min-max scaled to 0..255 on its own."""
    lo = x.flatten(1).min(1).values[:, None, None]
    hi = x.flatten(1).max(1).values[:, None, None]
    return ((x - lo) / (hi - lo).clamp_min(1e-12) * 255).round().to(torch.uint8).numpy()


def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)


def feature_maps(image: Image.Image, loaded: inference.LoadedModel, size: int = 224, top: int = 6) -> FeatureMaps:
    """The stage outputs of a loaded model (`inference.imagenet_model`) for `image` at `size` px.

    The model may be shared with other threads (the web face keeps one per model): the hooks keep only this
    thread's outputs, so a prediction running meanwhile passes through them untouched.

    Raises:
        CNNCompareError: an input size the model cannot take.
    """
    model = loaded.model
    name = model.cnncompare.spec.name
    models.check_input_size(name, size)
    x = inference.preprocess(image, model, size, fit="squash").to(next(model.parameters()).device)
    ends = [f["module"] for f in model.feature_info]
    outs: dict[str, torch.Tensor] = {}
    me = threading.get_ident()

    def keep(n: str):
        def hook(_module, _inputs, out):
            if threading.get_ident() == me:
                outs[n] = out

        return hook

    hooks = [model.get_submodule(n).register_forward_hook(keep(n)) for n in ends]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    stages = []
    for n in ends:
        out = outs.get(n)
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            continue
        fmap = out[0].float().cpu()
        strongest = fmap.mean((1, 2)).argsort(descending=True)[:top]
        stages.append(Stage(n, tuple(fmap.shape), strongest.tolist(), _scaled(fmap[strongest])))
    conv = _first_conv(model)
    kernels = None
    if conv is not None:
        w = conv.weight.detach().float().cpu()[:32]  # (N, 3, k, k)
        lo, hi = w.amin((1, 2, 3), keepdim=True), w.amax((1, 2, 3), keepdim=True)
        kernels = ((w - lo) / (hi - lo).clamp_min(1e-12) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    note = RANDOM_NOTE if loaded.weights == "random weights" else ""
    return FeatureMaps(name, size, loaded.weights, note, stages, kernels)


def grid_image(fm: FeatureMaps) -> Image.Image:
    """One picture: a row per stage (its name and shape, then its strongest channels), the first row the input's."""
    cols = max((len(s.channels) for s in fm.stages), default=1)
    img = Image.new("RGB", (LABEL_W + cols * (TILE + 4), len(fm.stages) * (TILE + 4) + 4), "white")
    draw = ImageDraw.Draw(img)
    for r, s in enumerate(fm.stages):
        y = 4 + r * (TILE + 4)
        draw.text((4, y + 4), s.name, fill="black")
        draw.text((4, y + 22), "x".join(map(str, s.shape)), fill=(90, 90, 90))  # the default font has no ×
        for c, fmap in enumerate(s.maps):
            tile = Image.fromarray(fmap, "L").resize((TILE, TILE), Image.Resampling.NEAREST)  # coarse stays coarse
            img.paste(tile.convert("RGB"), (LABEL_W + c * (TILE + 4), y))
    return img


def kernels_image(fm: FeatureMaps, scale: int = 8) -> Image.Image | None:
    """The first convolution's kernels as colour pictures, 8 to a row."""
    if fm.kernels is None:
        return None
    n, k = len(fm.kernels), fm.kernels.shape[1]
    side = k * scale
    per_row = 8
    rows = (n + per_row - 1) // per_row
    img = Image.new("RGB", (per_row * (side + 2), rows * (side + 2)), "white")
    for i, kern in enumerate(fm.kernels):
        tile = Image.fromarray(kern, "RGB").resize((side, side), Image.Resampling.NEAREST)
        img.paste(tile, ((i % per_row) * (side + 2), (i // per_row) * (side + 2)))
    return img
