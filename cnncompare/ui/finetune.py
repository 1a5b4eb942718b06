"""Fine-tune tab: one dataset, several models (each with its freeze policy), live curves, results.

The form is one dict name -> component (`form`): the training settings' widgets come from the
settings schema (`forms.py`), the page's own fields (dataset, upload, models, images per class)
are added by hand. Handlers get the form's values as one mapping keyed by those names (Gradio's
`inputs_kwargs=form`), which are also the API's parameter names.

The engine plans and runs the comparison (`compare.Plan`, `compare.run_plan`) and writes its
downloads (`compare.export`); this module only renders its events. The Start handler is a
generator: it first waits for the machine in the app's fair queue (one training at a time, one
per visitor; its place in line is shown), then yields about once a second and checks a
per-session stop flag. Stop both cancels the event and sets that flag, so the run ends within
one training step; what finished is saved in the visitor's own run folder. This server's limits
(`settings.Env`: epochs, run time, model size, dataset pixels, zip size) are applied to the plan
and the dataset before anything runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from .. import compare, data, plots, training
from ..errors import CNNCompareError
from ..settings import Setting, TrainSettings, coerce
from . import forms, visitors
from . import gallery as gallery_ui
from . import weights as weights_ui
from .common import SESSIONS, Context, file_path, for_the_page, message, rounded, session_of, styled, warn_md
from .fairqueue import wait_text
from .gpu import gpu, on_zerogpu
from .uploads import UploadedFile, checked_upload

DATASETS = [
    ("shapes: drawn shapes, made here (offline)", "shapes"),
    ("your images: a .zip upload", "zip"),
    ("CIFAR-10 (needs a download)", "cifar10"),
    ("CIFAR-100 (needs a download)", "cifar100"),
]
DEFAULT_MODELS = "resnet18@head, alexnet@head"
FREEZE_SUGGESTIONS = ["head", "none", "stages:1", "stages:2", "stages:3", "layers:10"]
# A page-only setting (the engine never sees it: it caps what the dataset loader reads).
IMAGES_PER_CLASS = Setting(
    "max_per_class",
    "Images per class (0 = all)",
    "a cap keeps CPU runs short; 20 % of each class is held out for validation",
    int,
    60,
    low=0,
)
# The training settings' widgets, row by row, as the schema defines them ...
TRAINING_ROWS = [
    ["optimizer", "lr"],
    ["epochs", "schedule", "warmup_epochs"],
    ["batch_size", "size"],
    ["pretrained", "augment"],
    ["init", "head", "time_budget_s"],
]
# ... except where the page departs from the schema (whose defaults are the CLI's): a classroom run
# starts from ImageNet weights, and the app falls back to random weights where it has none.
WIDGET_OVERRIDES = dict(
    freeze=dict(choices=FREEZE_SUGGESTIONS, label="Default freeze policy (for models without @)"),
    pretrained=dict(value=True, info="offline: random weights instead, said so in the status"),
)

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
YIELD_EVERY_S = 1.0
LR_FIELDS = ("lr", "schedule", "warmup_epochs", "epochs")  # what the learning-rate curve follows


# --------------------------------------------------------------------------- reading the form


@dataclasses.dataclass
class Comparison:
    """What the form asks for: a dataset and the engine's plan of runs."""

    dataset: str  # shapes | zip | cifar10 | cifar100
    zip_path: str | None
    max_per_class: int | None
    plan: compare.Plan


def read_dataset(values: Mapping[str, Any]) -> tuple[str, str | None, int | None]:
    """(dataset choice, the uploaded zip's path or None, images per class or None) from the form's values.

    Raises:
        CNNCompareError: an unknown dataset, 'your images' without an upload, a bad cap, in one sentence.
        gr.Error: a zip that was not uploaded (a path on the server).
    """
    source = str(values.get("dataset") or "shapes").strip().lower()
    if source not in {v for _, v in DATASETS}:
        raise CNNCompareError(f"Unknown dataset '{values.get('dataset')}': choose shapes, zip, cifar10 or cifar100.")
    zip_path = file_path(values.get("zip_file"))
    if source == "zip" and not zip_path:
        raise CNNCompareError("Upload a .zip of your images first (one folder per class inside).")
    if source == "zip":
        zip_path = str(checked_upload(zip_path, "The zip"))  # only an upload, never a file of the server
    cap = coerce(IMAGES_PER_CLASS, values.get("max_per_class"))
    return source, zip_path if source == "zip" else None, cap or None


def read_comparison(ctx: Context, values: Mapping[str, Any], visitor: visitors.Visitor | None = None) -> Comparison:
    """The form's values (by name) as a dataset choice and a checked `compare.Plan`, within this server's limits.

    Raises:
        CNNCompareError: the first problem (unknown dataset, no upload, a bad setting, an unknown
        model or freeze policy, too many runs, a limit of the server), in one sentence.
        gr.Error: a zip that was not uploaded (a path on the server).
    """
    source, zip_path, cap = read_dataset(values)
    entry, settings = forms.read_form(values)
    settings.validate()
    plan = compare.Plan.parse(
        values.get("models") or "",
        model_defaults=entry,
        settings=settings,
        missing_weights="random",
        max_runs=ctx.max_runs,
    )
    apply_limits(ctx, plan)
    plan.weights_files = weights_ui.weights_map(ctx, visitor)  # the visitor's own uploads, by model
    return Comparison(source, zip_path, cap, plan)


def _capped(budget: float | None, most: float) -> float | None:
    if not most or most <= 0:
        return budget
    return most if budget is None else min(float(budget), most)


def apply_limits(ctx: Context, plan: compare.Plan) -> None:
    """This server's limits on a plan: epochs per run, models (the catalog or small timm models), and each run's
    time budget set to min(the visitor's, CNNCOMPARE_MAX_RUN_S).

    Raises:
        CNNCompareError: a run over the epochs limit, or a model this server does not build.
    """
    env = ctx.env
    budget = _capped(plan.settings.time_budget_s, env.max_run_s)
    plan.settings = dataclasses.replace(plan.settings, time_budget_s=budget)
    for e in plan.entries:
        if "time_budget_s" in e.overrides:
            e.overrides["time_budget_s"] = _capped(e.overrides["time_budget_s"], env.max_run_s)
    for run in plan.runs():
        if env.max_epochs and run.settings.epochs > env.max_epochs:
            raise CNNCompareError(
                f"{run.label}: at most {env.max_epochs} epochs per run on this server (got {run.settings.epochs})."
            )
    for name in dict.fromkeys(e.model for e in plan.entries):
        ctx.check_model(name)


def load_data(ctx: Context, c: Comparison) -> tuple[data.LoadedData, Path | None]:
    """The dataset, plus a scratch folder to delete afterwards (unpacked uploads).

    Raises:
        CNNCompareError: a bad zip, one that unpacks to more than CNNCOMPARE_MAX_UNPACK_MB, or a dataset over
        CNNCOMPARE_MAX_DATASET_MPIX at the largest input size of the plan.
    """
    size = max(run.settings.size for run in c.plan.runs())
    return load_source(ctx, c.dataset, c.zip_path, c.max_per_class, c.plan.settings.seed, size)


def load_source(
    ctx: Context, dataset: str, zip_path: str | None, max_per_class: int | None, seed: int, size: int | None = None
) -> tuple[data.LoadedData, Path | None]:
    """`load_data` for a dataset choice alone (the dataset report before a plan exists: no pixel check)."""
    scratch = None
    if dataset == "zip":
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="upload-", dir=ctx.data_dir))
    try:
        if dataset == "zip":
            unpack = int(ctx.env.max_unpack_mb * 2**20) if ctx.env.max_unpack_mb > 0 else None
            ds = data.load_dataset(
                zip_path, work_dir=scratch, max_per_class=max_per_class, seed=seed, max_unpack_bytes=unpack
            )
        else:
            ds = data.load_dataset(
                dataset, work_dir=ctx.data_dir, max_per_class=max_per_class, seed=seed, download=not ctx.offline
            )
        if size is not None and ctx.env.max_dataset_mpix > 0:
            data.check_dataset_size(ds, size, ctx.env.max_dataset_mpix)
        return ds, scratch
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise


def dataset_report(ctx: Context, values: Mapping[str, Any]) -> str:
    """The dataset as a run would load it: classes with their training/validation counts, skipped files with
    the reason, notes (the engine's `DataReport.summary`, as the CLI prints it); file names only."""
    scratch = None
    try:
        source, zip_path, cap = read_dataset(values)
        ds, scratch = load_source(ctx, source, zip_path, cap, TrainSettings().seed)
        head = (
            f"**Dataset report**: {len(ds.classes)} classes, {len(ds.train)} training and {len(ds.val)} "
            "validation images (what Estimate and Start will use)."
        )
        return head + "\n\n" + ds.report.summary(max_paths=8, markdown=True)
    except Exception as err:
        return warn_md(message(err))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def queued_report(ctx: Context, visitor: visitors.Visitor, values: Mapping[str, Any]):
    """Generator: `dataset_report` once the estimate lane has a slot (it decodes the images it checks)."""
    try:
        ticket = ctx.queue.join(visitor.id, "estimate")
    except CNNCompareError as err:
        yield warn_md(str(err))
        return
    try:
        for position, eta in ctx.queue.waits(ticket):
            yield wait_text("estimate", position, eta)
        yield "Reading the dataset…"
        yield dataset_report(ctx, values)
    finally:
        ctx.queue.leave(ticket)


# --------------------------------------------------------------------------- the learning-rate schedule

LR_STEPS_PER_EPOCH = 20  # the curve's resolution; the real runs have as many steps as their batches
LR_HEIGHT = 210


def lr_figure(values: Mapping[str, Any]):
    """The learning rate over the run, step by step, as the engine sets it (`training.lr_factor`) for the
    form's learning rate, schedule, warm-up and epochs."""
    title = "Learning rate during the run"
    try:
        _, settings = forms.read_form({k: values[k] for k in LR_FIELDS if k in values})
    except CNNCompareError as err:
        return plots.message_figure(message(err), title, height=LR_HEIGHT)
    spe = LR_STEPS_PER_EPOCH
    steps = range(settings.epochs * spe)
    xs = [k / spe for k in steps]
    ys = [settings.lr * training.lr_factor(settings, k, spe) for k in steps]
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line=dict(width=2.5, color=plots.color(0)),
            fill="tozeroy",
            hovertemplate="epoch %{x:.2f}: lr %{y:.3g}<extra></extra>",
        )
    )
    warm = f", {settings.warmup_epochs:g} warm-up epoch(s)" if settings.warmup_epochs else ""
    fig.update_layout(
        title=dict(text=f"Learning rate: {settings.schedule}{warm}", x=0.01, font=dict(size=14)),
        height=LR_HEIGHT,
        template="plotly_white",
        font=plots.FONT,
        margin=dict(l=60, r=16, t=44, b=40),
        showlegend=False,
    )
    fig.update_xaxes(title="epoch", range=[0, settings.epochs], dtick=1 if settings.epochs <= 12 else None)
    fig.update_yaxes(rangemode="tozero", exponentformat="e" if settings.lr < 1e-3 else "none")
    return fig


# --------------------------------------------------------------------------- rendering


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 1:
        return "less than 1 s"
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


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


class _View:
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
        self._infos: set[str] = set()  # info messages shown, so a warning repeating one is not shown twice

    def position(self, label: str) -> tuple[int, int]:
        """(0-based index of the run, number of runs)."""
        return self.labels.index(label) if label in self.labels else len(self.results), len(self.labels)

    def status(self) -> str:
        parts = [self.headline] + [f"- {line}" for line in self.log[-12:]]
        return "\n".join(p for p in parts if p)

    def curves(self):
        series = [{"label": label, "history": h} for label, h in self.histories.items()]
        return live_curves(series)

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
        elif ev.kind == "step":
            self.fraction = (i + ev.progress) / n
            eta = ""
            if ev.eta_s is not None:
                eta = ", less than a second left" if ev.eta_s < 1 else f", about {_fmt_s(ev.eta_s)} left in this run"
            loss = f", loss {ev.loss:.3f}" if ev.loss is not None else ""
            self.headline = f"{run} — epoch {ev.epoch}/{ev.epochs}, step {ev.step}/{ev.steps}{loss}{eta}"
            self.bar_text = self.where = f"run {i + 1}/{n}, epoch {ev.epoch}/{ev.epochs}"
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
            return status, bar, self.curves(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
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
            confusion_figure(items),
            plots.freeze_sweep(sweep)
            if (sweep := compare.freeze_sweep_rows(self.results))
            else plots.accuracy_vs_latency(points),
            self.files,
        )


class _Notes:
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


NOTES = _Notes()

CURVES_HEIGHT = 270  # the live curves fit beside Start and the status on a 1280x720 projector


def live_curves(series: list[dict]):
    """The engine's training curves, sized to fit the projector screen beside Start and the status."""
    fig = plots.training_curves(series, title="Training loss and validation accuracy per epoch")
    fig.update_layout(height=CURVES_HEIGHT, margin=dict(l=50, r=16, t=56, b=40 if not series else 70))
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.16, x=0))
    fig.update_xaxes(title_text=None)  # "per epoch" is in the title: the legend takes the axis title's place
    return fig


CONFUSION_TITLE = "Confusion matrices (validation set; rows: true class, columns: predicted)"


def confusion_figure(items: list[dict]):
    """The engine's confusion matrices with margins that grow to fit long class names (none clipped)."""
    if not items:
        return plots.message_figure(
            "A confusion matrix appears here for each run when it has finished.", CONFUSION_TITLE, height=200
        )
    fig = plots.confusion_matrices(items)
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    fig.update_layout(margin=dict(l=20, r=20, t=100, b=20))
    return fig


def _blank_outputs(status: str):
    return (
        status,
        progress_html(0.0),
        live_curves([]),
        pd.DataFrame(columns=RESULT_COLUMNS),
        confusion_figure([]),
        plots.accuracy_vs_latency([]),
        None,
    )


def write_downloads(results: list[training.RunResult]) -> list[str]:
    """The engine's export (results.csv, results.json, a zip of the run folders with weights), written for this
    visitor into a folder with a random name in gradio's upload folder: run folders are never served by path."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return [str(p) for p in compare.export(results, visitors.downloads_dir(), stamp=stamp)]


def _wrap_up(ctx: Context, visitor: visitors.Visitor, view: _View, stopped: bool) -> tuple:
    """The final page: what really happened (done, failed, or where it was stopped), the downloads, the notes."""
    n, failed = len(view.labels), view.failed
    trained = [r for r in view.results if not r.error]
    if stopped:
        where = f" in {view.where}" if view.where else ""
        view.headline = (
            f"**Stopped{where}.** Finished epochs are saved; the table shows what each run reached."
            if trained
            else f"**Stopped{where}** before any run had finished an epoch."
        )
        view.bar_text = f"stopped in {view.where}" if view.where else "stopped"
    elif failed and not trained:
        view.headline = (
            "**Failed: the run did not train.** The reason is below and under the results table."
            if n == 1
            else f"**Failed: none of the {n} runs trained.** The reasons are below and under the results table."
        )
        view.bar_text, view.fraction = "failed", 1.0
    else:
        view.headline = (
            f"**Done: {n} run(s) trained.**"
            if not failed
            else (
                f"**Done: {len(trained)} of {n} runs trained, {len(failed)} failed** (the reasons are under the table)."
            )
        )
        view.bar_text, view.fraction = "done", 1.0
    try:
        view.files = write_downloads(view.results)
        saved = [r for r in trained if r.final_epoch]
        view.log.append(
            "Downloads: the results table (CSV, JSON) and a zip of the run folders"
            + (" with weights. The trained runs can now be picked on the Predict tab (only by you)." if saved else ".")
        )
    except OSError as err:
        view.log.append(warn_md(f"Could not write the downloads ({type(err).__name__})."))
    try:  # the visitor's quota and the server's cap and expiry, after the downloads hold this comparison
        view.log += [warn_md(line) for line in visitors.after_run(ctx, visitor)]
    except OSError:
        pass
    return view.outputs(full=True)


# --------------------------------------------------------------------------- the handlers


class _Job:
    """The state of one comparison that must outlive a cancelled page (see `_finish_in_background`)."""

    def __init__(self):
        self.view: _View | None = None
        self.stream = None  # the engine's event stream (compare.run_plan)
        self.scratch: Path | None = None
        self.ticket = None  # its place in the fair queue, held until the engine has stopped and saved
        self.dataset = None  # for the confusion gallery, made when the runs are over (also after a Stop)


def _release(ctx: Context, job: _Job) -> None:
    if job.scratch is not None:
        shutil.rmtree(job.scratch, ignore_errors=True)
    if job.ticket is not None:
        ctx.queue.leave(job.ticket)


def _remember_gallery(ctx: Context, visitor, view: _View, dataset) -> None:
    """Keep what the confusion gallery needs of this comparison (its note, if any, goes to the status)."""
    note = gallery_ui.remember(ctx, visitor, view.results, dataset)
    if note:
        view.log.append(warn_md(note))


def _finish_in_background(ctx: Context, session: str, visitor, handle, job: _Job) -> None:
    """After a cancel (Stop, closed tab): let the engine stop at its next step and save, off the event loop.

    Gradio closes a cancelled generator from its event-loop thread, so the slow part (the engine
    saving weights, the downloads) runs here; the page picks the result up after Stop.
    """
    outputs = None
    try:
        if job.stream is not None and job.view is not None:
            for ev in job.stream:  # the stop flag is set: the current run stops within one step, the rest not at all
                job.view.event(ev)
        if job.view is not None:
            if job.dataset is not None:
                _remember_gallery(ctx, visitor, job.view, job.dataset)
            outputs = _wrap_up(ctx, visitor, job.view, stopped=True)
    except Exception as err:  # never let a background thread die silently
        message(err)
    finally:
        SESSIONS.finish(session, handle, outputs)
        _release(ctx, job)


def _status_only(text: str) -> tuple:
    return (text, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())


def _limits_line(ctx: Context) -> str | None:
    most = ctx.env.max_run_s
    if most and most > 0:
        return (
            f"On this server each run stops after at most {_fmt_s(most)} (what it reached is kept), and "
            f"takes at most {ctx.env.max_epochs} epochs."
        )
    return None


def finetune(ctx: Context, session: str, values: Mapping[str, Any], visitor: visitors.Visitor | None = None):
    """Generator: wait for the machine in the fair queue (in the app's own process), then `train`; yields
    (status, progress, curves, table, confusion, accuracy-vs-latency, files)."""
    visitor = visitor or visitors.resolve(None, None)
    job = _Job()
    try:  # a comparison that cannot run, or a visitor over their share, never gets a stop flag or a place in line
        c = read_comparison(ctx, values, visitor)
        if on_zerogpu():  # a shared GPU is lent for a fixed time: refuse a plan that cannot fit it, now
            gpu_seconds_for(c, ctx)
        job.ticket = ctx.queue.join(visitor.id, "train")
    except Exception as err:
        text = message(err)
        gr.Warning(text)
        yield _blank_outputs(warn_md(text))
        return
    handle = SESSIONS.start(session)
    training_started = False
    try:
        for position, eta in ctx.queue.waits(job.ticket):
            if handle.stop.is_set():
                break
            yield _status_only(wait_text("train", position, eta))
        if handle.stop.is_set():
            yield _stopped_before()
            return
        training_started = True  # from here on, `train` releases the stop flag and the place in line
        yield from train(ctx, session, handle, c, visitor, job)
    finally:
        if not training_started:  # stopped (Stop, closed tab) while waiting
            handle.stop.set()
            SESSIONS.finish(session, handle, _stopped_before() if handle.user_stop.is_set() else None)
            _release(ctx, job)


def _stopped_before() -> tuple:
    return _blank_outputs("**Stopped** before the run started: nothing ran.")


def gpu_seconds_for(c: Comparison, ctx: Context) -> int:
    """The GPU time to ask ZeroGPU for, from the plan's MACs and the images it will see (an upper bound).

    Raises:
        CNNCompareError: the plan cannot fit CNNCOMPARE_GPU_LIMIT_S; the message says what to shrink.
    """
    per_class = c.max_per_class or 200  # shapes: 200 per class; an upload: its cap (or a generous guess)
    n = per_class * (8 if c.dataset == "shapes" else 10 if c.dataset == "cifar10" else 20)
    n_val = max(1, n // 5)
    return compare.gpu_duration(c.plan, n - n_val, n_val, ctx.env.gpu_limit_s)


def _train_duration(ctx: Context, session: str, handle, c: Comparison, *args) -> int:
    try:
        return gpu_seconds_for(c, ctx)
    except CNNCompareError:
        return int(ctx.env.gpu_limit_s)  # refused before the call (see `finetune`); never reached there


@gpu(duration=_train_duration)
def train(ctx: Context, session: str, handle, c: Comparison, visitor: visitors.Visitor, job: _Job):
    """Generator: load the dataset, fine-tune each planned run in turn into the visitor's folder, write the
    downloads; the stop flag is checked between steps, and a cancelled page lets the engine save in the
    background (`_finish_in_background`)."""
    final = None
    finished = False
    try:
        try:
            yield _blank_outputs(f"**Loading the dataset ({c.dataset})…**")
            ds, job.scratch = load_data(ctx, c)
            job.dataset = ds
        except Exception as err:
            text = message(err)
            gr.Warning(text)
            final = _blank_outputs(warn_md(text))
            finished = True
            yield final
            return
        view = job.view = _View([run.label for run in c.plan.runs()], session)
        skipped = len(ds.report.skipped)
        view.log.append(
            f"Dataset **{ds.name}**: {len(ds.classes)} classes, {len(ds.train)} training and "
            f"{len(ds.val)} validation images"
            + (f"; {skipped} file(s) skipped (see the dataset report)." if skipped else ".")
        )
        limits = _limits_line(ctx)
        if limits:
            view.log.append(limits)
        last_yield = 0.0
        out_dir = visitors.visitor_dir(ctx, visitor, create=True)  # this visitor's own folder
        job.stream = compare.run_plan(c.plan, ds, out_dir=out_dir, should_stop=handle.stop.is_set)
        for ev in job.stream:
            if view.event(ev):
                yield view.outputs(full=True)
                last_yield = time.monotonic()
            elif time.monotonic() - last_yield >= YIELD_EVERY_S:
                last_yield = time.monotonic()
                yield view.outputs(full=False)
        job.stream = None  # all runs are over: nothing left to finish if the page goes away now
        _remember_gallery(ctx, visitor, view, ds)  # before the unpacked upload is released
        final = _wrap_up(ctx, visitor, view, stopped=handle.stop.is_set())
        finished = True
        yield final
    finally:
        handle.stop.set()  # whatever happens, this session's run ends at its next step
        if finished or job.view is None:
            if final is None and handle.user_stop.is_set():  # stopped while loading the dataset
                final = _stopped_before()
            SESSIONS.finish(session, handle, final)
            _release(ctx, job)
        else:  # cancelled (Stop, closed tab) or crashed mid-run
            threading.Thread(
                target=_finish_in_background,
                args=(ctx, session, visitor, handle, job),
                name=f"cnncompare-stop-{session[:8]}",
                daemon=True,
            ).start()


def final_page(session: str, timeout_s: float = 120.0):
    """After Stop: the final page of this session's run, once the engine has stopped and saved it."""
    handle = SESSIONS.last(session)
    if handle is None or not handle.user_stop.is_set():
        return (gr.skip(),) * 7
    if not handle.done.wait(timeout_s) or handle.outputs is None:
        return (gr.skip(),) * 7
    return handle.outputs


def estimate(ctx: Context, values: Mapping[str, Any]) -> str:
    """A time estimate for every planned run, from a few real training steps on random data."""
    scratch = None
    try:
        c = read_comparison(ctx, values)
        ds, scratch = load_data(ctx, c)
        s = c.plan.settings
        lines = [
            f"**Estimate** for {len(ds.train)} training and {len(ds.val)} validation images, "
            f"{s.epochs} epoch(s) at {s.size} px:",
            "",
            "| run | time | how |",
            "|---|---|---|",
        ]
        total = 0.0
        for run in c.plan.runs():
            rs = run.settings
            try:
                est = training.estimate(run.entry, rs, len(ds.train), len(ds.val), len(ds.classes))
            except CNNCompareError as err:
                lines.append(f"| {run.label} | – | {warn_md(str(err))} |")
                continue
            t = min(est.total_s, rs.time_budget_s) if rs.time_budget_s else est.total_s
            total += t
            over = rs.time_budget_s and est.total_s > t
            budget = f" (stops at the {_fmt_s(rs.time_budget_s)} budget)" if over else ""
            lines.append(f"| {run.label} | ~{_fmt_s(t)}{budget} | {est.note} on {est.device} |")
        lines += [
            "",
            f"**Total: about {_fmt_s(total)}**, counting each run's start, epochs, evaluation and save. "
            "It comes from timing a few real steps of each model; on a machine doing nothing else, runs land "
            "within about ±25 % of it.",
        ]
        if SESSIONS.active:
            lines.append(warn_md("A fine-tuning run is using this machine right now, so this estimate is pessimistic."))
        waiting = ctx.queue.waiting("train")
        if waiting:
            lines.append(f"{waiting} training(s) are waiting for the machine: yours would start after them.")
        return "\n".join(lines)
    except Exception as err:
        text = message(err)
        gr.Warning(text)
        return warn_md(text)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def queued_estimate(ctx: Context, visitor: visitors.Visitor, values: Mapping[str, Any]):
    """Generator: `estimate` once the estimate lane has a slot (waiting pages before)."""
    try:
        ticket = ctx.queue.join(visitor.id, "estimate")
    except CNNCompareError as err:
        gr.Warning(str(err))
        yield warn_md(str(err))
        return
    try:
        for position, eta in ctx.queue.waits(ticket):
            yield wait_text("estimate", position, eta)
        yield estimate(ctx, values)
    finally:
        ctx.queue.leave(ticket)


# --------------------------------------------------------------------------- the page


# After a Learn preset fills the form, bring the top of the tab (the preset's text, Start, the curves) into view.
SCROLL_TO_TOP_JS = (
    "() => { const el = document.getElementById('ft-main'); if (el) el.scrollIntoView({block: 'start'}); }"
)


def build(ctx: Context) -> SimpleNamespace:
    """The tab. Returns its components; `.form` is the form (name -> component) the handlers and Learn use.

    Two columns: the set-up on the left; on the right Estimate / Start / Stop, the progress bar, the status and
    the live curves, which stay in view (CSS `.cc-sticky`) while the set-up scrolls, so a 1280x720 projector
    shows all of them at once. The results follow below, full width.
    """
    form: dict[str, gr.components.Component] = {}
    with gr.Row(elem_id="ft-main", equal_height=False):
        with gr.Column(scale=5, min_width=320, elem_id="ft-setup"):
            preset_md = gr.Markdown(elem_classes=["cc-preset"], elem_id="ft-preset", visible=False)
            gr.Markdown(
                "Train several models on one dataset, each with its own freeze policy, and compare them. On a CPU, "
                "small inputs (64 px), few epochs and a cap on images per class keep a run to a minute or two; "
                "**Estimate** says how long. One training uses the machine at a time; others wait in line.",
                elem_classes=["cc-note"],
            )
            form["dataset"] = gr.Radio(DATASETS, value="shapes", label="Dataset", elem_id="ft-dataset")
            form["zip_file"] = UploadedFile(
                label="Your images (.zip with one folder per class; choosing it selects 'your images')",
                file_types=[".zip"],
                type="filepath",
                height=150,
                elem_id="ft-zip",
            )
            report_md = gr.Markdown(elem_classes=["cc-note", "cc-report"], elem_id="ft-data-report")
            form["max_per_class"] = forms.widget(IMAGES_PER_CLASS)
            form["models"] = gr.Textbox(
                value=DEFAULT_MODELS,
                lines=3,
                elem_id="ft-models",
                label="Models: model@freeze, separated by commas or one per line",
                info="freeze: none | head | stages:K | layers:N. Per-run settings may "
                "follow, e.g. 'resnet18@none optimizer=sgd lr=0.05 init=he'.",
            )
            form |= forms.form(["freeze"], freeze=WIDGET_OVERRIDES["freeze"])
            with gr.Accordion("Training settings", open=True):
                for names in TRAINING_ROWS:
                    with gr.Row():
                        form |= forms.form(names, **{n: WIDGET_OVERRIDES[n] for n in names if n in WIDGET_OVERRIDES})
                    if names == TRAINING_ROWS[1]:  # the schedule's curve, right under its settings
                        lr_plot = gr.Plot(
                            lr_figure(forms.values_of(form)), show_label=False, elem_id="ft-lr", min_width=200
                        )
            with gr.Accordion(
                "Your own weights (used when 'Start from ImageNet weights' is ticked)", open=False, elem_id="ft-weights"
            ):
                weights = weights_ui.build(ctx)
        with gr.Column(scale=6, min_width=320, elem_id="ft-live", elem_classes=["cc-sticky"]):
            with gr.Row(elem_classes=["cc-actions"]):
                estimate_btn = gr.Button("Estimate time", elem_id="ft-estimate", min_width=90)
                start_btn = gr.Button("Start", variant="primary", elem_id="ft-start", min_width=90)
                stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop", min_width=90)
            progress = gr.HTML(progress_html(0.0), elem_id="ft-progress")
            status = gr.Markdown(
                "Set up a comparison and press **Start**.", elem_classes=["cc-note", "cc-status"], elem_id="ft-status"
            )
            curves = gr.Plot(live_curves([]), show_label=False, elem_id="ft-curves")
    table = gr.Dataframe(
        headers=RESULT_COLUMNS,
        label="Results (the CSV download has every setting and metric)",
        interactive=False,
        wrap=True,
        elem_id="ft-table",
        column_widths=[f"{w}px" for w in RESULT_WIDTHS],
        pinned_columns=1,
    )
    notes_md = gr.Markdown(RESULTS_LEGEND, elem_classes=["cc-note", "cc-legend"], elem_id="ft-notes")
    confusion = gr.Plot(confusion_figure([]), show_label=False, elem_id="ft-confusion")
    with gr.Accordion("The images behind the confusion matrix", open=True, elem_id="ft-gallery-box"):
        gallery = gallery_ui.build(ctx)
    with gr.Row():
        acc_lat = gr.Plot(label="Accuracy vs. cost", elem_id="ft-acclat", scale=3)
        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="ft-files", scale=2)
    outputs = [status, progress, curves, table, confusion, acc_lat, files]

    # The form's values arrive as one mapping, by name (inputs_kwargs=form): the names are also the API's
    # parameter names, so clients call predict(dataset=..., models=..., epochs=..., api_name="/finetune").
    # `visitor` is the key kept in the browser (API clients may leave it out: one visitor per session).
    state = ctx.visitor_state
    named = {**form, "visitor": state} if state is not None else form

    def run_finetune(request: gr.Request, visitor=None, **values):
        """Fine-tune each model of `models` on the dataset in turn; streams status, curves and results."""
        try:
            who = visitors.resolve(visitor, request)
        except CNNCompareError as err:
            yield _blank_outputs(warn_md(str(err)))
            return
        yield from finetune(ctx, session_of(request), values, who)

    def run_estimate(request: gr.Request, visitor=None, **values):
        """How long each planned run would take here, from two timed training steps per model."""
        try:
            who = visitors.resolve(visitor, request)
        except CNNCompareError as err:
            yield warn_md(str(err))
            return
        yield from queued_estimate(ctx, who, values)

    def run_report(request: gr.Request, visitor=None, **values):
        try:
            who = visitors.resolve(visitor, request)
        except CNNCompareError as err:
            yield warn_md(str(err))
            return
        yield from queued_report(ctx, who, values)

    def stop(request: gr.Request):
        stopped = SESSIONS.stop(session_of(request))
        return "**Stopping…** the current step finishes and is saved." if stopped else "Nothing is running."

    def show_final(request: gr.Request):
        return final_page(session_of(request))

    def show_notes(table_value, request: gr.Request):
        empty = table_value is None or len(table_value) == 0
        return RESULTS_LEGEND if empty else (NOTES.get(session_of(request)) or RESULTS_LEGEND)

    # concurrency_limit=None: these start at once in gradio's queue and wait in the app's fair queue
    # (one training at a time, per-visitor limits), so one client can never fill gradio's queue.
    start_event = start_btn.click(
        run_finetune,
        None,
        outputs,
        inputs_kwargs=named,
        api_name="finetune",
        concurrency_limit=None,
        concurrency_id="train",
        show_progress="full",
        show_progress_on=[status],
    )
    estimate_btn.click(
        run_estimate,
        None,
        status,
        inputs_kwargs=named,
        api_name="estimate",
        concurrency_limit=None,
        concurrency_id="estimate",
        show_progress_on=[status],
    )
    stop_btn.click(stop, None, status, api_name="stop", cancels=[start_event], queue=False).then(
        show_final, None, outputs, api_visibility="private", concurrency_limit=None, show_progress="hidden"
    ).then(gallery.refresh, gallery.refresh_inputs, gallery.outputs, api_visibility="private")
    start_event.then(gallery.refresh, gallery.refresh_inputs, gallery.outputs, api_visibility="private")
    table.change(show_notes, table, notes_md, api_visibility="private", queue=False, show_progress="hidden")
    # An upload selects 'your images' (Estimate and Start then use it) and shows what the zip holds.
    report_kw = dict(
        inputs_kwargs=named, api_visibility="private", concurrency_limit=None, show_progress_on=[report_md]
    )
    form["zip_file"].upload(lambda: "zip", None, form["dataset"], api_visibility="private", queue=False).then(
        run_report, None, report_md, **report_kw
    )
    form["zip_file"].clear(
        lambda: ("shapes", ""), None, [form["dataset"], report_md], api_visibility="private", queue=False
    )
    form["dataset"].input(run_report, None, report_md, **report_kw)
    # The learning-rate curve follows the form.
    lr_inputs = {name: form[name] for name in LR_FIELDS}
    gr.on(
        [form[name].change for name in LR_FIELDS],
        lambda **values: lr_figure(values),
        None,
        lr_plot,
        inputs_kwargs=lr_inputs,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    preset_md.change(None, None, None, js=SCROLL_TO_TOP_JS, api_visibility="private", queue=False)
    return SimpleNamespace(
        form=form,
        preset_md=preset_md,
        status=status,
        table=table,
        notes=notes_md,
        report=report_md,
        lr_plot=lr_plot,
        gallery=gallery,
        weights=weights,
        files=files,
        start_event=start_event,
        stop=stop_btn,
    )
