"""Build models, list their layer groups, freeze parts of them.

Every model, whichever backend built it, speaks timm's API (`forward_features`,
`forward_head`, `get_classifier`, `reset_classifier`, `feature_info`, `pretrained_cfg`)
and carries a `ModelCard` in `model.cnncompare` saying how it was built.

Layer groups ("blocks") follow the network's resolution levels, read from timm's
`feature_info`: the **stem** is everything up to output stride 2, **stage k** ends at the
k-th following halving of resolution, **pre-logits** is what sits between the last stage
and the classifier (VGG's fc6/fc7, EfficientNet's 1x1 conv head, ConvNeXt's final norm),
and **head** is the classifier. So `stages:2` freezes the layers that work at strides up to
8 in every family:

| family      | stem                     | stage 1 .. 4                                        |
|-------------|--------------------------|-----------------------------------------------------|
| AlexNet     | (none: conv1 has stride 4)| conv1 / conv2 / conv3-5 (only three stages)         |
| VGG         | conv block 1             | conv blocks 2 / 3 / 4 / 5                           |
| GoogLeNet   | conv1                    | conv2-3 / inception 3a-b / 4a-e / 5a-b              |
| Inception v3| Conv2d 1a-2b             | Conv2d 3b-4a / Mixed 5b-5d / 6a-6e / 7a-7c          |
| ResNet-like | conv1 + bn1              | layer1 / layer2 / layer3 / layer4                   |
| DenseNet    | conv0 + norm0            | denseblock1 / 2 / 3 / 4 (+ transitions)             |
| MobileNet, EfficientNet | conv_stem + blocks.0 | blocks.1 / 2 / 3-4 / 5-6                     |
| ConvNeXt    | (patchify stem counted in stage 1) | stages.0 / 1 / 2 / 3                      |
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import catalog, layers
from .errors import CNNCompareError, InputSizeError, WeightsUnavailableError
from .settings import first_line

__all__ = [
    "ModelSpec",
    "ModelCard",
    "Block",
    "FreezePolicy",
    "HEADS",
    "INITS",
    "build",
    "blocks",
    "freeze",
    "count_params",
    "data_config",
    "check_input_size",
    "min_input_size",
    "modules_to_freeze",
    "weight_layers",
    "offline",
    "pretrained_available",
    "weights_downloadable",
    "check_allowed",
    "model_bytes",
    "remember_weights",
    "classifier_name",
    "read_weights",
    "check_weights",
    "weights_hint",
    "weights_source_hint",
]

HEADS = ("linear", "mlp")
INITS = ("default", "he", "glorot")
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class ModelSpec:
    """Everything needed to build the same model again."""

    name: str
    num_classes: int = 1000
    pretrained: bool = False
    head: str = "linear"  # "linear": new last layer; "mlp": new 4096-4096 ReLU+Dropout(0.5) classifier
    init: str = "default"  # from scratch: "default" (backend's), "he" or "glorot"
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


def _validate_spec(spec: ModelSpec) -> None:
    if spec.head not in HEADS:
        raise CNNCompareError(f"Unknown head '{spec.head}': choose one of {', '.join(HEADS)}.")
    if spec.init not in INITS:
        raise CNNCompareError(f"Unknown init '{spec.init}': choose one of {', '.join(INITS)}.")
    if spec.num_classes < 1:
        raise CNNCompareError(f"num_classes must be at least 1, got {spec.num_classes}.")
    if spec.weights_file and not Path(spec.weights_file).is_file():
        raise WeightsUnavailableError(f"Weights file not found: {spec.weights_file}.")


def _offline_message(what: str, err: Exception) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Could not get pretrained weights for {what} ({type(err).__name__}: {first_line(err)[:160]}). "
        "Without network access, pass a local weights file (--weights PATH / 'weights file' in the app) "
        "or train from scratch (pretrained off)."
    )


def offline() -> bool:
    """True when downloads are switched off (CNNCOMPARE_OFFLINE=1 or HF_HUB_OFFLINE=1)."""
    from .settings import Env

    return Env.read().offline


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
    params, _ = count_params(build(name, device="meta"))
    if params > max_params_m * 1e6:
        raise CNNCompareError(
            f"{info.name} has {params / 1e6:,.0f} M parameters, more than this server allows for "
            f"models outside the catalog ({max_params_m:,.0f} M): pick a smaller one."
        )


def remember_weights(name: str, ok: bool) -> None:
    """Record what a build with pretrained weights found (so `pretrained_available` need not build again)."""
    _WEIGHTS_OK[name] = ok


@functools.cache
def _reachable(host: str) -> bool:
    # One quick connection attempt, so that no network fails in seconds rather than after the
    # Hub client's minute of retries.
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _can_download(host: str) -> bool:
    return not offline() and _reachable(host)


def weights_downloadable() -> bool:
    """Whether pretrained weights can be fetched now (downloads on and the Hub reachable)."""
    return _can_download("huggingface.co")


def _timm_cached_file(backend_name: str) -> str | None:
    """Path of the model's weights in the local Hugging Face cache, if downloaded before."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.get_pretrained_cfg(backend_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str):
            return path
    return None


# --------------------------------------------------------------------------- weights files

_WRAPPERS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema", "module")
_OPTIONAL = ("num_batches_tracked",)  # BatchNorm's step counter: older files lack it, none of it is a weight
_AUX = ("aux1.", "aux2.", "AuxLogits.")  # GoogLeNet's and Inception v3's auxiliary classifiers (not built here)
_FILTERS = ("checkpoint_filter_fn", "_filter_fn", "_filter_torchvision_pretrained")  # timm's own remappers


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read safely: `.safetensors`, or a `.pth`/`.bin` through
    `torch.load(weights_only=True)` (a pickle that holds code is refused, never run).

    Common checkpoint wrappers (`{"state_dict": ...}`, `{"model": ...}`) and DataParallel's
    `module.` prefix are removed; entries that are not tensors (an epoch number) are dropped.

    Raises:
        WeightsUnavailableError: an unreadable file, a pickle with code, no tensors (one sentence, by file name).
    """
    path = Path(path)
    name = path.name
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        import pickle

        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err).lower():
            raise WeightsUnavailableError(
                f"{name} holds Python objects besides weights, and for safety only plain tensors are loaded: save "
                "the weights alone, with torch.save(model.state_dict(), 'model.pth') or as .safetensors."
            ) from None
        raise WeightsUnavailableError(
            f"Could not read {name} as a weights file ({type(err).__name__}: {first_line(err)[:120]}): "
            "give a .safetensors file or a .pth file saved with torch.save(model.state_dict(), ...)."
        ) from None
    for _ in range(3):  # {"state_dict": {...}}, {"model": {"module": ...}}
        if isinstance(sd, dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            inner = next((sd[k] for k in _WRAPPERS if isinstance(sd.get(k), dict)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, dict):
        raise WeightsUnavailableError(
            f"{name} does not hold a state dict of weights: save it with torch.save(model.state_dict(), ...)."
        )
    sd = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):  # saved from nn.DataParallel / DDP
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if not sd:
        raise WeightsUnavailableError(f"{name} holds no weight tensors: give a model's state dict.")
    return sd


@functools.cache
def _layout(name: str) -> tuple[dict[str, tuple[int, ...]], str, str]:
    """(key -> shape of the 1000-class ImageNet model, classifier module name, timm module) on the meta device."""
    model = build(name, device="meta")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return shapes, classifier_name(model), type(model).__module__


def _optional(key: str) -> bool:
    return key.endswith(_OPTIONAL) or key.startswith(_AUX)


def _to_timm_format(info: catalog.ArchInfo, sd: dict, expected: dict) -> dict:
    """A file in another layout (torchvision's VGG classifier, DenseNet's old names, ConvNeXt's original) mapped
    to timm's keys by timm's own filter for that architecture, when that makes more keys fit."""
    import sys

    if info.backend != "timm" or set(sd) <= set(expected):
        return sd
    module = sys.modules.get(_layout(info.name)[2])
    best, best_fit = sd, len(set(sd) & set(expected))
    for attr in _FILTERS:
        fn = getattr(module, attr, None)
        if fn is None:
            continue
        try:
            out = fn(dict(sd))
        except TypeError:  # a filter that also takes the model
            try:
                out = fn(dict(sd), build(info.name, device="meta"))
            except Exception:
                continue
        except Exception:
            continue
        fit = len(set(out) & set(expected)) if isinstance(out, dict) else -1
        if fit > best_fit:
            best, best_fit = out, fit
    return best


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) or "a scalar"


@functools.cache
def _catalog_layouts() -> dict[str, frozenset]:
    out = {}
    for n in catalog.CATALOG:
        try:
            shapes, _, _ = _layout(n)
        except Exception:
            continue
        out[n] = frozenset((k, s) for k, s in shapes.items() if not _optional(k))
    return out


def _looks_like(sd: dict) -> str | None:
    """The catalog model whose layout the file matches best (most keys with the same shape), if it is a close one.

    The file is also read through timm's one-argument remappers (VGG, DenseNet), so a torchvision-format
    file is recognised too.
    """
    from timm.models import densenet, vgg

    variants = [sd]
    for fn in (vgg._filter_fn, densenet._filter_torchvision_pretrained):
        try:
            variants.append(fn(dict(sd)))
        except Exception:
            continue
    haves = [{(k, tuple(v.shape)) for k, v in d.items() if not _optional(k)} for d in variants]
    best, score = None, 0.0
    for n, layout in _catalog_layouts().items():
        s = max(len(have & layout) / max(len(have | layout), 1) for have in haves)
        if s > score:
            best, score = n, s
    return best if score >= 0.8 else None


def check_weights(
    name: str, sd: dict[str, torch.Tensor], *, num_classes: int = 1000, file_name: str = "the file"
) -> dict[str, torch.Tensor]:
    """Check a weights file's tensors against a catalog model; return them ready to load into the model
    built with `num_classes` outputs.

    Both formats of the torchvision-trained models are taken: timm's and torchvision's (timm's own
    remapping, e.g. VGG's classifier.0 -> pre_logits.fc1). The classifier is the one part allowed
    to differ: fine-tuning (`num_classes` != 1000) replaces it, so a file of any class count starts
    a fine-tuning; predicting ImageNet classes (`num_classes` 1000) needs the file's 1000-class
    classifier. Auxiliary classifiers (GoogLeNet, Inception v3) are dropped.

    Raises:
        WeightsUnavailableError: missing or extra tensors, or a shape that differs, in one sentence that
        names the first one and, when it is recognisable, the model the file was made for.
    """
    info = catalog.get(name)
    expected, cls_name, _ = _layout(info.name)
    sd = _to_timm_format(info, sd, expected)
    cls_keys = {f"{cls_name}.weight", f"{cls_name}.bias"}
    fine_tune = num_classes != 1000
    head = {k: v for k, v in sd.items() if k in cls_keys}
    body = {k: v for k, v in sd.items() if k not in cls_keys and not k.startswith(_AUX)}
    missing = [k for k in expected if k not in cls_keys and not _optional(k) and k not in body]
    extra = [k for k in body if k not in expected and not _optional(k)]
    differ = [k for k in body if k in expected and tuple(body[k].shape) != expected[k]]
    for k, v in head.items():  # the classifier's input side must fit; its class count may differ
        if len(v.shape) != len(expected[k]) or tuple(v.shape[1:]) != expected[k][1:]:
            differ.append(k)
    if not fine_tune:
        missing += [k for k in sorted(cls_keys) if k in expected and k not in head]
    what = f"The weights in {file_name} do not fit {info.name}"
    if missing or extra or differ:
        like = _looks_like(sd)
        like_txt = f" (they look like {like}'s)" if like and like != info.name else ""
        n_file = sum(not _optional(k) for k in sd)
        n_exp = sum(not _optional(k) for k in expected)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} of {info.name}'s are not in the file (first: {missing[0]})")
            if extra:
                parts.append(f"{len(extra)} of the file's are not in {info.name} (first: {extra[0]})")
            detail = f"the file has {n_file} weight tensors, {info.name} expects {n_exp}: " + " and ".join(parts)
        else:
            k = differ[0]
            more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
            detail = (
                f"layer shapes differ: {k} is {_shape(expected[k])} in {info.name}, "
                f"{_shape(tuple(sd[k].shape))} in the file{more}"
            )
        raise WeightsUnavailableError(f"{what}{like_txt}: {detail}. {_expected_format(info)}")
    rows = [v.shape[0] for k, v in head.items() if k.endswith(".weight")]
    if not fine_tune and rows and rows[0] != 1000:
        raise WeightsUnavailableError(
            f"{file_name} has a classifier of {rows[0]} classes, not ImageNet's 1000: it can start a fine-tuning "
            "(the classifier is replaced), but it cannot predict ImageNet classes."
        )
    out = {k: v for k, v in body.items() if k in expected}
    if not fine_tune:
        out.update(head)
    return out


def _expected_format(info: catalog.ArchInfo) -> str:
    if info.backend == "torchvision":
        return f"Give torchvision's {info.name} weights ({weights_source_hint(info.name)})."
    if info.tv_model:
        return f"Give {info.name}'s weights in timm's or torchvision's format ({weights_source_hint(info.name)})."
    return f"Give timm's {info.name} weights ({weights_source_hint(info.name)})."


def weights_source_hint(name: str) -> str:
    """Where a model's ImageNet weights file comes from, in a few words (for error messages)."""
    info = catalog.get(name)
    if info.backend == "torchvision":
        return f"the file {_tv_url(info).rsplit('/', 1)[-1]} from download.pytorch.org"
    hub = _hub_id(info)
    return f"the file model.safetensors of huggingface.co/{hub}" if hub else f"timm's {info.backend_name}"


def _tv_url(info: catalog.ArchInfo) -> str:
    from torchvision import models as tvm

    return tvm.get_model_weights(info.tv_model)[info.tv_weights].url


def _hub_id(info: catalog.ArchInfo) -> str | None:
    import timm

    try:
        cfg = timm.get_pretrained_cfg(info.backend_name)
    except Exception:
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg else None


def weights_hint(name: str) -> str:
    """How to get a model's ImageNet weights on a machine with internet, as one Markdown sentence to show offline.

    Correct for both backends: torchvision's AlexNet/GoogLeNet (their .pth from download.pytorch.org)
    and timm's models (model.safetensors of their Hugging Face page, e.g. timm/resnet50.tv_in1k, or
    for those trained by torchvision its .pth too: both formats load).
    """
    info = catalog.get(name)
    if info.backend == "torchvision":
        url = _tv_url(info)
        cmd = (
            f'python -c "import torch, torchvision; torch.save(torchvision.models.{info.tv_model}'
            f"(weights='{info.tv_weights}').state_dict(), '{info.name}.pth')\""
        )
        return (
            f"To use {info.name}'s ImageNet weights here, download them on a machine with internet ({url}, or "
            f"`{cmd}`) and upload the file here."
        )
    hub = _hub_id(info)
    cmd = (
        f"python -c \"import timm, safetensors.torch as st; st.save_file(timm.create_model('{info.backend_name}', "
        f"pretrained=True).state_dict(), '{info.name}.safetensors')\""
    )
    where = f"from https://huggingface.co/{hub} (file model.safetensors)" if hub else f"with `{cmd}`"
    also = f", or with `{cmd}`" if hub else ""
    tv = (
        f"; torchvision's {_tv_url(info)} works too" if info.tv_model and info.backend_name.endswith(".tv_in1k") else ""
    )
    return (
        f"To use {info.name}'s ImageNet weights here, download them on a machine with internet {where}{also}"
        f"{tv}, then upload the file here."
    )


def _build_torchvision(info, spec, load_weights):
    from . import tvmodels

    state_dict, source = None, f"random init ({spec.init})"
    if load_weights:
        if spec.weights_file:
            sd = read_weights(spec.weights_file)
            state_dict = check_weights(
                info.name, sd, num_classes=spec.num_classes, file_name=Path(spec.weights_file).name
            )
            model = tvmodels.create(info.backend_name, num_classes=1000, pretrained=spec.pretrained)
            _load_checked(model, state_dict, spec.weights_file)
            if spec.num_classes != 1000:
                model.reset_classifier(spec.num_classes)
            return model, f"file: {Path(spec.weights_file).name}"
        if not tvmodels.is_cached(info.tv_model, info.tv_weights) and not _can_download("download.pytorch.org"):
            raise _offline_message(info.name, ConnectionError("download.pytorch.org is not reachable"))
        try:
            state_dict = tvmodels.download_state_dict(info.tv_model, info.tv_weights)
        except Exception as err:  # URLError, HTTPError, hash mismatch: all mean "no weights"
            raise _offline_message(info.name, err) from err
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
    left = [k for k in missing if not k.endswith(_OPTIONAL) and not k.startswith(cls_name + ".")]
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
        sd = read_weights(spec.weights_file)
        state_dict = check_weights(info.name, sd, num_classes=spec.num_classes, file_name=Path(spec.weights_file).name)
        model = timm.create_model(info.backend_name, pretrained=False, **kwargs)
        _load_checked(model, state_dict, spec.weights_file)
        return model, f"file: {Path(spec.weights_file).name}"
    cached = _timm_cached_file(info.backend_name)
    overlay = dict(file=cached) if cached else None
    source = f"timm (Hugging Face Hub): {info.backend_name}"
    if not cached and not _can_download("huggingface.co"):
        raise _offline_message(info.name, ConnectionError("huggingface.co is not reachable"))
    try:
        model = timm.create_model(info.backend_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as err:  # hub/HTTP/OS errors when offline
        raise _offline_message(info.name, err) from err
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


# --------------------------------------------------------------------------- blocks


@dataclass
class Block:
    name: str  # "stem", "stage1".., "pre-logits", "head"
    kind: str  # "stem" | "stage" | "pre-logits" | "head"
    modules: list[str]  # parameterised modules in execution order
    params: int = 0
    trainable: int = 0
    out_shape: tuple[int, ...] | None = None  # (C, H, W) or (features,) at the given input size
    frozen: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def _frozen_bn_types() -> tuple[type, ...]:
    from timm.layers.norm_act import FrozenBatchNormAct2d
    from torchvision.ops.misc import FrozenBatchNorm2d

    return FrozenBatchNorm2d, FrozenBatchNormAct2d


def _param_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own parameters directly (conv, linear, norm...), by name.

    timm's FrozenBatchNorm2d keeps its weight as a buffer, so it counts as owning them too.
    """
    return {
        n: m
        for n, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False)) or isinstance(m, _frozen_bn_types())
    }


def _own_numel(m: nn.Module, trainable_only: bool = False) -> int:
    n = sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad or not trainable_only)
    if isinstance(m, _frozen_bn_types()) and not trainable_only:
        n += m.weight.numel() + m.bias.numel()
    return n


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable). Frozen BatchNorm affine weights (buffers in timm's FrozenBatchNorm2d) count as params."""
    mods = _param_modules(model).values()
    return sum(_own_numel(m) for m in mods), sum(_own_numel(m, True) for m in mods)


def _trace(model: nn.Module, size: int) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """When each named module first finishes its forward, and its output shape (one meta pass).

    A container finishes after all its children, so "finished before stage end X" is exactly
    "belongs to X or an earlier stage".
    """
    twin = build(model.cnncompare.spec, device="meta").eval()
    done: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, m in twin.named_modules():

        def hook(mod, inp, out, name=name):
            if name not in done:
                done[name] = len(done)
                if isinstance(out, torch.Tensor):
                    shapes[name] = tuple(out.shape[1:])

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            twin(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return done, shapes


def _param_order(model: nn.Module, done: dict[str, int]) -> list[str]:
    """Parameterised modules in execution order; never-called ones (none in the catalog) go last."""
    pmods = _param_modules(model)  # frozen BN swaps module objects but keeps names
    return sorted(pmods, key=lambda n: done.get(n, len(done)))


def blocks(model: nn.Module, size: int | None = None) -> list[Block]:
    """Ordered layer groups (stem, stages, pre-logits, head) with parameter counts and output shapes."""
    card: ModelCard = model.cnncompare
    size = size or card.info.default_size
    check_input_size(card.spec.name, size)
    done, shapes = _trace(model, size)
    pmods = _param_modules(model)
    order = _param_order(model, done)
    head_set = tuple(card.head_modules)

    def in_head(n: str) -> bool:
        return any(n == h or n.startswith(h + ".") for h in head_set)

    fi = [f["module"] for f in model.feature_info]
    reductions = [f["reduction"] for f in model.feature_info]
    # index in `order` of the last parameterised module finished by each stage end
    ends = [sum(done.get(n, len(done)) <= done[m] for n in order) - 1 for m in fi]
    groups: list[Block] = []
    first_is_stem = reductions[0] <= 2
    start = 0
    stage = 0
    for k, end in enumerate(ends):
        members = [n for n in order[start : end + 1] if not in_head(n)]
        start = max(start, end + 1)
        if not members:
            continue
        if k == 0 and first_is_stem:
            name, kind = "stem", "stem"
        else:
            stage += 1
            name, kind = f"stage{stage}", "stage"
        groups.append(Block(name, kind, members, out_shape=shapes.get(fi[k])))
    rest = order[start:]
    pre = [n for n in rest if not in_head(n)]
    if pre:
        groups.append(Block("pre-logits", "pre-logits", pre, out_shape=shapes.get(pre[-1])))
    head = [n for n in order if in_head(n)]
    groups.append(Block("head", "head", head, out_shape=shapes.get(head[-1]) if head else None))
    for g in groups:
        g.params = sum(_own_numel(pmods[n]) for n in g.modules)
        g.trainable = sum(_own_numel(pmods[n], True) for n in g.modules)
        g.frozen = g.params > 0 and g.trainable == 0
    return groups


# --------------------------------------------------------------------------- freezing

_POLICY_RE = re.compile(r"^(none|head|stages:(\d+)|layers:(\d+))$")


@dataclass(frozen=True)
class FreezePolicy:
    kind: str  # "none" | "head" | "stages" | "layers"
    k: int = 0

    @classmethod
    def parse(cls, text: str) -> FreezePolicy:
        t = (text or "none").strip().lower().replace(" ", "")
        m = _POLICY_RE.match(t)
        if not m:
            raise CNNCompareError(
                f"Unknown freeze policy '{text}': use none, head, stages:K or layers:N (e.g. stages:2, layers:10)."
            )
        if m.group(2) is not None:
            return cls("stages", int(m.group(2)))
        if m.group(3) is not None:
            return cls("layers", int(m.group(3)))
        return cls(t)

    def __str__(self) -> str:
        return f"{self.kind}:{self.k}" if self.kind in ("stages", "layers") else self.kind


def weight_layers(model: nn.Module, size: int | None = None) -> list[list[str]]:
    """Weight layers (conv or linear) in execution order, each with the norm layers that follow it.

    "layers:N" freezes the first N of these, e.g. layers:10 on VGG16 = conv blocks 1-4, which is
    what Keras' `for layer in model.layers[:15]` freezes (Keras also counts input and pool layers).
    """
    card: ModelCard = model.cnncompare
    done, _ = _trace(model, size or card.info.default_size)
    pmods = _param_modules(model)
    order = _param_order(model, done)
    layers: list[list[str]] = []
    for n in order:
        if isinstance(pmods[n], (nn.Conv2d, nn.Linear)) or not layers:
            layers.append([n])
        else:
            layers[-1].append(n)
    return layers


def modules_to_freeze(model: nn.Module, policy: FreezePolicy | str, size: int | None = None) -> list[str]:
    policy = FreezePolicy.parse(policy) if isinstance(policy, str) else policy
    if policy.kind == "none":
        return []
    groups = blocks(model, size)
    if policy.kind == "head":
        return [n for g in groups if g.kind != "head" for n in g.modules]
    if policy.kind == "stages":
        n_stages = sum(g.kind == "stage" for g in groups)
        if policy.k > n_stages:
            raise CNNCompareError(
                f"{model.cnncompare.spec.name} has {n_stages} stages; stages:{policy.k} is too many "
                f"(use stages:0..{n_stages}, or head to freeze everything but the classifier)."
            )
        chosen = [g for g in groups if g.kind == "stem" or (g.kind == "stage" and int(g.name[5:]) <= policy.k)]
        return [n for g in chosen for n in g.modules]
    layers = weight_layers(model, size)
    if policy.k > len(layers):
        raise CNNCompareError(
            f"{model.cnncompare.spec.name} has {len(layers)} weight layers; layers:{policy.k} is too many."
        )
    return [n for layer in layers[: policy.k] for n in layer]


def freeze(model: nn.Module, policy: FreezePolicy | str, size: int | None = None) -> list[str]:
    """Freeze parts of `model` in place (timm.utils.freeze: no grads, BatchNorm -> FrozenBatchNorm2d).

    Frozen BatchNorm keeps its running statistics even in train mode, as the Keras transfer
    guide recommends. Returns the frozen module names.
    """
    from timm.utils import freeze as timm_freeze

    names = modules_to_freeze(model, policy, size)
    if "" in names:  # parameters owned by the root module itself (e.g. a position embedding)
        for p in model.parameters(recurse=False):
            p.requires_grad = False
        names = [n for n in names if n]
    if names:  # timm freezes the whole model when given an empty list
        # new FrozenBatchNorm2d modules must be created where the model lives (meta included)
        device = next(model.parameters()).device
        with torch.device(device):
            timm_freeze(model, names)
    model.cnncompare.frozen = names
    return names
