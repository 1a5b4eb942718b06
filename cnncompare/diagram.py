"""Architecture diagrams drawn from the models themselves, never by hand.

`units(name, size, policy)` lists a network's layers in execution order as *units*: a
convolution, a pooling layer or a fully connected layer, or a whole compound unit that is
not opened up (an Inception module, a residual block, a dense block). The list comes from a
meta-device model (no weights, no arithmetic) and one forward pass with hooks, like
`models.blocks`, so any timm CNN gets a diagram too. Each unit knows its output shape, its
parameters, its layer group (stem, stageN, pre-logits, head) and whether a freeze policy
freezes it.

`figure(names, size, policy)` draws several models side by side at one scale (one row per
unit, the input at the top); `table(name, size, policy)` is the same list as plain rows for
the command line.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass

from torch import nn

from . import models
from .models import catalog

__all__ = ["Unit", "KINDS", "KIND_COLORS", "units", "table", "figure"]

KINDS = ("conv", "pool", "fc", "inception", "residual", "other")
KIND_COLORS = {  # mid tones: black labels stay readable on every one, also on a projector
    "conv": "#86aee0",
    "pool": "#cfd6de",
    "fc": "#f08a87",
    "inception": "#8cc97e",
    "residual": "#f7b267",
    "other": "#c9a6d4",
}
KIND_NAMES = {
    "conv": "convolution",
    "pool": "pooling",
    "fc": "fully connected",
    "inception": "Inception module",
    "residual": "residual block",
    "other": "other block",
}

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_INCEPTION_RE = re.compile(r"^Inception[A-E]?$")
_RESIDUAL_NAMES = ("BasicBlock", "Bottleneck", "InvertedResidual", "DepthwiseSeparableConv")


@dataclass
class Unit:
    """One box of the diagram."""

    name: str  # module path, e.g. "layer1.0" or "features.0"
    kind: str  # one of KINDS
    label: str  # short text, e.g. "conv 3×3, 64", "max-pool 3×3 /2", "fc 4096", "inception 3a"
    out_shape: tuple[int, ...] | None  # (C, H, W) or (features,)
    params: int
    group: str  # the `models.blocks` group: stem, stage1.., pre-logits, head
    frozen: bool  # frozen under the policy (a parameter-free unit follows its group)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- what a module is


def _compound_kind(module: nn.Module) -> str | None:
    """The kind of a module drawn as one box without opening it, or None to look inside."""
    cls = type(module).__name__
    if _INCEPTION_RE.match(cls):
        return "inception"
    if cls in _RESIDUAL_NAMES or cls.endswith("Bottleneck") or (cls.endswith("Block") and cls != "DenseBlock"):
        return "residual"
    if cls in ("DenseBlock", "DenseTransition", "SqueezeExcite"):
        return "other"
    if cls == "SelectAdaptivePool2d":  # timm's global pool (pool + flatten)
        return "pool"
    return None


def _leaf_kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, _POOLS):
        return "pool"
    if isinstance(module, nn.Linear):
        return "fc"
    return None  # norms, activations, dropout, flatten, identity: not drawn


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _conv_label(m: nn.Conv2d, dense: bool) -> str:
    kh, kw = _pair(m.kernel_size)
    stride = _pair(m.stride)[0]
    if dense:  # timm's VGG keeps fc6/fc7 as convolutions: a 7×7 conv over a 7×7 map is a dense layer
        return f"fc {m.out_channels} (as {kh}×{kw} conv)"
    kind = "dw conv" if m.groups > 1 and m.groups == m.in_channels else "conv"
    return f"{kind} {kh}×{kw}{f' /{stride}' if stride > 1 else ''}, {m.out_channels}"


def _pool_label(m: nn.Module, out_shape) -> str:
    cls = type(m).__name__
    if cls == "SelectAdaptivePool2d" or isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        kind = "max" if "max" in str(getattr(m, "pool_type", "")) or isinstance(m, nn.AdaptiveMaxPool2d) else "avg"
        if out_shape is not None and (len(out_shape) == 1 or out_shape[1:] == (1, 1)):
            return f"global {kind}-pool"
        return f"{kind}-pool → {out_shape[1]}×{out_shape[2]}" if out_shape else f"{kind}-pool"
    kh, _ = _pair(m.kernel_size)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size)[0]
    kind = "max" if isinstance(m, nn.MaxPool2d) else "avg"
    return f"{kind}-pool {kh}×{kh}{f' /{stride}' if stride > 1 else ''}"


def _compound_label(name: str, module: nn.Module, kind: str, downsamples: bool) -> str:
    cls = type(module).__name__
    leaf = name.rsplit(".", 1)[-1]
    if kind == "inception":
        if leaf.startswith("inception"):  # torchvision GoogLeNet: inception3a
            return f"inception {leaf[len('inception') :]}"
        tag = leaf.split("_", 1)[-1]  # timm Inception v3: Mixed_5b, class InceptionA
        return f"inception {tag} ({cls[-1]})" if cls != "Inception" else f"inception {tag}"
    words = {
        "BasicBlock": "basic block",
        "Bottleneck": "bottleneck",
        "InvertedResidual": "inverted residual",
        "DepthwiseSeparableConv": "dw-separable",
        "ConvNeXtBlock": "ConvNeXt block",
        "DenseBlock": "dense block",
        "DenseTransition": "transition",
        "SqueezeExcite": "squeeze-excite",
    }
    text = words.get(cls) or re.sub(r"(?<=[a-z])(?=[A-Z])", " ", cls).lower()
    if cls == "DenseBlock":
        text += f" ×{len(list(module.children()))}"
    return text + (" /2" if downsamples else "")


# --------------------------------------------------------------------------- units


def _collect(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, kind) of every drawn module, parents before the modules they hide."""
    out: list[tuple[str, nn.Module, str]] = []

    def visit(name: str, module: nn.Module) -> None:
        kind = _compound_kind(module) if name else None
        if kind is not None:
            out.append((name, module, kind))
            return
        children = list(module.named_children())
        if not children:
            kind = _leaf_kind(module)
            if kind is not None:
                out.append((name, module, kind))
            return
        for child, sub in children:
            visit(f"{name}.{child}" if name else child, sub)

    visit("", model)
    return out


def _policy_text(policy: str | models.FreezePolicy | None) -> str:
    return str(models.FreezePolicy.parse(str(policy or "none")))


def _size(name: str, size: int | None) -> int:
    return int(size) if size else catalog.get(name).default_size


@functools.lru_cache(maxsize=64)
def _units(name: str, size: int, policy: str) -> tuple[Unit, ...]:
    model = models.build(name, device="meta")
    frozen = set(models.freeze(model, policy, size)) if policy != "none" else set()
    groups = models.blocks(model, size)
    group_of = {m: g.name for g in groups for m in g.modules}
    frozen_groups = {g.name for g in groups if g.frozen}
    done, shapes = models.trace(model, size)
    pmods = models.param_modules(model)
    drawn = [(n, m, k) for n, m, k in _collect(model) if n in done]
    drawn.sort(key=lambda t: done[t[0]])
    head = tuple(model.cnncompare.head_modules)
    pre_logits = {m for g in groups if g.kind == "pre-logits" for m in g.modules}
    out: list[Unit] = []
    prev_hw: tuple[int, ...] | None = None
    for n, module, kind in drawn:
        own = [p for p in pmods if p == n or p.startswith(n + ".")]
        params = sum(models.own_numel(pmods[p]) for p in own)
        shape = shapes.get(n)
        group = next((group_of[p] for p in own if p in group_of), None)
        dense = shape is not None and len(shape) == 3 and shape[1:] == (1, 1)
        if kind == "conv" and dense and (n in pre_logits or any(n == h or n.startswith(h + ".") for h in head)):
            kind_, label = "fc", _conv_label(module, dense=True)
        elif kind == "conv":
            kind_, label = kind, _conv_label(module, dense=False)
        elif kind == "pool":
            kind_, label = kind, _pool_label(module, shape)
        elif kind == "fc":
            kind_, label = kind, f"fc {module.out_features}"
        else:
            hw = shape[1:] if shape is not None and len(shape) == 3 else None
            down = prev_hw is not None and hw is not None and hw[0] < prev_hw[0]
            kind_, label = kind, _compound_label(n, module, kind, down)
        if shape is not None and len(shape) == 3:
            prev_hw = shape[1:]
        is_frozen = bool(own) and params > 0 and all(p in frozen for p in own if models.own_numel(pmods[p]))
        out.append(Unit(n, kind_, label, shape, params, group or "", is_frozen))
    # parameter-free units (pooling) belong to the group of the unit before them (the first: the one after)
    for i, u in enumerate(out):
        if not u.group:
            before = next((v.group for v in reversed(out[:i]) if v.group), None)
            after = next((v.group for v in out[i + 1 :] if v.group), "")
            u.group = before or after
            u.frozen = u.group in frozen_groups
    return tuple(out)


def units(name: str, size: int | None = None, policy: str = "none") -> list[Unit]:
    """The model's units in execution order, built from the model (meta device, one hooked forward pass).

    Args:
        name: a catalog or timm model name.
        size: input side in pixels (default: the model's own, e.g. 299 for Inception v3).
        policy: freeze policy (none | head | stages:K | layers:N) deciding each unit's `frozen`.

    Returns:
        A fresh list of `Unit` (conv, pool, fc leaves; Inception modules and residual blocks whole).

    Raises:
        CNNCompareError: an unknown model, an input size it cannot take, a bad or too deep policy.
    """
    info = catalog.get(name)
    size = _size(info.name, size)
    models.check_input_size(info.name, size)
    return [Unit(**u.to_dict()) for u in _units(info.name, size, _policy_text(policy))]


def _shape_text(shape) -> str:
    return "×".join(map(str, shape)) if shape else "–"


def _count(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def table(name: str, size: int | None = None, policy: str = "none") -> list[dict]:
    """The diagram as rows for a text table: #, unit, kind, group, output, params, state, layer."""
    return [
        {
            "#": i,
            "unit": u.label,
            "kind": u.kind,
            "group": u.group,
            "output": _shape_text(u.out_shape),
            "params": u.params,
            "state": "frozen" if u.frozen else ("trains" if u.params else ""),
            "layer": u.name,
        }
        for i, u in enumerate(units(name, size, policy), 1)
    ]


# --------------------------------------------------------------------------- figure

ROW_PX = 24  # one unit per row: 24 px keeps an 11 px label readable on a projector
BAR_LEFT, BAR_RIGHT = -0.30, 0.46  # a unit's box inside its model's column (the group label sits left of it)
FROZEN_COLOR = "#9e9e9e"


def _light(hex_color: str, mix: float = 0.55) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    r, g, b = (round(c + (255 - c) * mix) for c in (r, g, b))
    return f"#{r:02x}{g:02x}{b:02x}"


def figure(names: list[str] | tuple[str, ...], size: int | None = None, policy: str = "none"):
    """Several models side by side at one scale: one row per unit, input at the top, coloured by kind.

    Frozen units are hatched and pale (legend: "frozen (policy)"); shaded bands and labels mark the
    layer groups; hovering a box shows its module name, output shape and parameters. Cached by its
    arguments (a fresh copy is returned each call).

    Args:
        names: catalog or timm model names, drawn left to right.
        size: input side in pixels for every model (None: each model's own, e.g. 299 for Inception v3).
        policy: freeze policy applied to every model (none | head | stages:K | layers:N).

    Returns:
        A plotly Figure.

    Raises:
        CNNCompareError: an unknown model, a size it cannot take, or a bad policy.
    """
    import plotly.graph_objects as go

    key = tuple(catalog.get(n).name for n in names)
    return go.Figure(json.loads(_figure_json(key, int(size) if size else 0, _policy_text(policy))))


@functools.lru_cache(maxsize=32)
def _figure_json(names: tuple[str, ...], size: int, policy: str) -> str:
    import plotly.graph_objects as go

    from .plots import message_figure

    if not names:
        return message_figure("Choose models to see their diagrams.").to_json()
    per_model = {n: units(n, size or None, policy) for n in names}
    sizes = {n: size or catalog.get(n).default_size for n in names}
    fig = go.Figure()
    shapes, notes = [], []
    points: dict[str, dict[str, list]] = {k: {f: [] for f in "ybxtcph"} for k in KINDS}
    for c, name in enumerate(names):
        _group_bands(name, c, per_model[name], shapes, notes)
        _unit_points(name, c, per_model[name], points)
    _add_traces(fig, points, policy)
    _lay_out(fig, names, per_model, sizes, shapes, notes)
    for s in fig.layout.shapes:
        s.name = None
    return fig.to_json()


def _group_bands(name: str, c: int, us, shapes: list, notes: list) -> None:
    """Group bands of column `c`, alternately shaded, with the group's name at the left of the column."""
    start = 0
    for i in range(1, len(us) + 1):
        if i == len(us) or us[i].group != us[start].group:
            band = len([s for s in shapes if s.get("name") == name]) % 2
            shapes.append(
                dict(
                    type="rect",
                    x0=c - 0.5 + 0.02,
                    x1=c + 0.5 - 0.02,
                    y0=start - 0.5,
                    y1=i - 0.5,
                    fillcolor="#eef1f5" if band == 0 else "#ffffff",
                    line=dict(color="#c5ccd6", width=1),
                    layer="below",
                    name=name,
                )
            )
            notes.append(
                dict(
                    x=c - 0.47,
                    y=start - 0.45,
                    text=us[start].group or "",
                    showarrow=False,
                    xanchor="left",
                    yanchor="top",
                    font=dict(size=10, color="#56606b"),
                )
            )
            start = i


def _unit_points(name: str, c: int, us, points: dict) -> None:
    """One box per unit of column `c`, gathered by kind (one trace per kind)."""
    for i, u in enumerate(us):
        p = points[u.kind]
        p["y"].append(i)
        p["b"].append(c + BAR_LEFT)
        p["x"].append(BAR_RIGHT - BAR_LEFT)
        p["t"].append(u.label)
        p["c"].append(_light(KIND_COLORS[u.kind]) if u.frozen else KIND_COLORS[u.kind])
        p["p"].append("/" if u.frozen else "")
        p["h"].append(
            f"<b>{name}</b> · {u.label}<br>layer: {u.name}<br>output: {_shape_text(u.out_shape)}"
            f"<br>params: {_count(u.params)}<br>group: {u.group}" + ("<br><b>frozen</b>" if u.frozen else "")
        )


def _add_traces(fig, points: dict, policy: str) -> None:
    import plotly.graph_objects as go

    for kind in KINDS:
        p = points[kind]
        if not p["y"]:
            continue
        fig.add_trace(
            go.Bar(
                orientation="h",
                y=p["y"],
                x=p["x"],
                base=p["b"],
                width=0.82,
                text=p["t"],
                textposition="inside",
                insidetextanchor="middle",
                textfont=dict(size=11, color="#111"),
                marker=dict(
                    color=p["c"],
                    line=dict(width=0.6, color="#3b4450"),
                    pattern=dict(shape=p["p"], fgcolor="#555", size=6, solidity=0.15),
                ),
                name=KIND_NAMES[kind],
                legendgroup=kind,
                showlegend=False,
                hovertext=p["h"],
                hoverinfo="text",
                cliponaxis=False,
            )
        )
        fig.add_trace(  # the legend's swatch: solid, whatever the first box of this kind looks like
            go.Bar(
                orientation="h",
                y=[None],
                x=[None],
                name=KIND_NAMES[kind],
                legendgroup=kind,
                marker=dict(color=KIND_COLORS[kind], line=dict(width=0.6, color="#3b4450")),
            )
        )
    if policy != "none":
        fig.add_trace(
            go.Bar(
                orientation="h",
                y=[None],
                x=[None],
                name=f"frozen ({policy})",
                marker=dict(color=_light(FROZEN_COLOR), pattern=dict(shape="/", fgcolor="#555", size=6)),
            )
        )


def _lay_out(fig, names, per_model: dict, sizes: dict, shapes: list, notes: list) -> None:
    from .plots import FONT

    depth = max(len(u) for u in per_model.values())
    ticks = []
    for name in names:
        us = per_model[name]
        params = sum(u.params for u in us)
        ticks.append(f"<b>{name}</b><br>{len(us)} units · {params / 1e6:.1f} M params · {sizes[name]} px")
    fig.update_xaxes(
        range=[-0.5, len(names) - 0.5],
        tickvals=list(range(len(names))),
        ticktext=ticks,
        side="top",
        showgrid=False,
        zeroline=False,
        fixedrange=True,
        tickfont=dict(size=12),
    )
    fig.update_yaxes(range=[depth - 0.5, -0.5], showticklabels=False, showgrid=False, zeroline=False, fixedrange=True)
    same = len(set(sizes.values())) == 1
    at = f"at {next(iter(sizes.values()))} px" if same else "each at its native size"
    title = f"Architectures, one row per unit, input at the top ({at})"
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)),
        barmode="overlay",
        bargap=0,
        template="plotly_white",
        font=FONT,
        height=150 + ROW_PX * depth,
        margin=dict(l=10, r=10, t=110, b=50),
        shapes=shapes,
        annotations=notes,
        legend=dict(orientation="h", x=0, y=-0.01, yanchor="top", font=dict(size=12)),
        uniformtext=dict(minsize=9, mode="show"),
        hoverlabel=dict(font=dict(size=12)),
    )
