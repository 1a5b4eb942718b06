"""Plotly figures for cnncompare, as pure functions of plain data.

Every function takes lists/dicts (what `Profile.to_dict()`, `Block.to_dict()` and
`compare.table_rows()` give, or the app's own rows) and returns a `plotly.graph_objects.Figure`.
Nothing here imports gradio or torch, so the same figures work in a notebook or a script.

When there is nothing to draw, a figure with a short message is returned instead of an
empty pair of axes, so a page never shows a blank plot without saying why.
"""

from .architectures import accuracy_vs_macs, latency_bars, params_per_stage, ranking, ranking_note, without_reference
from .base import FONT, PALETTE, color, message_figure
from .designs import counting_figure
from .training import (
    accuracy_vs_latency,
    confusion_figure,
    confusion_matrices,
    freeze_sweep,
    live_curves,
    lr_schedule,
    training_curves,
)

__all__ = [
    "FONT",
    "PALETTE",
    "color",
    "message_figure",
    "without_reference",
    "accuracy_vs_macs",
    "latency_bars",
    "params_per_stage",
    "ranking",
    "ranking_note",
    "freeze_sweep",
    "training_curves",
    "confusion_matrices",
    "accuracy_vs_latency",
    "lr_schedule",
    "live_curves",
    "confusion_figure",
    "counting_figure",
]
