"""Layer groups ("blocks") of any model, and freezing them.

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

import functools
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import CNNCompareError
from ..settings import FreezePolicy, ModelEntry
from .builder import ModelCard, build, check_input_size, spec_of

__all__ = [
    "Block",
    "FreezePolicy",
    "FreezeReport",
    "freeze_report",
    "blocks",
    "freeze",
    "build_frozen",
    "count_params",
    "modules_to_freeze",
    "weight_layers",
    "trace",
    "param_modules",
    "own_numel",
]


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


def param_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own parameters directly (conv, linear, norm...), by name.

    timm's FrozenBatchNorm2d keeps its weight as a buffer, so it counts as owning them too.
    """
    return {
        n: m
        for n, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False)) or isinstance(m, _frozen_bn_types())
    }


def own_numel(m: nn.Module, trainable_only: bool = False) -> int:
    n = sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad or not trainable_only)
    if isinstance(m, _frozen_bn_types()) and not trainable_only:
        n += m.weight.numel() + m.bias.numel()
    return n


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable). Frozen BatchNorm affine weights (buffers in timm's FrozenBatchNorm2d) count as params."""
    mods = param_modules(model).values()
    return sum(own_numel(m) for m in mods), sum(own_numel(m, True) for m in mods)


def trace(model: nn.Module, size: int) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
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
    pmods = param_modules(model)  # frozen BN swaps module objects but keeps names
    return sorted(pmods, key=lambda n: done.get(n, len(done)))


def blocks(model: nn.Module, size: int | None = None) -> list[Block]:
    """Ordered layer groups (stem, stages, pre-logits, head) with parameter counts and output shapes."""
    card: ModelCard = model.cnncompare
    size = size or card.info.default_size
    check_input_size(card.spec.name, size)
    done, shapes = trace(model, size)
    pmods = param_modules(model)
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
        g.params = sum(own_numel(pmods[n]) for n in g.modules)
        g.trainable = sum(own_numel(pmods[n], True) for n in g.modules)
        g.frozen = g.params > 0 and g.trainable == 0
    return groups


# --------------------------------------------------------------------------- freezing


def weight_layers(model: nn.Module, size: int | None = None) -> list[list[str]]:
    """Weight layers (conv or linear) in execution order, each with the norm layers that follow it.

    "layers:N" freezes the first N of these, e.g. layers:10 on VGG16 = conv blocks 1-4, which is
    what Keras' `for layer in model.layers[:15]` freezes (Keras also counts input and pool layers).
    """
    card: ModelCard = model.cnncompare
    done, _ = trace(model, size or card.info.default_size)
    pmods = param_modules(model)
    order = _param_order(model, done)
    layers: list[list[str]] = []
    for n in order:
        if isinstance(pmods[n], (nn.Conv2d, nn.Linear)) or not layers:
            layers.append([n])
        else:
            layers[-1].append(n)
    return layers


def modules_to_freeze(model: nn.Module, policy: FreezePolicy | str, size: int | None = None) -> list[str]:
    policy = FreezePolicy.parse(policy)
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


def build_frozen(
    entry: ModelEntry,
    num_classes: int,
    size: int,
    *,
    device: str | torch.device | None = None,
    load_weights: bool = True,
) -> nn.Module:
    """The model of a settings entry with `num_classes` outputs, its freeze policy applied at `size`: what a run
    trains, an estimate times, a saved run rebuilds and a diagram draws ("meta" builds it for free).

    Raises:
        CNNCompareError: as `build` and `freeze` (an unknown model, weights that cannot be had, too many stages).
    """
    model = build(spec_of(entry, num_classes), device, load_weights=load_weights)
    freeze(model, entry.freeze, size)
    return model


@dataclass(frozen=True)
class FreezeReport:
    """What a freeze policy does to one model at one input size: its blocks (frozen or training), the parameters that
    train, or why the policy does not fit (`problem`; the blocks are then shown unfrozen). The one answer of
    `cnncompare blocks`, the Architectures tab's blocks and its diagram."""

    name: str
    size: int
    policy: str
    blocks: tuple[Block, ...]
    params: int
    trainable: int
    problem: str = ""

    @property
    def frozen(self) -> list[str]:
        return [b.name for b in self.blocks if b.frozen]

    def summary(self) -> str:
        """One line: what trains, or why the policy does not fit."""
        if self.problem:
            return f"{self.problem} (shown unfrozen)"
        share = 100 * self.trainable / self.params if self.params else 0.0
        frozen = f"frozen: {', '.join(self.frozen)}" if self.frozen else "nothing frozen"
        return f"{self.trainable / 1e6:.2f} M of {self.params / 1e6:.2f} M parameters train ({share:.1f} %); {frozen}"

    def to_dict(self) -> dict:
        return dict(
            name=self.name,
            input_size=self.size,
            freeze=self.policy,
            params=self.params,
            trainable_params=self.trainable,
            problem=self.problem,
            blocks=[b.to_dict() for b in self.blocks],
        )


def freeze_report(name: str, policy: FreezePolicy | str | None, size: int | None = None) -> FreezeReport:
    """`FreezeReport` of catalog or timm model `name` (built on the meta device: no memory, no download).

    Raises:
        CNNCompareError: an unknown model, a bad policy string, an input size the model cannot take.
    """
    policy = FreezePolicy.parse(policy)
    model = build(name, device="meta")
    size = int(size or model.cnncompare.info.default_size)
    check_input_size(model.cnncompare.spec.name, size)
    problem = ""
    try:
        freeze(model, policy, size)
    except CNNCompareError as err:  # e.g. stages:4 on AlexNet (3 stages)
        problem = str(err)
    groups = blocks(model, size)
    total, trainable = count_params(model)
    return FreezeReport(name, size, str(policy), tuple(groups), total, trainable, problem)
