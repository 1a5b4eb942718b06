"""What every figure shares: colours, font, layout, the message figure, number helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

__all__ = ["PALETTE", "FONT", "HEIGHT", "color", "layout", "message_figure", "num", "fmt_count", "point_labels"]

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


def _boxes_overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def point_labels(
    xs: Sequence[float],
    ys: Sequence[float],
    texts: Sequence[str],
    radii: Sequence[float],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    *,
    log_x: bool = False,
    plot_px: tuple[int, int] = (620, 300),
    font_size: int = 12,
) -> list[dict]:
    """Annotations that label scatter points without covering each other or the markers (plotly does not
    move text aside): each label takes the first free place around its point, tied to it by a thin line.

    Positions are worked out for a plot area of `plot_px` (width, height in pixels: the figures' usual size);
    radii are the markers' in pixels, ranges the axes' (log10 of them when `log_x`)."""
    w, h = plot_px

    def to_px(x: float, y: float) -> tuple[float, float]:
        xv = math.log10(x) if log_x else x
        return (
            (xv - x_range[0]) / ((x_range[1] - x_range[0]) or 1) * w,
            (y - y_range[0]) / ((y_range[1] - y_range[0]) or 1) * h,
        )

    pts = [to_px(x, y) for x, y in zip(xs, ys)]
    taken = [(px - r, px + r, py - r, py + r) for (px, py), r in zip(pts, radii)]  # the markers themselves
    out = []
    for (px, py), r, text in zip(pts, radii, texts):
        lines = str(text).split("<br>")
        tw, th = 0.6 * font_size * max(len(line) for line in lines) + 6, 1.3 * font_size * len(lines) + 4
        gap_y, gap_x = r + th / 2 + 6, r + tw / 2 + 6
        candidates = [(0, gap_y), (0, -gap_y), (gap_x, 0), (-gap_x, 0)]
        candidates += [(sx * gap_x, sy * gap_y) for sy in (1, -1) for sx in (1, -1)]
        candidates += [(dx, dy * k) for k in (2, 3) for dx, dy in ((0, gap_y), (0, -gap_y))]
        best = candidates[0]
        for dx, dy in candidates:
            cx, cy = px + dx, py + dy
            box = (cx - tw / 2, cx + tw / 2, cy - th / 2, cy + th / 2)
            inside = box[0] >= -20 and box[1] <= w + 20 and box[2] >= -10 and box[3] <= h + 30
            if inside and not any(_boxes_overlap(box, other) for other in taken):
                best = (dx, dy)
                break
        dx, dy = best
        cx, cy = px + dx, py + dy
        taken.append((cx - tw / 2, cx + tw / 2, cy - th / 2, cy + th / 2))
        x = xs[len(out)]
        out.append(
            dict(
                x=math.log10(x) if log_x else x,
                y=ys[len(out)],
                text=text,
                ax=dx,
                ay=-dy,  # plotly's pixel offsets grow downwards
                showarrow=True,
                arrowhead=0,
                arrowwidth=1,
                arrowcolor="#9aa5b1",
                standoff=r,
                font=dict(size=font_size),
                bgcolor="rgba(255,255,255,0.85)",
            )
        )
    return out
