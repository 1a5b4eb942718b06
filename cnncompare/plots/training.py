"""Figures of a fine-tuning comparison: the training curves, confusion matrices, accuracy vs latency, the
freeze-depth sweep, and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .base import FONT, color, fmt_count, layout, message_figure, num, point_labels

__all__ = [
    "freeze_sweep",
    "training_curves",
    "live_curves",
    "confusion_matrices",
    "confusion_figure",
    "accuracy_vs_latency",
    "lr_schedule",
]


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
    pts = [r for r in rows if num(r.get("val_acc")) is not None and num(r.get("train_s")) is not None]
    if not pts:
        return message_figure("Appears when the first run of the sweep has finished.", title)
    pts = sorted(pts, key=lambda r: (_policy_key(r.get("freeze")), -(num(r.get("trainable")) or 0)))
    tmax = max(num(r.get("trainable")) or 0 for r in pts) or 1
    xs = [num(r["train_s"]) for r in pts]
    ys = [100 * num(r["val_acc"]) for r in pts]
    sizes = [12 + 38 * math.sqrt((num(r.get("trainable")) or 0) / tmax) for r in pts]
    texts = [f"{r.get('freeze') or r.get('label')}<br>{fmt_count(num(r.get('trainable')) or 0)} trainable" for r in pts]
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
            mode="markers",
            marker=dict(
                size=sizes,
                color=[color(i) for i in range(len(pts))],
                opacity=0.8,
                line=dict(width=1, color="#333"),
            ),
            customdata=[[r.get("freeze") or "", fmt_count(num(r.get("trainable")) or 0)] for r in pts],
            hovertemplate="<b>%{customdata[0]}</b><br>%{x:.1f} s<br>top-1 %{y:.1f} %"
            "<br>%{customdata[1]} trainable<extra></extra>",
            showlegend=False,
            cliponaxis=False,
        )
    )
    span = max(xs) - min(xs) or max(xs) or 1.0
    x_range = (max(0.0, min(xs) - 0.25 * span), max(xs) + 0.25 * span)
    y_range = (max(0.0, min(ys) - 15), min(100.0, max(ys) + 15) + 5)
    fig.update_xaxes(title="training time (s)", range=list(x_range))
    fig.update_yaxes(title="validation top-1 (%)", range=list(y_range))
    for note in point_labels(xs, ys, texts, [s / 2 for s in sizes], x_range, y_range, plot_px=(600, 320)):
        fig.add_annotation(**note)
    return layout(fig, title, height=440, margin=dict(l=60, r=30, t=60, b=60))


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
                y=[num(h.get("train_loss")) for h in hist],
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
                y=[num(h.get("val_top1")) for h in hist],
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
    return layout(fig, title, margin=dict(l=60, r=20, t=70, b=100))


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
        acc = num(it.get("val_top1"))
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
                name=str(it["label"]),  # a click on a cell names its run (the app opens that cell's images)
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
    return layout(fig, title, height=height, margin=dict(l=120, r=20, t=100, b=120))


def accuracy_vs_latency(rows: Sequence[Mapping]) -> go.Figure:
    """Validation top-1 of each fine-tuned run against its batch-1 latency at the training size.

    rows: dicts with label (or model), val_top1, latency_ms, optional trainable_params.
    """
    title = "Accuracy on your data vs. latency (batch 1, at the training size)"
    pts = [r for r in rows if num(r.get("val_top1")) is not None and num(r.get("latency_ms")) is not None]
    if not pts:
        return message_figure("Appears when at least one run has finished.", title)
    fig = go.Figure()
    for i, r in enumerate(pts):
        label = r.get("label") or r.get("model")
        tp = num(r.get("trainable_params"))
        extra = f"<br>trainable: {fmt_count(tp)}" if tp is not None else ""
        fig.add_trace(
            go.Scatter(
                x=[num(r["latency_ms"])],
                y=[num(r["val_top1"])],
                mode="markers",
                showlegend=True,
                name=label,
                marker=dict(size=16, color=color(i), line=dict(width=1, color="#333")),
                hovertemplate=f"<b>{label}</b><br>latency %{{x:.1f}} ms<br>top-1 %{{y:.1f}} %{extra}<extra></extra>",
            )
        )
    xmax = max(num(r["latency_ms"]) for r in pts)
    fig.update_xaxes(title="latency (ms per image)", range=[0, xmax * 1.2 + 1e-9])
    fig.update_yaxes(title="validation top-1 (%)", range=[0, 105])
    fig.update_layout(legend=dict(orientation="h", y=-0.25, x=0))
    return layout(fig, title, margin=dict(l=60, r=20, t=60, b=110))


# --------------------------------------------------------------------------- sized for the app's screen

CURVES_HEIGHT = 240  # the live curves fit beside Start and the status on a 1280x720 projector


def live_curves(series: Sequence[Mapping]) -> go.Figure:
    """`training_curves` sized to fit a projector screen beside Start and the status."""
    fig = training_curves(series, title="Training loss and validation accuracy per epoch")
    fig.update_layout(height=CURVES_HEIGHT, margin=dict(l=50, r=16, t=56, b=40 if not series else 70))
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.16, x=0))
    fig.update_xaxes(title_text=None)  # "per epoch" is in the title: the legend takes the axis title's place
    return fig


CONFUSION_TITLE = "Confusion matrices (validation set; rows: true class, columns: predicted)"


def confusion_figure(items: Sequence[Mapping]) -> go.Figure:
    """`confusion_matrices` with margins that grow to fit long class names (none clipped)."""
    if not items:
        return message_figure(
            "A confusion matrix appears here for each run when it has finished.", CONFUSION_TITLE, height=200
        )
    fig = confusion_matrices(items)
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    fig.update_layout(margin=dict(l=20, r=20, t=100, b=20))
    return fig


LR_HEIGHT = 210


def lr_schedule(epochs: Sequence[float], rates: Sequence[float], title: str) -> go.Figure:
    """The learning rate over a run, step by step (`loop.lr_curve` gives the points)."""
    fig = go.Figure(
        go.Scatter(
            x=list(epochs),
            y=list(rates),
            mode="lines",
            line=dict(width=2.5, color=color(0)),
            fill="tozeroy",
            hovertemplate="epoch %{x:.2f}: lr %{y:.3g}<extra></extra>",
        )
    )
    fig.update_layout(
        title=dict(text=title, x=0.01, font=dict(size=14)),
        height=LR_HEIGHT,
        template="plotly_white",
        font=FONT,
        margin=dict(l=60, r=16, t=44, b=40),
        showlegend=False,
    )
    last = max(epochs, default=1.0)
    n_epochs = max(1, math.ceil(last))
    fig.update_xaxes(title="epoch", range=[0, n_epochs], dtick=1 if n_epochs <= 12 else None)
    small = bool(rates) and max(rates) < 1e-3
    fig.update_yaxes(rangemode="tozero", exponentformat="e" if small else "none")
    return fig
