"""Predict one image: top-k classes, the time it took, and a class-activation map (Grad-CAM).

Grad-CAM's target layer is the output of `forward_features`, i.e. the last convolutional
stage of every family (AlexNet conv5, VGG conv5_3, GoogLeNet inception 5b, ResNet layer4,
DenseNet's final norm, EfficientNet's conv head): the last map that still has a spatial
layout, as in Selvaraju et al. (2017).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import models, runtime
from .errors import CNNCompareError, WeightsUnavailableError

__all__ = [
    "LoadedModel",
    "imagenet_model",
    "RANDOM_NOTE",
    "Prediction",
    "check_pixels",
    "TooManyPixels",
    "MAX_IMAGE_MPIX",
    "predict",
    "predict_batch",
    "preprocess",
    "load_image",
    "grad_cam",
    "overlay",
    "imagenet_labels",
    "NoSpatialMap",
    "NO_HEAT_MAP",
]

NO_HEAT_MAP = "no heat map for this architecture (its last features have no spatial layout)"
RANDOM_NOTE = (
    "random weights: pretrained ImageNet weights could not be loaded here (offline), so these "
    "predictions are meaningless; fine-tune a model and pick its run instead"
)
SWITCHED_OFF_NOTE = "random weights (ImageNet weights switched off): predictions are meaningless"
RANDOM_HEAT_MAPS = (
    "random weights: predictions are meaningless, and so are the heat maps (features nobody trained respond to "
    "noise: expect flat maps with specks, not objects); load a fine-tuned run"
)


@dataclass
class LoadedModel:
    """A model ready to predict ImageNet classes, what its weights are, and why its answers mean little (if so)."""

    model: nn.Module
    weights: str  # "ImageNet (pretrained)", "your weights file", "random weights"
    note: str = ""


def imagenet_model(
    name: str, pretrained: bool = True, weights_file: str | None = None, device: str | torch.device | None = None
) -> LoadedModel:
    """A 1000-class model in eval mode, by the one fallback rule the CLI and the app share: a weights file when
    given (a bad one raises its one-sentence reason), else ImageNet weights, else random weights with a note.

    Raises:
        CNNCompareError: an unknown model, or a weights file that does not fit.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if pretrained and weights_file:
        model = models.build(name, pretrained=True, weights_file=weights_file, device=device)
        return LoadedModel(model.eval(), "your weights file")
    if pretrained:
        try:
            model = models.build(name, pretrained=True, device=device)
            models.remember_weights(name, True)
            return LoadedModel(model.eval(), "ImageNet (pretrained)")
        except WeightsUnavailableError:
            models.remember_weights(name, False)
        return LoadedModel(models.build(name, device=device).eval(), "random weights", RANDOM_NOTE)
    return LoadedModel(models.build(name, device=device).eval(), "random weights", SWITCHED_OFF_NOTE)


class NoSpatialMap(CNNCompareError):
    """The model's features are not an image-shaped map (a vision transformer): Grad-CAM does not apply."""


@dataclass
class Prediction:
    """One model's answer for one image: top classes, time, heat map (None where it does not apply), note."""

    model: str
    top: list[tuple[str, float]]  # (label, probability 0..1), best first
    time_ms: float  # one forward pass, after a warm-up
    cam: np.ndarray | None = field(default=None, repr=False)  # HxW in [0, 1] at the input size
    note: str = ""
    cam_grid: tuple[int, int] | None = None  # the feature map the heat map comes from (AlexNet 6x6 at 224 px)

    def to_dict(self) -> dict:
        return dict(
            model=self.model,
            top=[dict(label=label, prob=p) for label, p in self.top],
            time_ms=self.time_ms,
            note=self.note,
        )


@functools.cache
def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names shipped inside torchvision (no download)."""
    import torchvision

    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def preprocess(image: Image.Image, model: nn.Module, size: int, fit: str = "crop") -> torch.Tensor:
    """Normalised 1x3xSxS tensor. fit="crop": shorter side to size / crop_pct, centre crop (timm's
    ImageNet eval transform); fit="squash": resize to size x size, as cnncompare's training does."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    cfg = models.data_config(model, size)
    mode = InterpolationMode(cfg.get("interpolation", "bilinear"))
    img = image.convert("RGB")
    if fit == "squash":
        img = TF.resize(img, [size, size], interpolation=mode, antialias=True)
    else:
        # the central square first, then the resize: the same pixels as resizing the shorter side and
        # cropping, but the cost no longer depends on the aspect ratio (a 1x20000 image once became
        # 256x5,120,000 pixels, 6 GB, before its crop)
        side = min(img.size)
        img = TF.center_crop(img, [side, side])
        crop_pct = cfg.get("crop_pct", 0.875) or 1.0
        img = TF.resize(img, [int(round(size / crop_pct))] * 2, interpolation=mode, antialias=True)
        img = TF.center_crop(img, [size, size])
    x = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    x = TF.normalize(x, list(cfg["mean"]), list(cfg["std"]))
    return x.unsqueeze(0)


MAX_IMAGE_MPIX = 40.0  # an image to predict: 40 megapixels decode to 120 MB of RGB


class TooManyPixels(CNNCompareError):
    """An image that would decode beyond the pixel bound (refused from its header)."""


def check_pixels(path, max_mpix: float = MAX_IMAGE_MPIX, name: str | None = None) -> tuple[int, int]:
    """(width, height) of an image file, read from its header alone; refused when it would decode beyond `max_mpix`.

    Raises:
        CNNCompareError: not an image, or too many pixels (one sentence naming the file).
    """
    shown = name or getattr(path, "name", None) or str(path).rsplit("/", 1)[-1]
    try:
        with Image.open(path) as img:  # reads the header: nothing is decoded yet
            width, height = img.size
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        kind = type(err).__name__
        raise CNNCompareError(f"Could not read the image '{shown}' ({kind}); upload a JPEG or PNG file.") from None
    if max_mpix and width * height > max_mpix * 1e6:
        raise TooManyPixels(
            f"'{shown}' is {width:,} x {height:,} pixels ({width * height / 1e6:,.0f} megapixels), more than the "
            f"{max_mpix:,.0f} megapixels an image may have here: upload a smaller picture."
        )
    return width, height


def load_image(path_or_image, max_mpix: float | None = MAX_IMAGE_MPIX) -> Image.Image:
    """An RGB image from a path, a PIL image or an array; a file over `max_mpix` is refused before decoding.

    Raises:
        CNNCompareError: an unreadable file, or one with too many pixels.
    """
    if isinstance(path_or_image, Image.Image):
        return path_or_image
    if isinstance(path_or_image, np.ndarray):
        return Image.fromarray(path_or_image.astype(np.uint8))
    if max_mpix:
        check_pixels(path_or_image, max_mpix)
    try:
        with Image.open(path_or_image) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise CNNCompareError(f"Could not read the image ({err}); upload a JPEG or PNG file.") from err


def predict(
    model: nn.Module,
    image,
    *,
    size: int | None = None,
    classes: list[str] | None = None,
    top_k: int = 5,
    cam: bool = True,
    fit: str | None = None,
) -> Prediction:
    """Top-k classes of one image, with its time and (optionally) a Grad-CAM heat map.

    Args:
        model: a built model (`build_model`, or a run's `load_model()`).
        image: a path, PIL image or HxWx3 uint8 array.
        size: input size (default: the model's own).
        classes: the class names of a fine-tuned run (default: ImageNet's when the model has 1000 outputs).
        top_k: how many classes to return (at least 1).
        cam: compute the heat map (None, with a note, for models without a spatial feature map).
        fit: "squash" (as fine-tuning resized) or "crop" (ImageNet centre crop); default by `classes`.

    Returns:
        A Prediction.

    Raises:
        CNNCompareError: an unreadable image, an input size the model cannot take, top_k < 1.
    """
    card, size, fit, device = _setup(model, size, classes, top_k, fit)
    x = preprocess(load_image(image), model, size, fit).to(device)
    model.eval()
    with torch.inference_mode():
        model(x)  # warm-up: first calls allocate
        runtime.sync(device)
        t0 = time.perf_counter()
        logits = model(x)
        runtime.sync(device)
        elapsed = (time.perf_counter() - t0) * 1e3
    labels = _labels(classes, logits.shape[1])
    probs = logits.float().softmax(1)[0]
    k = min(top_k, probs.numel())
    values, idx = probs.topk(k)
    top = [(labels[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]
    note = ""
    if card.weights_source.startswith("random"):
        note = "random weights: predictions are meaningless (no pretrained weights offline; load a fine-tuned run)"
    heat = None
    if cam:
        try:
            heat = grad_cam(model, x, int(idx[0]))
        except NoSpatialMap:  # e.g. a vision transformer: its top-5 still stands
            note = "; ".join(p for p in (note, NO_HEAT_MAP) if p)
    return Prediction(card.spec.name, top, elapsed, heat, note)


def _setup(model: nn.Module, size: int | None, classes, top_k: int, fit: str | None):
    """(card, input size, fit, device) of a prediction, checked: `predict` and `predict_batch` alike."""
    if top_k < 1:
        raise CNNCompareError(f"Ask for at least one class (top_k={top_k}).")
    card = model.cnncompare
    size = size or card.info.default_size
    models.check_input_size(card.spec.name, size)
    return card, size, fit or ("squash" if classes else "crop"), next(model.parameters()).device


def _labels(classes: list[str] | None, n: int) -> list[str]:
    """A fine-tuned run's classes, else ImageNet's for a 1000-way head, else numbered classes."""
    return list(classes) if classes else (imagenet_labels() if n == 1000 else [f"class {i}" for i in range(n)])


def predict_batch(
    model: nn.Module,
    images: list,
    *,
    size: int | None = None,
    classes: list[str] | None = None,
    top_k: int = 5,
    cam: bool = True,
    fit: str | None = None,
) -> list[Prediction]:
    """`predict` for several images of one model at once, as a server batches its visitors' requests: one forward
    pass of the whole batch gives every image's top-k and, through the same pass, its Grad-CAM map (the gradient
    of each image's own top class: in eval mode the images of a batch do not touch each other). `time_ms` is the
    batch's time per image.

    Raises:
        CNNCompareError: as `predict`, for the first image that cannot be read.
    """
    card, size, fit, device = _setup(model, size, classes, top_k, fit)
    x = torch.cat([preprocess(load_image(im), model, size, fit) for im in images]).to(device)
    model.eval()
    runtime.sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = model.forward_features(x)
    maps = None
    if cam and feats.ndim == 4:
        feats = feats.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.forward_head(feats)
            (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), feats)
        maps = _cam_maps(grad, feats.detach(), x.shape[-2:])
    else:
        with torch.no_grad():
            logits = model.forward_head(feats)
    runtime.sync(device)
    per_image = (time.perf_counter() - t0) * 1e3 / len(images)
    labels = _labels(classes, logits.shape[1])
    probs = logits.detach().float().softmax(1)
    k = min(top_k, probs.shape[1])
    values, idx = probs.topk(k, dim=1)
    note = ""
    if card.weights_source.startswith("random"):
        note = RANDOM_HEAT_MAPS
    if cam and maps is None:
        note = "; ".join(p for p in (note, NO_HEAT_MAP) if p)
    grid = tuple(feats.shape[-2:]) if feats.ndim == 4 else None
    out = []
    for i in range(len(images)):
        top = [(labels[j], float(v)) for v, j in zip(values[i].tolist(), idx[i].tolist())]
        out.append(Prediction(card.spec.name, top, per_image, None if maps is None else maps[i], note, grid))
    return out


def _cam_maps(grad: torch.Tensor, feats: torch.Tensor, size) -> np.ndarray:
    """Grad-CAM maps (N x H x W in [0, 1], at `size`) from the gradients of each image's target and its features."""
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feats).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp(min=1e-12), cam).cpu().numpy()


def grad_cam(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM on the last convolutional feature map; HxW array in [0, 1] at the input's size."""
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
    if feats.ndim != 4:
        raise NoSpatialMap(NO_HEAT_MAP)
    feats = feats.detach().requires_grad_(True)
    with torch.enable_grad():
        score = model.forward_head(feats)[0, target]
        (grad,) = torch.autograd.grad(score, feats)
    return _cam_maps(grad, feats.detach(), x.shape[-2:])[0]


def overlay(image, cam: np.ndarray, alpha: float = 0.45, fit: str = "crop") -> Image.Image:
    """The activation map as a blue-to-red heat map over the image, framed as the model saw it."""
    img = load_image(image).convert("RGB")
    if fit == "crop":
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))
    img = img.resize(cam.shape[::-1], Image.BILINEAR)
    c = np.clip(cam, 0, 1)
    heat = np.stack(
        [
            np.clip(1.5 - np.abs(4 * c - 3), 0, 1),  # red peaks at 0.75-1
            np.clip(1.5 - np.abs(4 * c - 2), 0, 1),  # green in the middle
            np.clip(1.5 - np.abs(4 * c - 1), 0, 1),
        ],
        -1,
    )  # blue at the low end
    out = (1 - alpha) * np.asarray(img, dtype=np.float32) / 255 + alpha * heat
    return Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8))
