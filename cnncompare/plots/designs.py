"""The counting lessons drawn: each design as its layers, side by side, from `counting.Design.to_dict()`.

* `reductions_figure`: an Inception module as its four branches, input on the left, concatenation on the right,
  naive above, with 1×1 reductions below; each box's fill is its multiply-adds, on one scale for both.
* `stacked_figure`: each design as its chain of convolutions (fill: weights, one scale), then one grid of input
  pixels with what a pixel of each layer's output sees (3×3, 5×5, 7×7).

Drawn with shapes and annotations on a y axis counted in pixels (so text bands never overlap, at any width) and an
x axis from 0 to 1 (so boxes shrink with a phone's screen); the bars and the grid are sized in pixels.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from .base import layout

__all__ = ["COLORS", "reductions_figure", "stacked_figure", "counting_figure"]

# diagram.KIND_COLORS' conv and pool (not imported: diagram imports plots, and plots stays free of torch)
COLORS = {"conv": "#86aee0", "pool": "#cfd6de"}
FIELD_COLORS = ("#2f6db3", "#e07b39", "#3a9a5b", "#8e5bb5")  # one per receptive field, smallest first
EMPTY, EDGE, WIRE, INK = "#f3f6fa", "#3b4450", "#9aa5b1", "#111"
TOP, BOTTOM = 32, 8  # margins: the figure's title sits in the top one
LINE = 16  # px per line of 12 px text
WRAP = 52  # characters per line of 12 px text that fit a phone's plot (about 310 px); 4 fewer in bold
NUMBER = {1: "one", 2: "two", 3: "three", 4: "four"}


def _macs(n: int) -> str:
    return f"{n / 1e6:,.0f} M" if n >= 1e7 else f"{n / 1e6:.1f} M"


class _Canvas:
    """Shapes, annotations and hover points, placed top-down: `y` is the next free pixel row of the plot."""

    def __init__(self):
        self.shapes: list[dict] = []
        self.notes: list[dict] = []
        self.hover = dict(x=[], y=[], text=[])
        self.y = 0

    def text(self, text: str, size: int = 12, bold: bool = False, color: str = INK, name: str = "title") -> None:
        """Left-aligned lines in a band of their own, wrapped to fit a phone."""
        wrap = WRAP - 4 if bold else WRAP
        if len(text) > wrap and ": " in text:  # a long name breaks after its colon rather than mid-phrase
            text = text.replace(": ", ":\n", 1)
        lines = [line for part in text.split("\n") for line in textwrap.wrap(part, wrap)]
        body = "<br>".join(f"<b>{line}</b>" if bold else line for line in lines)
        self.notes.append(
            dict(x=0, y=self.y, text=body, xanchor="left", yanchor="top", align="left", name=name)
            | dict(font=dict(size=size, color=color))
        )
        self.y += LINE * len(lines) + 2

    def box(self, x0: float, x1: float, y: float, h: float, kind: str, fill: float, label: str, hover: str) -> None:
        """A layer: its box, filled from the left by `fill` (0..1) of its width, its label, its hover text."""
        self.shapes.append(dict(type="rect", x0=x0, x1=x1, y0=y, y1=y + h, fillcolor=EMPTY, line=dict(width=0)))
        if fill > 0:
            xf = x0 + (x1 - x0) * min(fill, 1.0)
            self.shapes.append(
                dict(type="rect", x0=x0, x1=xf, y0=y, y1=y + h, fillcolor=COLORS[kind], line=dict(width=0))
            )
        self.shapes.append(
            dict(type="rect", x0=x0, x1=x1, y0=y, y1=y + h, line=dict(color=EDGE, width=1), name=f"box-{kind}")
        )
        mid = (x0 + x1) / 2
        self.notes.append(dict(x=mid, y=y + h / 2, text=label, name="box", font=dict(size=11, color=INK)))
        self.hover["x"].append(mid)
        self.hover["y"].append(y + h / 2)
        self.hover["text"].append(hover)

    def wire(self, x0: float, x1: float, y: float) -> None:
        self.shapes.append(dict(type="line", x0=x0, x1=x1, y0=y, y1=y, line=dict(color=WIRE, width=1.5)))

    def bar(self, anchor: float, y0: float, y1: float, label: str, name: str) -> None:
        """A thin upright bar 20 px wide at the left (anchor 0) or right (anchor 1) edge, its label turned."""
        px = (0, 20) if anchor == 0 else (-20, 0)
        self.shapes.append(
            dict(type="rect", xsizemode="pixel", xanchor=anchor, x0=px[0], x1=px[1], y0=y0, y1=y1, name=name)
            | dict(fillcolor="#e4e8ee", line=dict(color=EDGE, width=1))
        )
        self.notes.append(
            dict(x=anchor, xshift=sum(px) / 2, y=(y0 + y1) / 2, text=label, textangle=-90, name=name)
            | dict(font=dict(size=11, color=INK))
        )

    def figure(self, title: str) -> go.Figure:
        fig = go.Figure(
            go.Scatter(
                **self.hover,
                mode="markers",
                marker=dict(size=24, opacity=0),
                hoverinfo="text",
                hovertext=self.hover["text"],
                showlegend=False,
            )
        )
        plot_h = self.y + 4
        for note in self.notes:
            note.setdefault("showarrow", False)
        layout(fig, title, height=TOP + plot_h + BOTTOM, margin=dict(l=8, r=8, t=TOP, b=BOTTOM))
        fig.update_layout(shapes=self.shapes, annotations=self.notes, hovermode="closest")
        fig.update_layout(title=dict(font_size=14, yref="container", y=1, yanchor="top", pad=dict(t=8)))
        fig.update_layout(hoverlabel=dict(font=dict(size=12)), dragmode=False)
        # nothing to zoom or select: only "download as PNG" stays, clear of a phone's title
        fig.update_layout(modebar_remove=["autoscale", "hoverclosest", "hovercompare", "togglespikelines", "select"])
        fig.update_layout(modebar_remove=[*fig.layout.modebar.remove, "lasso", "pan", "zoom", "zoomin", "zoomout"])
        fig.update_xaxes(range=[0, 1], visible=False, fixedrange=True)
        fig.update_yaxes(range=[plot_h, 0], visible=False, fixedrange=True)  # one unit is one pixel, going down
        return fig


def _layer_text(layer: Mapping, cost: str) -> tuple[str, str]:
    k, cin, cout = layer["kernel"], layer["cin"], layer["cout"]
    if layer["kind"] == "pool":
        return (
            f"{k}×{k} max-pool, {cin}<br>{cost}",
            f"{k}×{k} max-pooling of {cin} channels: no weights, no multiply-adds",
        )
    head = f"{k}×{k}, {cin}→{cout}"
    hover = (
        f"{k}×{k} convolution, {cin} → {cout} channels at {layer['size']}×{layer['size']}<br>"
        f"{layer['params']:,} weights · {layer['macs']:,} multiply-adds<br>"
        f"one output pixel sees {layer['sees']}×{layer['sees']} input pixels"
    )
    return f"{head}<br>{cost}", hover


def reductions_figure(designs: Sequence[Mapping]) -> go.Figure:
    """Inception modules as their branches (1×1 | 3×3 | 5×5 | pool): a box per layer, filled by its multiply-adds
    (one scale for every box), one branch per row from the input (left) to the concatenation (right)."""
    c = _Canvas()
    c.text("Fill: each layer's multiply-adds (MACs), one scale", size=11, color="#56606b", name="legend")
    most = max(layer["macs"] for d in designs for layer in d["layers"]) or 1
    row, h = 34, 28
    slots = ((0.09, 0.475), (0.525, 0.91))  # a reduction (or the pooling before its 1×1), then the branch's layer
    for d in designs:
        c.y += 4
        c.text(d["name"], bold=True)
        c.text(f"{d['params']:,} weights · {_macs(d['macs'])} MACs · {d['out_channels']} channels out")
        branches = sorted({layer["branch"] for layer in d["layers"]})
        top = c.y
        for b in branches:
            chain = [layer for layer in d["layers"] if layer["branch"] == b]
            mid = c.y + row / 2
            c.wire(0, 1, mid)
            for layer, (x0, x1) in zip(chain, slots[len(slots) - len(chain) :]):  # one layer: the right slot
                cost = "no MACs" if layer["kind"] == "pool" else f"{_macs(layer['macs'])} MACs"
                label, hover = _layer_text(layer, cost)
                c.box(x0, x1, mid - h / 2, h, layer["kind"], layer["macs"] / most, label, hover)
            c.y += row
        first = d["layers"][0]
        c.bar(0, top + 2, c.y - 2, f"input: {first['cin']} ch, {first['size']}×{first['size']}", "input")
        c.bar(1, top + 2, c.y - 2, f"concat: {d['out_channels']} ch", "output")
    return c.figure("1×1 reductions in an Inception module")


def _field_grid(c: _Canvas, designs: Sequence[Mapping]) -> None:
    """A grid of input pixels with a square for each receptive field the layers reach, and what reaches it."""
    fields = sorted({layer["sees"] for d in designs for layer in d["layers"]})
    side, cell = max(fields), 12
    c.y += 6
    c.text("What one output pixel (dark) sees of the input", name="field-title")
    top = c.y + 2
    for i in range(side):
        for j in range(side):
            dark = i == j == side // 2
            c.shapes.append(
                dict(type="rect", xsizemode="pixel", xanchor=0, x0=j * cell, x1=(j + 1) * cell)
                | dict(y0=top + i * cell, y1=top + (i + 1) * cell, fillcolor=EDGE if dark else "#ffffff")
                | dict(line=dict(color="#c5ccd6", width=1))
            )
    for n, f in enumerate(fields):
        color = FIELD_COLORS[n % len(FIELD_COLORS)]
        off = (side - f) // 2 * cell
        c.shapes.append(
            dict(type="rect", xsizemode="pixel", xanchor=0, x0=off + 1, x1=off + f * cell - 1, name=f"field-{f}")
            | dict(y0=top + off + 1, y1=top + off + f * cell - 1, line=dict(color=color, width=2.5))
        )
        y = top + 4 + n * 20
        c.shapes.append(
            dict(type="rect", xsizemode="pixel", xanchor=0, x0=side * cell + 14, x1=side * cell + 26)
            | dict(y0=y, y1=y + 12, line=dict(color=color, width=2.5))
        )
        c.notes.append(
            dict(x=0, xshift=side * cell + 32, y=y + 6, xanchor="left", text=_field_text(f, designs), name="field")
            | dict(font=dict(size=11, color=INK))
        )
    c.y = top + side * cell + 2


def _field_text(f: int, designs: Sequence[Mapping]) -> str:
    """Which layers see f×f: the stacks' k-th layer (how many of them), and the single layers that see it alone."""
    stacked = {
        i + 1 for d in designs if len(d["layers"]) > 1 for i, layer in enumerate(d["layers"]) if layer["sees"] == f
    }
    k = min(layer["kernel"] for d in designs for layer in d["layers"])
    said = [f"{NUMBER.get(n, n)} {k}×{k} layer" + ("s" if n > 1 else "") for n in sorted(stacked)]
    said += [f"one {f}×{f}" for d in designs if len(d["layers"]) == 1 and d["layers"][0]["kernel"] == f != k]
    return f"{f}×{f}: " + ", or ".join(said)


def stacked_figure(designs: Sequence[Mapping]) -> go.Figure:
    """Each design a row of its convolutions (fill: weights, one scale for every box), then the receptive fields."""
    c = _Canvas()
    c.text("Fill: each layer's weights, one scale", size=11, color="#56606b", name="legend")
    most = max(layer["params"] for d in designs for layer in d["layers"]) or 1
    n = max(len(d["layers"]) for d in designs)
    gap, h = 0.03, 34
    width = (1 - gap * (n - 1)) / n
    for i, d in enumerate(designs):
        c.y += 10 if i and len(d["layers"]) > 1 else 2  # a little air before each pair (a stack, then its rival)
        rf = d["receptive_field"]
        c.text(f"{d['name']}: {d['params']:,} weights, sees {rf}×{rf}", bold=True)
        mid = c.y + h / 2
        if len(d["layers"]) > 1:
            c.wire(width / 2, (len(d["layers"]) - 1) * (width + gap) + width / 2, mid)
        for j, layer in enumerate(d["layers"]):
            x0 = j * (width + gap)
            label, hover = _layer_text(layer, f"{layer['params']:,} weights")
            c.box(x0, x0 + width, c.y, h, layer["kind"], layer["params"] / most, label, hover)
        c.y += h + 2
    _field_grid(c, designs)
    return c.figure("Stacked 3×3 layers vs one 5×5 or 7×7")


FIGURES = {"reductions": reductions_figure, "stacked": stacked_figure}


def counting_figure(key: str, designs: Sequence[Mapping]) -> go.Figure:
    """The drawing of counting lesson `key` from its designs (`Design.to_dict()` each)."""
    return FIGURES[key](designs)
