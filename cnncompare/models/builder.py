"""Build any catalog or timm model (and torchvision's AlexNet and GoogLeNet) behind timm's model API.

Every model, whichever backend built it, speaks timm's API (`forward_features`,
`forward_head`, `get_classifier`, `reset_classifier`, `feature_info`, `pretrained_cfg`)
and carries a `ModelCard` in `model.cnncompare` saying how it was built: its spec, its
catalog entry, where its weights came from and which modules form its (new) classifier.

Here too: the new heads (a linear classifier, or the classic 4096-4096 one), He and Glorot
initialisation, the model's data config (mean, std, interpolation), the smallest input a
model accepts, and the layout a weights file must have (`layout`, built on the meta device).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CNNCompareError, InputSizeError, WeightsUnavailableError
from ..settings import HEADS, INITS, ModelEntry
from . import catalog, hub, layers, tvmodels
from .weights import OPTIONAL, Layout, check_weights, file_bound, read_weights, tensor_bound

__all__ = [
    "ModelSpec",
    "ModelCard",
    "MLPHead",
    "build",
    "spec_of",
    "check_entry",
    "layout",
    "known_layouts",
    "checked_weights",
    "pretrained_available",
    "remember_weights",
    "model_bytes",
    "check_allowed",
    "classifier_name",
    "data_config",
    "min_input_size",
    "check_input_size",
]


@dataclass
class ModelSpec:
    """Everything needed to build the same model again."""

    name: str
    num_classes: int = 1000
    pretrained: bool = False
    head: str = "linear"  # one of settings.HEADS
    init: str = "default"  # one of settings.INITS (for layers trained from scratch)
    weights_file: str | None = None  # local pretrained weights instead of a download

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelCard:
    spec: ModelSpec
    info: catalog.ArchInfo
    head_modules: list[str]  # modules that form the (new) classifier
    weights_source: str  # "random init (he)", "timm hub: resnet50.tv_in1k", "file: /x.pth"
    frozen: list[str] = field(default_factory=list)  # module names frozen by freeze()


# --------------------------------------------------------------------------- building


def build(
    spec: ModelSpec | str, device: str | torch.device | None = None, *, load_weights: bool = True, **kwargs
) -> nn.Module:
    """Build a model from a spec (or a name plus ModelSpec fields), with timm's model API whatever its backend.

    On the meta device nothing is allocated and no weights are loaded: use it to count
    parameters and MACs for free. `load_weights=False` builds a pretrained spec's
    architecture without fetching its weights (a saved run brings its own).

    Args:
        spec: a `ModelSpec`, or a catalog/timm name with ModelSpec fields as keywords
            (num_classes, pretrained, head, init, weights_file).
        device: where to build it ("meta" for shapes only).
        load_weights: fetch the pretrained weights the spec asks for.

    Returns:
        The model, with `model.cnncompare` (its card: spec, catalog info, weights source, head modules).

    Raises:
        CNNCompareError: an unknown name (with suggestions), a bad head or init, weights that cannot be had.
    """
    if isinstance(spec, str):
        spec = ModelSpec(spec, **kwargs)
    _validate_spec(spec)
    info = catalog.get(spec.name)
    meta = device is not None and torch.device(device).type == "meta"
    load_weights = spec.pretrained and not meta and load_weights
    ctx = torch.device("meta") if meta else contextlib.nullcontext()
    with ctx:
        if info.backend == "torchvision":
            model, source = _build_torchvision(info, spec, load_weights)
        else:
            model, source = _build_timm(info, spec, load_weights)
        head_modules = _set_head(model, spec)
        layers.use_dense_fc(model)  # VGG's fc6 as the matrix product it is: same weights, names and results
        if not spec.pretrained and spec.init != "default":
            _init_weights(model, spec.init)
        elif spec.pretrained and spec.init != "default":
            for name in head_modules:
                _init_weights(model.get_submodule(name), spec.init)
    if spec.pretrained and not load_weights:
        source = "not loaded"
    model.cnncompare = ModelCard(spec=spec, info=info, head_modules=head_modules, weights_source=source)
    if device is not None and not meta:
        model.to(device)
    return model


def spec_of(entry: ModelEntry, num_classes: int) -> ModelSpec:
    """The `ModelSpec` that builds a settings entry's model with `num_classes` outputs."""
    return ModelSpec(
        entry.model,
        num_classes=num_classes,
        pretrained=entry.pretrained,
        head=entry.head,
        init=entry.init,
        weights_file=entry.weights_file,
    )


def check_entry(entry: ModelEntry, size: int | None = None) -> None:
    """An entry's model name and, when given, an input size the model must take (its fields were checked when the
    entry was made).

    Raises:
        CNNCompareError: an unknown model (with suggestions), an input size the model cannot take.
    """
    catalog.get(entry.model)
    if size is not None:
        check_input_size(entry.model, size)


def _validate_spec(spec: ModelSpec) -> None:
    if spec.head not in HEADS:
        raise CNNCompareError(f"Unknown head '{spec.head}': choose one of {', '.join(HEADS)}.")
    if spec.init not in INITS:
        raise CNNCompareError(f"Unknown init '{spec.init}': choose one of {', '.join(INITS)}.")
    if spec.num_classes < 1:
        raise CNNCompareError(f"num_classes must be at least 1, got {spec.num_classes}.")
    if spec.weights_file and not Path(spec.weights_file).is_file():
        raise WeightsUnavailableError(f"Weights file not found: {spec.weights_file}.")


_WEIGHTS_OK: dict[str, bool] = {}


def pretrained_available(name: str) -> bool:
    """Whether ImageNet weights for `name` can be had here (local cache or download).

    Builds the pretrained model once: offline this fails at once with a WeightsUnavailableError;
    online it downloads into the backend's cache, which the real build then reuses. The answer
    is remembered for the life of the process.
    """
    if name not in _WEIGHTS_OK:
        try:
            build(name, pretrained=True)
            _WEIGHTS_OK[name] = True
        except WeightsUnavailableError:
            _WEIGHTS_OK[name] = False
    return _WEIGHTS_OK[name]


def model_bytes(model: nn.Module) -> int:
    """Bytes held by a model's parameters and buffers (what keeping it in a cache costs)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def check_allowed(name: str, max_params_m: float) -> None:
    """A shared server's rule: catalog models always; any other timm model only under `max_params_m` million params.

    Counted on the meta device (no memory, milliseconds).

    Raises:
        CNNCompareError: an unknown name, or a model over the cap (the message gives its size).
    """
    info = catalog.get(name)
    if name.split(".")[0] in catalog.CATALOG:
        return
    params = sum(p.numel() for p in build(name, device="meta").parameters())
    if params > max_params_m * 1e6:
        raise CNNCompareError(
            f"{info.name} has {params / 1e6:,.0f} M parameters, more than this server allows for "
            f"models outside the catalog ({max_params_m:,.0f} M): pick a smaller one."
        )


def remember_weights(name: str, ok: bool) -> None:
    """Record what a build with pretrained weights found (so `pretrained_available` need not build again)."""
    _WEIGHTS_OK[name] = ok


# --------------------------------------------------------------------------- weights files


@functools.cache
def layout(name: str) -> Layout:
    """What a weights file for `name` must hold (its 1000-class ImageNet model, built on the meta device)."""
    name = catalog.get(name).name
    model = build(name, device="meta")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return Layout(name, shapes, classifier_name(model), type(model).__module__, lambda: build(name, device="meta"))


@functools.cache
def known_layouts() -> dict[str, Layout]:
    """The layouts of every catalog model (to say which one a file that fits none looks made for)."""
    out = {}
    for n in catalog.CATALOG:
        try:
            out[n] = layout(n)
        except Exception:
            continue
    return out


def checked_weights(name: str, path: str | Path, *, num_classes: int = 1000, file_name: str | None = None) -> dict:
    """A weights file read safely and checked against `name`'s layout: the tensors to load (`check_weights`).

    Raises:
        WeightsUnavailableError: an unreadable file, or one that does not fit (one sentence).
    """
    sd = read_weights(path, max_bytes=file_bound(layout(name)), max_tensors=tensor_bound(layout(name)))
    return check_weights(
        name,
        sd,
        layout(name),
        num_classes=num_classes,
        file_name=file_name or Path(path).name,
        known=known_layouts,
    )


def _build_torchvision(info, spec, load_weights):
    state_dict, source = None, f"random init ({spec.init})"
    if load_weights:
        if spec.weights_file:
            state_dict = checked_weights(info.name, spec.weights_file, num_classes=spec.num_classes)
            model = tvmodels.create(info.backend_name, num_classes=1000, pretrained=spec.pretrained)
            _load_checked(model, state_dict, spec.weights_file)
            if spec.num_classes != 1000:
                model.reset_classifier(spec.num_classes)
            return model, f"file: {Path(spec.weights_file).name}"
        if not tvmodels.is_cached(info.tv_model, info.tv_weights) and not hub.can_download("download.pytorch.org"):
            raise hub.offline_message(info.name, ConnectionError("download.pytorch.org is not reachable"))
        try:
            state_dict = tvmodels.download_state_dict(info.tv_model, info.tv_weights)
        except Exception as err:  # URLError, HTTPError, hash mismatch: all mean "no weights"
            raise hub.offline_message(info.name, err) from err
        source = f"torchvision: {info.tv_model} {info.tv_weights}"
    try:
        model = tvmodels.create(
            info.backend_name, num_classes=spec.num_classes, pretrained=spec.pretrained, state_dict=state_dict
        )
    except RuntimeError as err:  # load_state_dict key/shape mismatch
        raise WeightsUnavailableError(
            f"The downloaded weights do not fit {info.name}: {str(err).splitlines()[0]}"
        ) from err
    return model, source


def _load_checked(model: nn.Module, state_dict: dict, path: str) -> None:
    """Load checked tensors; only the classifier (replaced) and BatchNorm step counters may stay unset."""
    cls_name = classifier_name(model)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    left = [k for k in missing if not k.endswith(OPTIONAL) and not k.startswith(cls_name + ".")]
    if unexpected or left:
        raise WeightsUnavailableError(
            f"The weights in {Path(path).name} do not fit this model: {(unexpected or left)[0]} does not load."
        )


def _build_timm(info, spec, load_weights):
    import timm

    kwargs = dict(num_classes=spec.num_classes)
    if spec.head == "mlp" and info.family.startswith("VGG"):
        kwargs["drop_rate"] = 0.5  # dropout after fc7, as in the classic VGG head
    source = f"random init ({spec.init})"
    if not load_weights:
        return timm.create_model(info.backend_name, pretrained=False, **kwargs), source
    if spec.weights_file:
        # read and checked here (safe loading, readable messages, torchvision's layout mapped to timm's),
        # then loaded as timm would: the classifier stays new when the class count differs
        state_dict = checked_weights(info.name, spec.weights_file, num_classes=spec.num_classes)
        model = timm.create_model(info.backend_name, pretrained=False, **kwargs)
        _load_checked(model, state_dict, spec.weights_file)
        return model, f"file: {Path(spec.weights_file).name}"
    cached = hub.timm_cached_file(info.backend_name)
    overlay = dict(file=cached) if cached else None
    source = f"timm (Hugging Face Hub): {info.backend_name}"
    if not cached and not hub.can_download("huggingface.co"):
        raise hub.offline_message(info.name, ConnectionError("huggingface.co is not reachable"))
    try:
        model = timm.create_model(info.backend_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as err:  # hub/HTTP/OS errors when offline
        raise hub.offline_message(info.name, err) from err
    return model, source


class MLPHead(nn.Sequential):
    """The classic 4096-4096 classifier (ReLU + Dropout 0.5), as in the Keras VGG16 transfer recipe."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 4096, drop: float = 0.5):
        super().__init__(
            nn.Flatten(1),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop),
            nn.Linear(hidden, num_classes),
        )


def classifier_name(model: nn.Module) -> str:
    name = model.pretrained_cfg.get("classifier", "fc")
    return name[0] if isinstance(name, (tuple, list)) else name


def _set_head(model: nn.Module, spec: ModelSpec) -> list[str]:
    """Install the requested head; return the names of the modules that form it."""
    cls_name = classifier_name(model)
    if spec.head == "linear":
        return [cls_name]
    info = catalog.get(spec.name)
    if info.family.startswith("VGG"):
        # timm's VGG keeps fc6/fc7 as a conv MLP ("pre_logits": a 7x7 conv over the 7x7 map is
        # exactly a dense layer over the flattened map). Fresh fc6/fc7/fc8 = the Keras recipe.
        from timm.models.vgg import ConvMlp

        model.pre_logits = ConvMlp(model.num_features, 4096, 7, mlp_ratio=1.0, drop_rate=0.5)
        model.reset_classifier(spec.num_classes)
        return ["pre_logits", cls_name]
    if info.name == "alexnet":
        in_features = model.num_features  # 256x6x6 flattened, like the original fc6
        model.classifier = MLPHead(in_features, spec.num_classes)
        return ["classifier"]
    in_features = model.get_classifier().in_features
    parent, _, leaf = cls_name.rpartition(".")
    (model.get_submodule(parent) if parent else model).add_module(leaf, MLPHead(in_features, spec.num_classes))
    return [cls_name]


def _init_weights(module: nn.Module, scheme: str) -> None:
    """He (Kaiming) or Glorot (Xavier) init for conv/linear weights; zero biases; BN to identity."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def data_config(model: nn.Module, size: int | None = None) -> dict:
    """mean/std/interpolation/crop for a model (timm's resolve_data_config), at `size` if given."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    if size:
        cfg["input_size"] = (3, size, size)
    return cfg


# --------------------------------------------------------------------------- input sizes


def _runs_at(name: str, size: int) -> bool:
    try:  # fixed-size models (e.g. ViTs) assert on the size when built for it or when run
        model = build(name, device="meta").eval()
        with torch.no_grad():
            model(torch.empty(1, 3, size, size, device="meta"))
        return True
    except Exception:
        return False


@functools.cache
def min_input_size(name: str) -> int:
    """Smallest square input the model accepts (from the catalog, else probed on the meta device)."""
    info = catalog.get(name)
    if info.min_size:
        return info.min_size
    lo, hi = 1, max(info.default_size, catalog.FLOOR_SIZE)
    if not _runs_at(name, hi):
        return hi  # odd model: only its default size is known to work
    while lo < hi:  # smallest size that runs; shapes are monotone in size for these nets
        mid = (lo + hi) // 2
        if _runs_at(name, mid):
            hi = mid
        else:
            lo = mid + 1
    return max(lo, catalog.FLOOR_SIZE)


def check_input_size(name: str, size: int) -> None:
    if not isinstance(size, int) or size <= 0:
        raise InputSizeError(f"Input size must be a positive number of pixels, got {size!r}.")
    smallest = min_input_size(name)
    if size < smallest:
        raise InputSizeError(
            f"{name} needs inputs of at least {smallest}x{smallest} px (asked for {size}); "
            f"choose an input size of {smallest} px or more."
        )
