"""What every figure shares: colours, font, layout, the message figure, number helpers."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative

__all__ = ["PALETTE", "FONT", "HEIGHT", "color", "layout", "message_figure", "num", "fmt_count"]

PALETTE = qualitative.D3 + qualitative.Set2
FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=13)
HEIGHT = 400


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def layout(fig: go.Figure, title: str, height: int = HEIGHT, margin: dict | None = None, **kw) -> go.Figure:
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
    return layout(fig, title, height=height)


def num(x) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"
