"""Figures of the Architectures tab: accuracy vs MACs, latency, parameters per block, the two rankings."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .base import color, fmt_count, layout, message_figure, num, point_labels

__all__ = ["without_reference", "accuracy_vs_macs", "latency_bars", "params_per_stage", "ranking", "ranking_note"]


def without_reference(rows: Iterable[Mapping]) -> list[str]:
    """Names of the models that have no published ImageNet accuracy (not plotted at 0)."""
    return [r["name"] for r in rows if num(r.get("ref_top1")) is None]


def accuracy_vs_macs(rows: Sequence[Mapping]) -> go.Figure:
    """Published ImageNet top-1 against MACs per image; bubble area proportional to parameters.

    rows: dicts with name, macs, params, ref_top1 (percent or None), optional family/input_size.
    Models without a reference accuracy are left out and named under the plot.
    """
    title = "Published ImageNet top-1 vs. cost (bubble area = parameters)"
    plotted = [r for r in rows if num(r.get("ref_top1")) is not None and num(r.get("macs"))]
    missing = without_reference(rows)
    if not plotted:
        text = "No model here has a published ImageNet accuracy."
        if missing:
            text += "<br>Not plotted: " + ", ".join(missing)
        return message_figure(text, title)
    pmax = max(num(r.get("params")) or 1 for r in plotted)
    fig = go.Figure()
    for i, r in enumerate(plotted):
        params = num(r.get("params")) or 0
        gmacs = num(r["macs"]) / 1e9
        size_px = 14 + 46 * math.sqrt(params / pmax)  # diameter ~ sqrt(params): area ~ params
        fig.add_trace(
            go.Scatter(
                x=[gmacs],
                y=[num(r["ref_top1"])],
                mode="markers",
                name=r["name"],
                text=[r["name"]],  # the label, placed beside the bubble below (`point_labels`)
                showlegend=False,
                marker=dict(size=size_px, color=color(i), opacity=0.75, line=dict(width=1, color="#333")),
                hovertemplate=(
                    f"<b>{r['name']}</b><br>MACs: %{{x:.2f}} G<br>top-1: %{{y:.2f}} %<br>"
                    f"params: {fmt_count(params)}<extra></extra>"
                ),
            )
        )
    sizes = {r.get("input_size") for r in plotted} - {None}
    if len(sizes) == 1:
        xlab = f"MACs per image (G, log scale), at {next(iter(sizes))} px"
    else:  # e.g. Inception v3 at its native 299 px beside 224-px models: said on the axis and the label
        xlab = "MACs per image (G, log scale), each model at the size in its label"
        for trace, r in zip(fig.data, plotted):
            trace.text = [f"{r['name']} ({r.get('input_size')} px)"]
    xs = [num(r["macs"]) / 1e9 for r in plotted]
    lo, hi = math.log10(min(xs)) - 0.25, math.log10(max(xs)) + 0.25
    ticks = [
        t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if lo <= math.log10(t) <= hi
    ]
    fig.update_xaxes(title=xlab, type="log", range=[lo, hi], tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    ys = [num(r["ref_top1"]) for r in plotted]
    y_range = (min(ys) - 4, max(ys) + 5)
    fig.update_yaxes(title="ImageNet top-1 (%), published", range=list(y_range))
    radii = [t.marker.size / 2 for t in fig.data]
    for note in point_labels(xs, ys, [t.text[0] for t in fig.data], radii, (lo, hi), y_range, log_x=True):
        fig.add_annotation(**note)
    if missing:
        fig.add_annotation(
            text="Not plotted (no published ImageNet accuracy): " + ", ".join(missing),
            x=0,
            y=-0.2,
            xref="paper",
            yref="paper",
            showarrow=False,
            xanchor="left",
            font=dict(size=12, color="#555"),
        )
        return layout(fig, title, margin=dict(l=60, r=20, t=60, b=90))
    return layout(fig, title)


def latency_bars(rows: Sequence[Mapping], device: str = "") -> go.Figure:
    """Batch-1 latency per model: bar = median (p50), whisker up to p90.

    rows: dicts with name, latency_p50, latency_p90 (ms or None).
    """
    title = "Latency, batch 1" + (f", on {device}" if device else "") + " (bar: median, whisker: p90)"
    measured = [r for r in rows if num(r.get("latency_p50")) is not None]
    if not measured:
        return message_figure("Latency not measured yet:<br>press Compare with “measure latency” ticked.", title)
    p50 = [num(r["latency_p50"]) for r in measured]
    p90 = [num(r.get("latency_p90")) or v for r, v in zip(measured, p50)]
    names = [r["name"] for r in measured]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=p50,
            marker_color=[color(i) for i in range(len(measured))],
            error_y=dict(
                type="data",
                symmetric=False,
                array=[max(0.0, b - a) for a, b in zip(p50, p90)],
                arrayminus=[0] * len(p50),
                color="#333",
            ),
            customdata=p90,
            hovertemplate="<b>%{x}</b><br>p50: %{y:.1f} ms<br>p90: %{customdata:.1f} ms<extra></extra>",
        )
    )
    # the median under each name, so the bar's value never collides with its whisker
    fig.update_xaxes(tickvals=names, ticktext=[f"{n}<br><b>{v:.1f} ms</b>" for n, v in zip(names, p50)])
    fig.update_yaxes(title="milliseconds per image", rangemode="tozero")
    return layout(fig, title, showlegend=False)


BLOCK_COLORS = {"stem": "#9e9e9e", "pre-logits": "#ff9f43", "head": "#e4572e"}
STAGE_COLORS = ["#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c", "#08306b"]


def _block_order(names: Iterable[str]) -> list[str]:
    def key(n: str):
        if n == "stem":
            return (0, 0)
        if n.startswith("stage"):
            return (1, int(n[5:]) if n[5:].isdigit() else 99)
        return (2, 0) if n == "pre-logits" else (3, 0)

    return sorted(set(names), key=key)


def params_per_stage(blocks: Mapping[str, Sequence[Mapping]]) -> go.Figure:
    """Stacked bars: each model's parameters split by block (stem, stages, pre-logits, head).

    blocks: model name -> list of block dicts (name, params, ...), as `models.blocks(...)` gives.
    """
    title = "Where the parameters are: millions per block"
    blocks = {k: v for k, v in blocks.items() if v}
    if not blocks:
        return message_figure("No block lists yet.", title)
    models = list(blocks)
    fig = go.Figure()
    for name in _block_order(b["name"] for bl in blocks.values() for b in bl):
        ys = []
        for m in models:
            ys.append(sum((num(b.get("params")) or 0) for b in blocks[m] if b["name"] == name) / 1e6)
        if name in BLOCK_COLORS:
            col = BLOCK_COLORS[name]
        else:
            k = int(name[5:]) if name[5:].isdigit() else 1
            col = STAGE_COLORS[min(k - 1, len(STAGE_COLORS) - 1)]
        fig.add_trace(
            go.Bar(
                x=models,
                y=ys,
                name=name,
                marker_color=col,
                hovertemplate=f"<b>%{{x}}</b><br>{name}: %{{y:.2f}} M<extra></extra>",
            )
        )
    fig.update_layout(barmode="stack", legend=dict(orientation="h", y=-0.18, x=0))
    fig.update_yaxes(title="parameters (millions)")
    return layout(fig, title, margin=dict(l=60, r=20, t=60, b=90))


def _orders(rows: Sequence[Mapping]) -> tuple[list[Mapping], list[Mapping]]:
    with_macs = [r for r in rows if num(r.get("macs"))]
    timed = [r for r in with_macs if num(r.get("latency_p50")) is not None]
    return (
        sorted(with_macs, key=lambda r: num(r["macs"])),
        sorted(timed, key=lambda r: num(r["latency_p50"])),
    )


def ranking(rows: Sequence[Mapping], device: str = "") -> go.Figure:
    """The models ranked by MACs and by measured batch-1 latency, two bar panels side by side.

    Each model keeps its colour in both panels (cheapest at the top), so a model that moves between
    the two orders stands out. rows: dicts with name, macs, latency_p50 (ms or None).
    """
    title = "Ranked by work (MACs) and by measured latency" + (f" on {device}" if device else "")
    by_macs, by_latency = _orders(rows)
    if not by_macs:
        return message_figure("Nothing to rank yet.", title)
    colours = {r["name"]: color(i) for i, r in enumerate(rows)}
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("MACs per image (G)", "latency, batch 1 (ms)"),
        horizontal_spacing=0.22,
    )
    panels = [(by_macs, lambda r: num(r["macs"]) / 1e9, "%{x:.2f} G", 1)]
    if by_latency:
        panels.append((by_latency, lambda r: num(r["latency_p50"]), "%{x:.1f} ms", 2))
    for ordered, value, fmt, col in panels:
        xs = [value(r) for r in ordered]
        fig.add_trace(
            go.Bar(
                orientation="h",
                y=[f"{i + 1}. {r['name']}" for i, r in enumerate(ordered)],
                x=xs,
                marker_color=[colours[r["name"]] for r in ordered],
                text=[fmt.replace("%{x:", "{:").format(v) for v in xs],
                textposition="outside",
                cliponaxis=False,
                showlegend=False,
                hovertemplate="<b>%{y}</b>: " + fmt + "<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=col, tickfont=dict(size=12), ticksuffix="  ")
        fig.update_xaxes(range=[0, max(xs) * 1.3], showticklabels=False, showgrid=False, row=1, col=col)
    if not by_latency:
        fig.add_annotation(
            text="Latency not measured yet:<br>press Compare with<br>“measure latency” ticked.",
            x=0.9,
            y=0.5,
            xref="paper",
            yref="paper",
            showarrow=False,
            font=dict(size=13, color="#555"),
        )
        fig.update_xaxes(visible=False, row=1, col=2)
        fig.update_yaxes(visible=False, row=1, col=2)
    height = max(260, 140 + 34 * len(by_macs))
    return layout(fig, title, height=height, margin=dict(l=20, r=20, t=80, b=30))


def ranking_note(rows: Sequence[Mapping]) -> str:
    """One or two sentences on why the MACs order and the latency order differ (or that they agree), read from
    the numbers measured here: each model's work rate (G multiply-adds per second) and, with `params`, its
    multiply-adds per weight. At batch 1 a layer that does few multiply-adds per weight it reads (a fully
    connected layer does one) waits for memory; large convolutions reuse each weight thousands of times and keep
    the cores busy. The sentence names what was measured, not a rule."""
    by_macs, by_latency = _orders(rows)
    if len(by_latency) < 2:
        return "Measure latency to compare the two orders: work (MACs) and time do not rank models the same way."
    macs_rank = [r["name"] for r in by_macs if r in by_latency]
    time_rank = [r["name"] for r in by_latency]
    rate = {r["name"]: num(r["macs"]) / 1e9 / (num(r["latency_p50"]) / 1e3) for r in by_latency}
    reuse = {r["name"]: num(r["macs"]) / num(r["params"]) for r in by_latency if num(r.get("params"))}
    fast = max(rate, key=rate.get)
    slow = min(rate, key=rate.get)
    text = (
        f"Measured here: {fast} gets through {rate[fast]:,.0f} G multiply-adds per second, "
        f"{slow} only {rate[slow]:,.0f}."
    )
    if slow in reuse and fast in reuse and reuse[slow] < reuse[fast]:
        text += (
            f" {slow} does {reuse[slow]:,.0f} multiply-adds per weight, {fast} {reuse[fast]:,.0f}: at batch 1, "
            "layers that use each weight only a few times (a fully connected layer uses it once) wait for the "
            "weights to arrive from memory, while large convolutions reuse each weight across the whole image and "
            "keep the cores busy."
        )
    else:
        text += (
            " Their work per weight does not explain it here: the number and size of layers (each layer moves its "
            "activations through memory and starts its own kernels) matter as well."
        )
    if macs_rank == time_rank:
        return "Here both orders agree. " + text
    moved = [n for n in time_rank if time_rank.index(n) != macs_rank.index(n)]
    return f"The orders differ ({', '.join(moved)} change places). " + text
