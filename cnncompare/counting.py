"""Lessons that count instead of train: two classic design choices, counted from the models themselves in a second.

* **1×1 reductions** (GoogLeNet, 2014): an Inception module with its 1×1 convolutions before the 3×3 and 5×5 ones,
  next to the "naive" module without them (the paper's own comparison), with the channel numbers of GoogLeNet's
  first module (`inception3a`, read from torchvision's model).
* **Stacked 3×3 convolutions** (VGG, 2014): two 3×3 layers see what one 5×5 sees, three what one 7×7 sees, with
  fewer weights and more non-linearities; at the channel count and resolution of VGG16's third block (read from the
  model).

Weights and multiply-adds are counted on the meta device by `profiling.module_macs` (nothing allocated); the
receptive field of a stack of n k×k stride-1 convolutions is 1 + n(k − 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .lessons import Reading
from .profiling import module_macs

__all__ = ["Layer", "Design", "CountingLesson", "COUNTING", "BY_KEY", "reductions", "stacked"]


@dataclass(frozen=True)
class Layer:
    """One convolution or pooling of a design, counted on its own: what its drawing shows as a box."""

    kind: str  # "conv" or "pool" (the diagram's kinds)
    kernel: int
    cin: int
    cout: int
    params: int
    macs: int
    branch: int  # which parallel branch it is in (0 in a plain stack)
    sees: int  # receptive field of its output on the design's input, in pixels
    size: int  # its input's height and width


@dataclass(frozen=True)
class Design:
    """One design, counted: its weights, its multiply-adds on one input, what one output sees, what it gives,
    and its layers one by one (in branch order, input first), for its drawing."""

    name: str
    params: int
    macs: int
    receptive_field: int
    out_channels: int
    layers: tuple[Layer, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    def row(self) -> dict:
        return {
            "design": self.name,
            "weights": self.params,
            "MACs (M)": round(self.macs / 1e6, 1),
            "sees (px)": f"{self.receptive_field}×{self.receptive_field}",
            "out channels": self.out_channels,
        }


@dataclass(frozen=True)
class CountingLesson:
    key: str
    title: str
    summary: str
    text: str
    expect: str
    designs: Callable[[], list[Design]]
    reader: Callable[[list[Design]], Reading]

    def read(self) -> tuple[list[Design], Reading]:
        designs = self.designs()
        return designs, self.reader(designs)


def _counted(name: str, module: nn.Module, channels: int, size: int) -> Design:
    with torch.device("meta"):
        x = torch.empty(1, channels, size, size)
        out = module.to("meta")(x)
    params = sum(p.numel() for p in module.parameters())
    layers = _layers(module, x)
    field = max(layer.sees for layer in layers)  # what the widest branch sees
    return Design(name, params, module_macs(module, x), field, out.shape[1], layers)


def _layers(module: nn.Module, x: torch.Tensor) -> tuple[Layer, ...]:
    """Each convolution and pooling of `module` (an `_Branches` or one chain), fed what it is fed in the module."""
    branches = module.branches if isinstance(module, _Branches) else [module]
    out = []
    for b, branch in enumerate(branches):
        h, sees = x, 1
        for layer in branch if isinstance(branch, nn.Sequential) else [branch]:
            if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
                sees += k - 1  # stride 1 throughout: each k×k layer widens the view by k - 1
                params = sum(p.numel() for p in layer.parameters())
                cout = layer.out_channels if isinstance(layer, nn.Conv2d) else h.shape[1]
                kind = "conv" if isinstance(layer, nn.Conv2d) else "pool"
                out.append(Layer(kind, k, h.shape[1], cout, params, module_macs(layer, h), b, sees, h.shape[2]))
            h = layer(h)
    return tuple(out)


class _Branches(nn.Module):
    """Parallel branches whose outputs are concatenated along the channels (an Inception module)."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], 1)


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)


def reductions() -> list[Design]:
    """GoogLeNet's first Inception module with and without its 1×1 reductions (the paper's Figure 2, a and b)."""
    import torchvision

    with torch.device("meta"):
        m = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).inception3a
    cin = m.branch1.conv.in_channels
    c1, r3, c3 = m.branch1.conv.out_channels, m.branch2[0].conv.out_channels, m.branch2[1].conv.out_channels
    r5, c5, pp = m.branch3[0].conv.out_channels, m.branch3[1].conv.out_channels, m.branch4[1].conv.out_channels
    pool = nn.MaxPool2d(3, stride=1, padding=1)
    naive = _Branches(_conv(cin, c1, 1), _conv(cin, c3, 3), _conv(cin, c5, 5), pool)
    reduced = _Branches(
        _conv(cin, c1, 1),
        nn.Sequential(_conv(cin, r3, 1), _conv(r3, c3, 3)),
        nn.Sequential(_conv(cin, r5, 1), _conv(r5, c5, 5)),
        nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _conv(cin, pp, 1)),
    )
    return [
        _counted("naive module: 1×1, 3×3, 5×5 and pooling side by side", naive, cin, 28),
        _counted("with 1×1 reductions (GoogLeNet's inception3a)", reduced, cin, 28),
    ]


def stacked() -> list[Design]:
    """Stacks of 3×3 convolutions against one larger convolution that sees as much, at VGG16's third block."""
    import torchvision

    with torch.device("meta"):
        features = torchvision.models.vgg16(weights=None).features
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    c = convs[5].out_channels  # the third block: 256 channels, at 56×56 on a 224 px image
    size = 56
    rows = []
    for n, big in ((2, 5), (3, 7)):
        stack = nn.Sequential(*[layer for _ in range(n) for layer in (_conv(c, c, 3), nn.ReLU())])
        rows.append(_counted(f"{n} stacked 3×3 (VGG)", stack, c, size))
        rows.append(_counted(f"one {big}×{big}", nn.Sequential(_conv(c, c, big), nn.ReLU()), c, size))
    return rows


def _ratio(a: float, b: float) -> str:
    return f"{max(a, b) / max(min(a, b), 1):.1f}×"


def _read_reductions(designs: list[Design]) -> Reading:
    naive, reduced = designs
    showed = reduced.params < naive.params and reduced.macs < naive.macs
    return Reading(
        showed,
        f"Without reductions the module has {naive.params:,} weights and does {naive.macs / 1e6:,.0f} M "
        f"multiply-adds on a 28×28 input; with them {reduced.params:,} and {reduced.macs / 1e6:,.0f} M "
        f"(the naive module does {_ratio(naive.macs, reduced.macs)} as many), and it gives "
        f"{reduced.out_channels} channels instead of {naive.out_channels} (the naive pooling branch passes every "
        "input channel on, so the next module would grow again).",
    )


def _read_stacked(designs: list[Design]) -> Reading:
    pairs = [(designs[i], designs[i + 1]) for i in range(0, len(designs), 2)]
    showed = all(s.params < b.params and s.receptive_field == b.receptive_field for s, b in pairs)
    said = "; ".join(
        f"{s.name} see {s.receptive_field}×{s.receptive_field} px with {s.params:,} weights, {b.name} "
        f"{b.params:,} ({_ratio(b.params, s.params)} as many)"
        for s, b in pairs
    )
    width = designs[0].out_channels
    return Reading(showed, f"At {width} channels: {said}; the stacks also put a ReLU after every layer.")


COUNTING = [
    CountingLesson(
        "reductions",
        "GoogLeNet's 1×1 reductions",
        "An Inception module with and without its 1×1 convolutions: weights and multiply-adds, counted.",
        "**Why GoogLeNet has 1×1 convolutions.** An Inception module runs 1×1, 3×3 and 5×5 convolutions and a "
        "pooling side by side and stacks their outputs. Done naively, the 3×3 and 5×5 convolutions see all 192 "
        "input channels, and the pooling branch passes all 192 on. GoogLeNet first squeezes the input through "
        "cheap 1×1 convolutions (to 96 channels before the 3×3, to 16 before the 5×5) and adds one after the "
        "pooling. The channel numbers are those of its first module, read from torchvision's model; both "
        "versions here use a true 5×5.",
        "The reductions cut the module's multiply-adds by more than half and keep its output at 256 channels.",
        reductions,
        _read_reductions,
    ),
    CountingLesson(
        "stacked",
        "VGG's stacked 3×3 convolutions",
        "Two 3×3 layers see what one 5×5 sees, three what one 7×7 sees: with how many weights?",
        "**Why VGG uses only 3×3 convolutions.** A 3×3 convolution on top of another sees a 5×5 patch of the "
        "input; three of them see 7×7. VGG stacks them instead of using one large convolution: fewer weights "
        "for the same view, and a ReLU after each layer. Counted here at the width and resolution of VGG16's "
        "third block (256 channels at 56×56, read from the model).",
        "Two 3×3 layers have 28 % fewer weights than one 5×5; three have 45 % fewer than one 7×7.",
        stacked,
        _read_stacked,
    ),
]
BY_KEY = {lesson.key: lesson for lesson in COUNTING}
