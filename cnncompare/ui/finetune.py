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
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd

from .. import compare, data, plots, training
from ..errors import CNNCompareError
from ..settings import Setting, coerce
from . import forms, visitors
from .common import SESSIONS, Context, file_path, message, rounded, session_of, styled, warn_md
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
    ["epochs", "batch_size", "size"],
    ["pretrained", "augment"],
    ["init", "head", "time_budget_s"],
]
# ... except where the page departs from the schema (whose defaults are the CLI's): a classroom run
# starts from ImageNet weights, and the app falls back to random weights where it has none.
WIDGET_OVERRIDES = dict(
    freeze=dict(choices=FREEZE_SUGGESTIONS, label="Default freeze policy (for models without @)"),
    pretrained=dict(value=True, info="offline: random weights instead, said so in the status"),
)

# img/s is the steady state; the first steps (cuDNN autotuning on a GPU, warm-up on a CPU) are "warm-up s"
RESULT_COLUMNS = [
    "run",
    "weights",
    "top-1 %",
    "top-5 %",
    "epochs",
    "train s",
    "img/s",
    "warm-up s",
    "trainable",
    "params",
    "MACs (G)",
    "latency ms",
    "cache",
    "note",
    "folder",
]
RESULT_WIDTHS = ["13%", "8%", "5%", "5%", "5%", "5%", "6%", "5%", "8%", "8%", "5%", "6%", "5%", "8%", "7%"]
RESULT_FORMATS = {
    "top-1 %": "{:.1f}",
    "top-5 %": "{:.1f}",
    "epochs": "{}",
    "train s": "{:.1f}",
    "img/s": "{:,.0f}",
    "warm-up s": "{:.1f}",
    "trainable": "{:,}",
    "params": "{:,}",
    "MACs (G)": "{:.3f}",
    "latency ms": "{:.1f}",
}
YIELD_EVERY_S = 1.0


# --------------------------------------------------------------------------- reading the form


@dataclasses.dataclass
class Comparison:
    """What the form asks for: a dataset and the engine's plan of runs."""

    dataset: str  # shapes | zip | cifar10 | cifar100
    zip_path: str | None
    max_per_class: int | None
    plan: compare.Plan


def read_comparison(ctx: Context, values: Mapping[str, Any]) -> Comparison:
    """The form's values (by name) as a dataset choice and a checked `compare.Plan`, within this server's limits.

    Raises:
        CNNCompareError: the first problem (unknown dataset, no upload, a bad setting, an unknown
        model or freeze policy, too many runs, a limit of the server), in one sentence.
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
    return Comparison(source, zip_path if source == "zip" else None, cap or None, plan)


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
    seed = c.plan.settings.seed
    scratch = None
    if c.dataset == "zip":
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="upload-", dir=ctx.data_dir))
    try:
        if c.dataset == "zip":
            unpack = int(ctx.env.max_unpack_mb * 2**20) if ctx.env.max_unpack_mb > 0 else None
            ds = data.load_dataset(
                c.zip_path, work_dir=scratch, max_per_class=c.max_per_class, seed=seed, max_unpack_bytes=unpack
            )
        else:
            ds = data.load_dataset(
                c.dataset, work_dir=ctx.data_dir, max_per_class=c.max_per_class, seed=seed, download=not ctx.offline
            )
        if ctx.env.max_dataset_mpix > 0:
            data.check_dataset_size(ds, max(run.settings.size for run in c.plan.runs()), ctx.env.max_dataset_mpix)
        return ds, scratch
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- rendering


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 1:
        return "under 1 s"
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def progress_html(fraction: float, text: str = "") -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div class="cc-progress"><div class="cc-progress-bar" style="width:{pct:.1f}%"></div>'
        f'<span class="cc-progress-text">{pct:.0f} %{" · " + text if text else ""}</span></div>'
    )


def _weights_text(result: training.RunResult) -> str:
    src = result.weights_source or ""
    if src.startswith("random"):
        return "random init" + (f" ({result.config.get('init')})" if result.config.get("init") != "default" else "")
    return "ImageNet" if src else "–"


def _note(row: dict) -> str:
    """A failed run shows its error; a run that trained shows why it stopped early and its warnings."""
    if row["error"]:
        return row["error"]
    return "; ".join(p for p in (row["stopped"], row["warnings"]) if p)


def results_table(results: list[training.RunResult]) -> pd.DataFrame:
    rows = []
    for r, row in zip(results, compare.table_rows(results)):
        rows.append(
            {
                "run": row["run"],
                "weights": _weights_text(r),
                "top-1 %": rounded(row["val_top1"]),
                "top-5 %": rounded(row["val_top5"]),
                "epochs": row["epochs"],
                "train s": rounded(row["train_time_s"]),
                "img/s": rounded(row["images_per_s"], 0),
                "warm-up s": rounded(row["warmup_s"]),
                "trainable": row["trainable_params"],
                "params": row["params"],
                "MACs (G)": None if row["macs"] is None else round(row["macs"] / 1e9, 3),
                "latency ms": rounded(row["latency_ms"]),
                "cache": "yes" if row["feature_cache"] else "no",
                "note": _note(row),
                "folder": row["run_dir"] or "",
            }
        )
    return styled(pd.DataFrame(rows, columns=RESULT_COLUMNS, dtype=object), RESULT_FORMATS)


def _bold_label(ev: training.Event) -> str:
    """The engine's message with its run's label in bold ('**resnet18@none optimizer=sgd**: ...')."""
    prefix = f"{ev.label}:"
    return f"**{ev.label}**:{ev.message[len(prefix) :]}" if ev.label and ev.message.startswith(prefix) else ev.message


class _View:
    """What the page shows while a comparison runs; `outputs()` is one yield."""

    def __init__(self, labels: list[str]):
        self.labels = labels
        self.headline = ""
        self.log: list[str] = []
        self.fraction = 0.0
        self.bar_text = ""
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
        return plots.training_curves(series, title="Training loss and validation accuracy per epoch")

    def event(self, ev: training.Event) -> bool:
        """Take one engine event in; True when the page should be redrawn in full (a run ended)."""
        i, n = self.position(ev.label)
        run = f"**Run {i + 1} of {n}: {ev.label}**"
        if ev.kind == "start":
            self.headline, self.fraction = f"{run} — starting…", i / n
            self.log.append(_bold_label(ev))
        elif ev.kind == "info":
            self._infos.add(ev.message)
            self.log.append(_bold_label(ev))
        elif ev.kind == "step":
            self.fraction = (i + ev.progress) / n
            eta = f", about {_fmt_s(ev.eta_s)} left in this run" if ev.eta_s is not None else ""
            loss = f", loss {ev.loss:.3f}" if ev.loss is not None else ""
            self.headline = f"{run} — epoch {ev.epoch}/{ev.epochs}, step {ev.step}/{ev.steps}{loss}{eta}"
            self.bar_text = f"run {i + 1}/{n}, epoch {ev.epoch}/{ev.epochs}"
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
            self.fraction = (i + 1) / n
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
                self.log.append(warn_md(f"**{ev.label}**: {w}"))

    def outputs(self, full: bool):
        status, bar = self.status(), progress_html(self.fraction, self.bar_text)
        if not full:
            return status, bar, self.curves(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
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
            plots.confusion_matrices(items),
            plots.accuracy_vs_latency(points),
            self.files,
        )


def _blank_outputs(status: str):
    return (
        status,
        progress_html(0.0),
        plots.training_curves([]),
        pd.DataFrame(columns=RESULT_COLUMNS),
        plots.confusion_matrices([]),
        plots.accuracy_vs_latency([]),
        None,
    )


def write_downloads(results: list[training.RunResult]) -> list[str]:
    """The engine's export (results.csv, results.json, a zip of the run folders with weights), written for this
    visitor into a folder with a random name in gradio's upload folder: run folders are never served by path."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return [str(p) for p in compare.export(results, visitors.downloads_dir(), stamp=stamp)]


def _wrap_up(ctx: Context, visitor: visitors.Visitor, view: _View, stopped: bool) -> tuple:
    if stopped:
        view.headline = "**Stopped.** Finished epochs are saved; the table shows what each run reached."
        view.bar_text = "stopped"
    else:
        view.headline, view.bar_text, view.fraction = f"**Done: {len(view.labels)} run(s).**", "done", 1.0
    try:
        view.files = write_downloads(view.results)
        view.log.append(
            "Downloads: the results table (CSV, JSON) and a zip of the run folders with weights. "
            "Fine-tuned runs can now be picked on the Predict tab (only by you)."
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


def _release(ctx: Context, job: _Job) -> None:
    if job.scratch is not None:
        shutil.rmtree(job.scratch, ignore_errors=True)
    if job.ticket is not None:
        ctx.queue.leave(job.ticket)


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
        c = read_comparison(ctx, values)
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
        except Exception as err:
            text = message(err)
            gr.Warning(text)
            final = _blank_outputs(warn_md(text))
            finished = True
            yield final
            return
        view = job.view = _View([run.label for run in c.plan.runs()])
        view.log.append(
            f"Dataset **{ds.name}**: {len(ds.classes)} classes, {len(ds.train)} training and "
            f"{len(ds.val)} validation images."
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
            f"**Total: about {_fmt_s(total)}** (plus a few seconds per run to start and to save). "
            "Estimates come from timing two training steps; real runs vary by ±30 %.",
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


def build(ctx: Context) -> SimpleNamespace:
    """The tab. Returns its components; `.form` is the form (name -> component) the handlers and Learn use."""
    gr.Markdown(
        "Train several models on one dataset, each with its own freeze policy, and compare them. "
        "**Estimate** first: on a CPU, small inputs (64 px), few epochs and a cap on images per class "
        "keep a run to a minute or two. One training run uses the machine at a time; others wait in line."
    )
    preset_md = gr.Markdown(elem_classes=["cc-preset"], elem_id="ft-preset", visible=False)
    form: dict[str, gr.components.Component] = {}
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            form["dataset"] = gr.Radio(DATASETS, value="shapes", label="Dataset", elem_id="ft-dataset")
            form["zip_file"] = UploadedFile(
                label="Your images (.zip with one folder per class; used with 'your images')",
                file_types=[".zip"],
                type="filepath",
                elem_id="ft-zip",
            )
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
            with gr.Row():
                estimate_btn = gr.Button("Estimate time", elem_id="ft-estimate")
                start_btn = gr.Button("Start", variant="primary", elem_id="ft-start")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop")
        with gr.Column(scale=3):
            status = gr.Markdown(
                "Set up a comparison on the left and press **Start**.", elem_classes=["cc-note"], elem_id="ft-status"
            )
            progress = gr.HTML(progress_html(0.0), elem_id="ft-progress")
            curves = gr.Plot(plots.training_curves([]), label="Curves", elem_id="ft-curves")
    table = gr.Dataframe(
        headers=RESULT_COLUMNS,
        label="Results (the CSV download has every setting and metric)",
        interactive=False,
        wrap=True,
        elem_id="ft-table",
        column_widths=RESULT_WIDTHS,
    )
    confusion = gr.Plot(label="Confusion matrices", elem_id="ft-confusion")
    with gr.Row():
        acc_lat = gr.Plot(label="Accuracy vs. latency", elem_id="ft-acclat", scale=3)
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

    def stop(request: gr.Request):
        stopped = SESSIONS.stop(session_of(request))
        return "**Stopping…** the current step finishes and is saved." if stopped else "Nothing is running."

    def show_final(request: gr.Request):
        return final_page(session_of(request))

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
    )
    return SimpleNamespace(
        form=form, preset_md=preset_md, status=status, table=table, files=files, start_event=start_event, stop=stop_btn
    )
