"""Plotly figures for cnncompare, as pure functions of plain data.

Every function takes lists/dicts (what `Profile.to_dict()`, `Block.to_dict()` and
`compare.table_rows()` give, or the app's own rows) and returns a `plotly.graph_objects.Figure`.
Nothing here imports gradio or torch, so the same figures work in a notebook or a script.

When there is nothing to draw, a figure with a short message is returned instead of an
empty pair of axes, so a page never shows a blank plot without saying why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

PALETTE = qualitative.D3 + qualitative.Set2
FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=13)
HEIGHT = 400


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _layout(fig: go.Figure, title: str, height: int = HEIGHT, margin: dict | None = None, **kw) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)),
        height=height,
        template="plotly_white",
        font=FONT,
        margin=margin or dict(l=60, r=20, t=60, b=60),
        **kw,
    )
    return fig


def message_figure(text: str, title: str = "", height: int = 260) -> go.Figure:
    """A figure that only says `text` (used where there is nothing to plot yet)."""
    fig = go.Figure()
    fig.add_annotation(
        text=text,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font=dict(size=14, color="#555"),
        align="center",
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=height)


def _num(x) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


# --------------------------------------------------------------------------- architectures


def without_reference(rows: Iterable[Mapping]) -> list[str]:
    """Names of the models that have no published ImageNet accuracy (not plotted at 0)."""
    return [r["name"] for r in rows if _num(r.get("ref_top1")) is None]


def accuracy_vs_macs(rows: Sequence[Mapping]) -> go.Figure:
    """Published ImageNet top-1 against MACs per image; bubble area proportional to parameters.

    rows: dicts with name, macs, params, ref_top1 (percent or None), optional family/input_size.
    Models without a reference accuracy are left out and named under the plot.
    """
    title = "Published ImageNet top-1 vs. cost (bubble area = parameters)"
    plotted = [r for r in rows if _num(r.get("ref_top1")) is not None and _num(r.get("macs"))]
    missing = without_reference(rows)
    if not plotted:
        text = "No model here has a published ImageNet accuracy."
        if missing:
            text += "<br>Not plotted: " + ", ".join(missing)
        return message_figure(text, title)
    pmax = max(_num(r.get("params")) or 1 for r in plotted)
    fig = go.Figure()
    for i, r in enumerate(plotted):
        params = _num(r.get("params")) or 0
        gmacs = _num(r["macs"]) / 1e9
        size_px = 14 + 46 * math.sqrt(params / pmax)  # diameter ~ sqrt(params): area ~ params
        fig.add_trace(
            go.Scatter(
                x=[gmacs],
                y=[_num(r["ref_top1"])],
                mode="markers+text",
                name=r["name"],
                text=[r["name"]],
                textposition="top center",
                showlegend=False,
                marker=dict(size=size_px, color=color(i), opacity=0.75, line=dict(width=1, color="#333")),
                hovertemplate=(
                    f"<b>{r['name']}</b><br>MACs: %{{x:.2f}} G<br>top-1: %{{y:.2f}} %<br>"
                    f"params: {_fmt_count(params)}<extra></extra>"
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
    xs = [_num(r["macs"]) / 1e9 for r in plotted]
    lo, hi = math.log10(min(xs)) - 0.25, math.log10(max(xs)) + 0.25
    ticks = [
        t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if lo <= math.log10(t) <= hi
    ]
    fig.update_xaxes(title=xlab, type="log", range=[lo, hi], tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    ys = [_num(r["ref_top1"]) for r in plotted]
    fig.update_yaxes(title="ImageNet top-1 (%), published", range=[min(ys) - 4, max(ys) + 5])
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
        return _layout(fig, title, margin=dict(l=60, r=20, t=60, b=90))
    return _layout(fig, title)


def latency_bars(rows: Sequence[Mapping], device: str = "") -> go.Figure:
    """Batch-1 latency per model: bar = median (p50), whisker up to p90.

    rows: dicts with name, latency_p50, latency_p90 (ms or None).
    """
    title = "Latency, batch 1" + (f", on {device}" if device else "") + " (bar: median, whisker: p90)"
    measured = [r for r in rows if _num(r.get("latency_p50")) is not None]
    if not measured:
        return message_figure("Latency not measured yet:<br>press Compare with “measure latency” ticked.", title)
    p50 = [_num(r["latency_p50"]) for r in measured]
    p90 = [_num(r.get("latency_p90")) or v for r, v in zip(measured, p50)]
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
    return _layout(fig, title, showlegend=False)


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
            ys.append(sum((_num(b.get("params")) or 0) for b in blocks[m] if b["name"] == name) / 1e6)
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
    return _layout(fig, title, margin=dict(l=60, r=20, t=60, b=90))


def _orders(rows: Sequence[Mapping]) -> tuple[list[Mapping], list[Mapping]]:
    with_macs = [r for r in rows if _num(r.get("macs"))]
    timed = [r for r in with_macs if _num(r.get("latency_p50")) is not None]
    return (
        sorted(with_macs, key=lambda r: _num(r["macs"])),
        sorted(timed, key=lambda r: _num(r["latency_p50"])),
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
    panels = [(by_macs, lambda r: _num(r["macs"]) / 1e9, "%{x:.2f} G", 1)]
    if by_latency:
        panels.append((by_latency, lambda r: _num(r["latency_p50"]), "%{x:.1f} ms", 2))
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
    return _layout(fig, title, height=height, margin=dict(l=20, r=20, t=80, b=30))


def ranking_note(rows: Sequence[Mapping]) -> str:
    """One or two sentences on why the MACs order and the latency order differ (or that they agree).

    Uses the measured work rate (G multiply-adds per second) of each model: a model with few, large,
    dense convolutions keeps the cores busy; one with many small layers pays memory traffic and a
    kernel launch per layer, so its latency is higher than its MACs suggest.
    """
    by_macs, by_latency = _orders(rows)
    if len(by_latency) < 2:
        return "Measure latency to compare the two orders: work (MACs) and time do not rank models the same way."
    macs_rank = [r["name"] for r in by_macs if r in by_latency]
    time_rank = [r["name"] for r in by_latency]
    rate = {r["name"]: _num(r["macs"]) / 1e9 / (_num(r["latency_p50"]) / 1e3) for r in by_latency}
    fast = max(rate, key=rate.get)
    slow = min(rate, key=rate.get)
    rates = (
        f"{fast} gets through {rate[fast]:,.0f} G multiply-adds per second, {slow} only {rate[slow]:,.0f}: "
        "few large dense convolutions (VGG's 3×3 stacks) keep the cores busy, while many small layers "
        "(GoogLeNet's Inception branches, deep stacks of blocks) each pay for moving activations through "
        "memory and for launching their own kernels, so time grows with depth and layer count, not only with MACs."
    )
    if macs_rank == time_rank:
        return "Here both orders agree. " + rates
    moved = [n for n in time_rank if time_rank.index(n) != macs_rank.index(n)]
    return f"The orders differ ({', '.join(moved)} change places). " + rates


_POLICY_ORDER = {"none": 0, "layers": 1, "stages": 2, "head": 3}


def _policy_key(text: str) -> tuple[int, int]:
    kind, _, k = str(text or "none").strip().lower().partition(":")
    return _POLICY_ORDER.get(kind, 1), int(k) if k.isdigit() else 0


def freeze_sweep(rows: Sequence[Mapping]) -> go.Figure:
    """Freeze-depth sweep: validation accuracy against training time, one point per freeze policy.

    Points are joined in policy order (none, layers:N, stages:K, head: more and more frozen), the
    marker area is proportional to the trainable parameters, and each point is labelled with its
    policy and trainable count. rows: dicts with label, freeze, val_acc (0..1), train_s, trainable.
    """
    title = "Freezing more: accuracy vs. training time (marker area = trainable parameters)"
    pts = [r for r in rows if _num(r.get("val_acc")) is not None and _num(r.get("train_s")) is not None]
    if not pts:
        return message_figure("Appears when the first run of the sweep has finished.", title)
    pts = sorted(pts, key=lambda r: (_policy_key(r.get("freeze")), -(_num(r.get("trainable")) or 0)))
    tmax = max(_num(r.get("trainable")) or 0 for r in pts) or 1
    xs = [_num(r["train_s"]) for r in pts]
    ys = [100 * _num(r["val_acc"]) for r in pts]
    sizes = [12 + 38 * math.sqrt((_num(r.get("trainable")) or 0) / tmax) for r in pts]
    texts = [
        f"{r.get('label') or r.get('freeze')}<br>{_fmt_count(_num(r.get('trainable')) or 0)} trainable" for r in pts
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line=dict(color="#9aa5b1", width=2, dash="dot"),
            hoverinfo="skip",
            showlegend=False,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers+text",
            text=texts,
            textposition=["top center" if i % 2 == 0 else "bottom center" for i in range(len(pts))],
            textfont=dict(size=12),
            marker=dict(
                size=sizes,
                color=[color(i) for i in range(len(pts))],
                opacity=0.8,
                line=dict(width=1, color="#333"),
            ),
            customdata=[[r.get("freeze") or "", _fmt_count(_num(r.get("trainable")) or 0)] for r in pts],
            hovertemplate="<b>%{customdata[0]}</b><br>%{x:.1f} s<br>top-1 %{y:.1f} %"
            "<br>%{customdata[1]} trainable<extra></extra>",
            showlegend=False,
            cliponaxis=False,
        )
    )
    span = max(xs) - min(xs) or max(xs) or 1.0
    fig.update_xaxes(title="training time (s)", range=[max(0.0, min(xs) - 0.25 * span), max(xs) + 0.25 * span])
    fig.update_yaxes(title="validation top-1 (%)", range=[max(0.0, min(ys) - 15), min(100.0, max(ys) + 15) + 5])
    return _layout(fig, title, height=440, margin=dict(l=60, r=30, t=60, b=60))


# --------------------------------------------------------------------------- training


def training_curves(series: Sequence[Mapping], title: str = "Training curves") -> go.Figure:
    """Train loss and validation top-1 per epoch, one colour per run, both panels side by side.

    series: dicts with label and history (list of per-epoch dicts: epoch, train_loss, val_top1).
    """
    series = [s for s in series if s.get("history")]
    if not series:
        return message_figure("The curves appear here when the first epoch ends.", title)
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Training loss", "Validation top-1 (%)"), horizontal_spacing=0.1
    )
    for i, s in enumerate(series):
        hist = s["history"]
        epochs = [h["epoch"] for h in hist]
        common = dict(
            mode="lines+markers",
            line=dict(color=color(i), width=2),
            marker=dict(size=7),
            legendgroup=s["label"],
            name=s["label"],
        )
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=[_num(h.get("train_loss")) for h in hist],
                showlegend=True,
                hovertemplate="epoch %{x}: loss %{y:.3f}<extra>" + s["label"] + "</extra>",
                **common,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=[_num(h.get("val_top1")) for h in hist],
                showlegend=False,
                hovertemplate="epoch %{x}: %{y:.1f} %<extra>" + s["label"] + "</extra>",
                **common,
            ),
            row=1,
            col=2,
        )
    max_epoch = max(h["epoch"] for s in series for h in s["history"])
    fig.update_xaxes(title="epoch", dtick=1 if max_epoch <= 15 else None, range=[0.7, max(max_epoch, 1) + 0.3])
    fig.update_yaxes(title="loss", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title="top-1 %", range=[0, 101], row=1, col=2)
    fig.update_layout(legend=dict(orientation="h", y=-0.22, x=0))
    return _layout(fig, title, margin=dict(l=60, r=20, t=70, b=100))


def confusion_matrices(items: Sequence[Mapping], max_cols: int = 3) -> go.Figure:
    """One heat map per run: rows = true class, columns = predicted class (validation set).

    items: dicts with label, classes, confusion (list of rows), optional val_top1.
    """
    title = "Confusion matrices (validation set; rows: true class, columns: predicted)"
    items = [it for it in items if it.get("confusion")]
    if not items:
        return message_figure("A confusion matrix appears here for each run when it has finished.", title)
    n = len(items)
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    shared = all(list(it["classes"]) == list(items[0]["classes"]) for it in items)
    titles = []
    for it in items:
        acc = _num(it.get("val_top1"))
        head, _, rest = str(it["label"]).partition(" ")  # "resnet18@none optimizer=sgd" -> two lines
        titles.append(head + (f" ({acc:.1f} %)" if acc is not None else "") + (f"<br>{rest}" if rest else ""))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=(0.03 if shared else 0.12) if cols > 1 else 0,
        vertical_spacing=0.2 if rows > 1 else 0,
    )
    for i, it in enumerate(items):
        classes = [str(c) for c in it["classes"]]
        row, col = i // cols + 1, i % cols + 1
        small = len(classes) <= 12
        ticks = len(classes) <= 20
        fig.add_trace(
            go.Heatmap(
                z=it["confusion"],
                x=classes,
                y=classes,
                colorscale="Blues",
                showscale=False,
                texttemplate="%{z}" if small else None,
                textfont=dict(size=11),
                hovertemplate="true %{y}<br>predicted %{x}<br>%{z} image(s)<extra>" + it["label"] + "</extra>",
            ),
            row=row,
            col=col,
        )
        fig.update_yaxes(
            autorange="reversed",
            row=row,
            col=col,
            tickfont=dict(size=10),
            showticklabels=ticks and (col == 1 or not shared),
        )
        fig.update_xaxes(row=row, col=col, tickangle=-45, tickfont=dict(size=10), showticklabels=ticks)
    fig.update_annotations(font_size=12)
    height = 150 + rows * (330 if cols > 1 else 420)
    fig.update_xaxes(automargin=True)  # long class names grow the margins instead of being clipped
    fig.update_yaxes(automargin=True)
    return _layout(fig, title, height=height, margin=dict(l=120, r=20, t=100, b=120))


def accuracy_vs_latency(rows: Sequence[Mapping]) -> go.Figure:
    """Validation top-1 of each fine-tuned run against its batch-1 latency at the training size.

    rows: dicts with label (or model), val_top1, latency_ms, optional trainable_params.
    """
    title = "Accuracy on your data vs. latency (batch 1, at the training size)"
    pts = [r for r in rows if _num(r.get("val_top1")) is not None and _num(r.get("latency_ms")) is not None]
    if not pts:
        return message_figure("Appears when at least one run has finished.", title)
    fig = go.Figure()
    for i, r in enumerate(pts):
        label = r.get("label") or r.get("model")
        tp = _num(r.get("trainable_params"))
        extra = f"<br>trainable: {_fmt_count(tp)}" if tp is not None else ""
        fig.add_trace(
            go.Scatter(
                x=[_num(r["latency_ms"])],
                y=[_num(r["val_top1"])],
                mode="markers",
                showlegend=True,
                name=label,
                marker=dict(size=16, color=color(i), line=dict(width=1, color="#333")),
                hovertemplate=f"<b>{label}</b><br>latency %{{x:.1f}} ms<br>top-1 %{{y:.1f}} %{extra}<extra></extra>",
            )
        )
    xmax = max(_num(r["latency_ms"]) for r in pts)
    fig.update_xaxes(title="latency (ms per image)", range=[0, xmax * 1.2 + 1e-9])
    fig.update_yaxes(title="validation top-1 (%)", range=[0, 105])
    fig.update_layout(legend=dict(orientation="h", y=-0.25, x=0))
    return _layout(fig, title, margin=dict(l=60, r=20, t=60, b=110))
