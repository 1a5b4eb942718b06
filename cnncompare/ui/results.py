"""What the page shows of a comparison: the progress bar, the status, the live curves, the results table with
its notes, the confusion matrices and the accuracy chart, from the engine's events (`View`).

Pure rendering: nothing here runs or decides anything; `View.outputs()` is one yield of the Start handler.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import gradio as gr
import pandas as pd

from .. import compare, plots, training
from ..estimate import duration_text
from .common import for_the_page, rounded, styled, warn_md
from .figures import figure

__all__ = [
    "RESULT_COLUMNS",
    "RESULT_WIDTHS",
    "RESULTS_LEGEND",
    "View",
    "NOTES",
    "progress_html",
    "results_table",
    "results_notes",
    "blank_outputs",
    "status_only",
]

# The results table: short headers (the units and meanings are in RESULTS_LEGEND, under the table), widths in
# pixels so a narrow screen scrolls the table sideways instead of breaking words; why a run failed, stopped or
# warned goes in a note under the table (`results_notes`), not in a mostly empty column.
RESULT_COLUMNS = [
    "run",
    "start",
    "top-1 %",
    "top-5 %",
    "epochs",
    "train s",
    "img/s",
    "warm-up s",
    "trainable params",
    "params",
    "GMACs",
    "latency ms",
    "cache",
    "folder",
]
RESULT_WIDTHS = [180, 86, 60, 60, 72, 58, 58, 70, 112, 112, 62, 78, 66, 184]  # params in full: 11,180,616
RESULT_FORMATS = {
    "top-1 %": "{:.1f}",
    "top-5 %": "{:.1f}",
    "epochs": "{}",
    "train s": "{:.1f}",
    "img/s": "{:,.0f}",
    "warm-up s": "{:.1f}",
    "trainable params": "{:,}",
    "params": "{:,}",
    "GMACs": "{:.3f}",
    "latency ms": "{:.1f}",
}
RESULTS_LEGEND = (
    "**start**: ImageNet weights or random init · **top-1 / top-5 %**: validation accuracy · **train s**: seconds of "
    "training · **img/s**: training images per second after the **warm-up s** (the first steps) · **trainable "
    "params** of all **params** · **GMACs**: billions of multiply-adds per image · **latency ms**: one image at batch "
    "1 · **cache**: frozen backbone's features computed once · **folder**: the run's folder in the zip download."
)


def progress_html(fraction: float, text: str = "", failed: bool = False) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    kind = " cc-failed" if failed else ""
    return (
        f'<div class="cc-progress{kind}"><div class="cc-progress-bar" style="width:{pct:.1f}%"></div>'
        f'<span class="cc-progress-text">{pct:.0f} %{" · " + text if text else ""}</span></div>'
    )


def _weights_text(result: training.RunResult) -> str:
    src = result.weights_source or ""
    if src.startswith("random"):
        return "random init" + (f" ({result.config.get('init')})" if result.config.get("init") != "default" else "")
    return "ImageNet" if src else "–"


def results_table(results: list[training.RunResult]) -> pd.DataFrame:
    rows = []
    for r, row in zip(results, compare.table_rows(results)):
        rows.append(
            {
                "run": row["run"],
                "start": _weights_text(r),
                "top-1 %": rounded(row["val_top1"]),
                "top-5 %": rounded(row["val_top5"]),
                "epochs": row["epochs"],
                "train s": rounded(row["train_time_s"]),
                "img/s": rounded(row["images_per_s"], 0),
                "warm-up s": rounded(row["warmup_s"]),
                "trainable params": row["trainable_params"],
                "params": row["params"],
                "GMACs": None if row["macs"] is None else round(row["macs"] / 1e9, 3),
                "latency ms": rounded(row["latency_ms"]),
                "cache": "yes" if row["feature_cache"] else "no",
                "folder": row["run_dir"] or "",
            }
        )
    return styled(pd.DataFrame(rows, columns=RESULT_COLUMNS, dtype=object), RESULT_FORMATS)


def results_notes(results: list[training.RunResult]) -> str:
    """The legend of the table's columns, then one line per run that failed, stopped early or has a warning."""
    lines = []
    for row in compare.table_rows(results):
        if row["error"]:
            lines.append(warn_md(f"**{row['run']}** failed: {for_the_page(row['error'])}"))
            continue
        if row["stopped"]:
            lines.append(f"**{row['run']}** stopped early ({row['stopped']}): the table shows what it reached.")
        if row["warnings"]:
            lines.append(f"**{row['run']}**: {for_the_page(row['warnings'])}")
    return "\n\n".join([RESULTS_LEGEND] + [f"- {line}" for line in lines])


def _bold_label(ev: training.Event) -> str:
    """The engine's message with its run's label in bold ('**resnet18@none optimizer=sgd**: ...')."""
    prefix = f"{ev.label}:"
    text = for_the_page(ev.message)
    return f"**{ev.label}**:{text[len(prefix) :]}" if ev.label and text.startswith(prefix) else text


class View:
    """What the page shows while a comparison runs; `outputs()` is one yield."""

    def __init__(self, labels: list[str], session: str = "local"):
        self.labels = labels
        self.session = session
        self.headline = ""
        self.log: list[str] = []
        self.fraction = 0.0
        self.bar_text = ""
        self.where = ""  # 'run 1/2, epoch 2/10': where the last step was, for a truthful Stop
        self.histories: dict[str, list[dict]] = {label: [] for label in labels}
        self.results: list[training.RunResult] = []
        self.files: list[str] | None = None
        self._curves_sent: tuple | None = None  # the curves' content last sent to the page
        self._infos: set[str] = set()  # info messages shown, so a warning repeating one is not shown twice
        self.folded = False  # the log folded under the headline (the final page)

    def position(self, label: str) -> tuple[int, int]:
        """(0-based index of the run, number of runs)."""
        return self.labels.index(label) if label in self.labels else len(self.results), len(self.labels)

    def status(self) -> str:
        # the dataset line (the first) and the latest lines: a status that never needs scrolling
        lines = self.log if len(self.log) <= 6 else [self.log[0], "…", *self.log[-5:]]
        parts = [self.headline] + [f"- {line}" for line in lines]
        if self.folded and lines:  # the end: the headline and the reading stay in view beside the curves
            parts = [
                self.headline,
                "<details><summary>What happened, step by step</summary>\n",
                *parts[1:],
                "</details>",
            ]
        return "\n".join(p for p in parts if p)

    def curves(self, changed_only: bool = False):
        """The loss and accuracy curves (built once per content for everyone, `figures.figure`); with
        `changed_only`, `gr.skip()` when no epoch ended since they were last sent (they change once per epoch,
        the status every second)."""
        drawn = tuple((label, len(h)) for label, h in self.histories.items())
        if changed_only and drawn == self._curves_sent:
            return gr.skip()
        self._curves_sent = drawn
        series = [{"label": label, "history": h} for label, h in self.histories.items()]
        return figure(plots.live_curves, series)

    def event(self, ev: training.Event) -> bool:
        """Take one engine event in; True when the page should be redrawn in full (a run ended)."""
        i, n = self.position(ev.label)
        run = f"**Run {i + 1} of {n}: {ev.label}**"
        if ev.kind == "start":
            self.headline, self.fraction = f"{run} — starting…", i / n
            self.where = f"run {i + 1}/{n}, before its first step"
            self.log.append(_bold_label(ev))
        elif ev.kind == "info":
            self._infos.add(ev.message)
            self.log.append(_bold_label(ev))
            if self.where.endswith("before its first step"):  # what a run does before its first step, said
                self.headline = f"{run} — {_bold_label(ev).removeprefix(f'**{ev.label}**:').strip()}"
        elif ev.kind == "step":
            self.fraction = (i + ev.progress) / n
            eta = ""
            if ev.eta_s is not None:
                left = duration_text(ev.eta_s)
                eta = ", less than a second left" if ev.eta_s < 1 else f", about {left} left in this run"
            loss = f", loss {ev.loss:.3f}" if ev.loss is not None else ""
            self.headline = f"{run} — epoch {ev.epoch}/{ev.epochs}, step {ev.step}/{ev.steps}{loss}{eta}"
            self.bar_text = self.where = f"run {i + 1}/{n}, epoch {ev.epoch}/{ev.epochs}"
        elif ev.kind == "pause":
            self.headline = (
                f"{run} — paused at epoch {ev.epoch}/{ev.epochs}, step {ev.step}/{ev.steps} for other visitors' "
                "requests (predictions, counts); it resumes by itself in a moment"
            )
        elif ev.kind == "epoch":
            self.histories.setdefault(ev.label, []).append(
                dict(
                    epoch=ev.epoch,
                    train_loss=ev.loss,
                    train_acc=ev.train_acc,
                    val_loss=ev.val_loss,
                    val_top1=ev.val_top1,
                )
            )
            top1 = f": validation top-1 {ev.val_top1:.1f} %" if ev.val_top1 is not None else ""
            self.headline = f"{run} — epoch {ev.epoch}/{ev.epochs} done{top1}"
        elif ev.kind == "end" and ev.result is not None:
            self.ended(ev)
            r = ev.result
            if r.stopped != "stopped by user" and not (r.error and r.error.endswith("stopped by user")):
                self.fraction = (i + 1) / n  # a run the visitor stopped did not finish: the bar stays where it was
            return True
        return False

    def ended(self, ev: training.Event) -> None:
        r = ev.result
        self.results.append(r)
        if r.history:
            self.histories[ev.label] = list(r.history)
        self.log.append(warn_md(_bold_label(ev)) if r.error else _bold_label(ev))
        for w in r.warnings:
            if f"{ev.label}: {w}" not in self._infos:
                self.log.append(warn_md(f"**{ev.label}**: {for_the_page(w)}"))

    @property
    def failed(self) -> list[training.RunResult]:
        return [r for r in self.results if r.error]

    def outputs(self, full: bool):
        status, bar = self.status(), progress_html(self.fraction, self.bar_text, failed=self.bar_text == "failed")
        if not full:
            return status, bar, self.curves(changed_only=True), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        NOTES.put(self.session, results_notes(self.results))
        items = [
            {"label": r.label, "classes": r.classes, "confusion": r.confusion, "val_top1": r.val_top1}
            for r in self.results
            if r.confusion
        ]
        points = [
            {
                "label": r.label,
                "val_top1": r.val_top1,
                "latency_ms": r.latency_ms,
                "trainable_params": r.trainable_params,
            }
            for r in self.results
        ]
        return (
            status,
            bar,
            self.curves(),
            results_table(self.results),
            figure(plots.confusion_figure, items),
            figure(plots.freeze_sweep, sweep)
            if (sweep := compare.freeze_sweep_rows(self.results))
            else figure(plots.accuracy_vs_latency, points),
            self.files,
        )


class Notes:
    """The notes under each session's results table (the table's `change` event shows them), newest kept."""

    KEEP = 256

    def __init__(self):
        self._lock = threading.Lock()
        self._items: OrderedDict[str, str] = OrderedDict()

    def put(self, session: str, text: str) -> None:
        with self._lock:
            self._items[session] = text
            self._items.move_to_end(session)
            while len(self._items) > self.KEEP:
                self._items.popitem(last=False)

    def get(self, session: str) -> str:
        with self._lock:
            return self._items.get(session, "")


NOTES = Notes()

CURVES_HEIGHT = 270  # the live curves fit beside Start and the status on a 1280x720 projector


def blank_outputs(status: str):
    return (
        status,
        progress_html(0.0),
        figure(plots.live_curves, []),
        pd.DataFrame(columns=RESULT_COLUMNS),
        figure(plots.confusion_figure, []),
        figure(plots.accuracy_vs_latency, []),
        None,
    )


def status_only(text: str) -> tuple:
    return (text, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
