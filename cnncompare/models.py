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

from . import catalog
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


def _load_file(path: str) -> dict:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsUnavailableError(f"Could not read weights file {path}: {err}.") from err
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsUnavailableError(f"{path} does not hold a state dict of weights.")
    return sd


def _build_torchvision(info, spec, load_weights):
    from . import tvmodels

    state_dict, source = None, f"random init ({spec.init})"
    if load_weights:
        if spec.weights_file:
            state_dict, source = _load_file(spec.weights_file), f"file: {spec.weights_file}"
        else:
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
            f"The weights in {spec.weights_file} do not fit {info.name}: {str(err).splitlines()[0]}"
        ) from err
    return model, source


def _build_timm(info, spec, load_weights):
    import timm

    kwargs = dict(num_classes=spec.num_classes)
    if spec.head == "mlp" and info.family.startswith("VGG"):
        kwargs["drop_rate"] = 0.5  # dropout after fc7, as in the classic VGG head
    source = f"random init ({spec.init})"
    if not load_weights:
        return timm.create_model(info.backend_name, pretrained=False, **kwargs), source
    if spec.weights_file:
        overlay = dict(file=spec.weights_file)
        source = f"file: {spec.weights_file}"
    else:
        cached = _timm_cached_file(info.backend_name)
        overlay = dict(file=cached) if cached else None
        source = f"timm (Hugging Face Hub): {info.backend_name}"
        if not cached and not _can_download("huggingface.co"):
            raise _offline_message(info.name, ConnectionError("huggingface.co is not reachable"))
    try:
        model = timm.create_model(info.backend_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as err:  # hub/HTTP/OS errors when offline; key mismatch for a wrong file
        if spec.weights_file:
            raise WeightsUnavailableError(
                f"Could not load {spec.weights_file} into {info.name}: {str(err).splitlines()[0][:200]}"
            ) from err
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
