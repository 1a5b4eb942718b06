"""Fine-tune tab: one dataset, several models (each with its freeze policy), live curves, results.

The Start handler is a generator: it iterates `compare.run_all(...)`, yields about once a
second, and checks a per-session stop flag. Stop both cancels the event and sets that flag,
so the run ends within one training step; what finished is saved in its run folder.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from .. import catalog, compare, data, models, plots, training
from ..errors import CNNCompareError
from .common import (MAX_RUNS, SESSIONS, Context, as_float, as_int, file_path, message, pretrained_available, rounded,
                     session_of, styled, warn_md)
from .gpu import gpu

DATASETS = [("shapes: drawn shapes, made here (offline)", "shapes"), ("your images: a .zip upload", "zip"),
            ("CIFAR-10 (needs a download)", "cifar10"), ("CIFAR-100 (needs a download)", "cifar100")]
RESULT_COLUMNS = ["run", "weights", "top-1 %", "top-5 %", "epochs", "train s", "img/s", "trainable", "params",
                  "MACs (G)", "latency ms", "cache", "note", "folder"]
RESULT_WIDTHS = ["13%", "8%", "6%", "6%", "5%", "6%", "6%", "9%", "9%", "5%", "7%", "5%", "8%", "7%"]
RESULT_FORMATS = {"top-1 %": "{:.1f}", "top-5 %": "{:.1f}", "epochs": "{}", "train s": "{:.1f}", "img/s": "{:,.0f}",
                  "trainable": "{:,}", "params": "{:,}", "MACs (G)": "{:.3f}", "latency ms": "{:.1f}"}
YIELD_EVERY_S = 1.0


@dataclasses.dataclass
class RunPlan:
    """One line of the models box: a compare.Entry (model, freeze policy, per-run settings) and its label."""

    label: str
    entry: compare.Entry


def parse_plan(text: str, default_freeze: str) -> list[RunPlan]:
    """'resnet18@head, vgg11@stages:2' or one run per line, e.g. 'resnet18@none optimizer=sgd lr=0.01'."""
    items = [s.strip() for chunk in (text or "").splitlines() for s in chunk.split(",") if s.strip()]
    if not items:
        raise CNNCompareError("Enter at least one model, e.g. resnet18@head (model@freeze policy).")
    if len(items) > MAX_RUNS:
        raise CNNCompareError(f"At most {MAX_RUNS} runs at a time (got {len(items)}).")
    plans, labels = [], set()
    for item in items:
        entry = compare.Entry.parse(item)
        catalog.get(entry.model)  # unknown names fail now, with suggestions
        models.FreezePolicy.parse(entry.freeze or default_freeze)
        label = base = entry.label(default_freeze)
        n = 2
        while label in labels:
            label, n = f"{base} #{n}", n + 1
        labels.add(label)
        plans.append(RunPlan(label, entry))
    return plans


@dataclasses.dataclass
class Settings:
    dataset: str
    zip_path: str | None
    max_per_class: int | None
    base: training.TrainConfig
    plans: list[RunPlan]


def read_settings(dataset, zip_file, models_text, freeze, max_per_class, optimizer, lr, epochs, batch_size, size,
                  augment, pretrained, init, head, time_budget_s) -> Settings:
    source = (dataset or "shapes").strip().lower()
    if source not in {v for _, v in DATASETS}:
        raise CNNCompareError(f"Unknown dataset '{dataset}': choose shapes, zip, cifar10 or cifar100.")
    zip_path = file_path(zip_file)
    if source == "zip" and not zip_path:
        raise CNNCompareError("Upload a .zip of your images first (one folder per class inside).")
    freeze = (freeze or "head").strip() or "head"
    models.FreezePolicy.parse(freeze)
    cap = as_int(max_per_class, "Images per class", 0, None, default=0)
    budget = as_float(time_budget_s, "Time budget", default=0.0)
    base = training.TrainConfig(
        model="", freeze=freeze, head=head or "linear", pretrained=bool(pretrained), init=init or "default",
        optimizer=optimizer or "adam", lr=as_float(lr, "Learning rate", default=1e-3),
        batch_size=as_int(batch_size, "Batch size", 1, 1024, default=32), epochs=as_int(epochs, "Epochs", 1, 200, default=3),
        size=as_int(size, "Input size", 16, 512, default=64), augment=bool(augment),
        time_budget_s=budget if budget > 0 else None)
    plans = parse_plan(models_text, freeze)
    return Settings(source, zip_path, cap or None, base, plans)


def load_data(ctx: Context, s: Settings) -> tuple[data.LoadedData, Path | None]:
    """The dataset, plus a scratch folder to delete afterwards (unpacked uploads)."""
    if s.dataset == "zip":
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="upload-", dir=ctx.data_dir))
        try:
            return data.load_dataset(s.zip_path, work_dir=scratch, max_per_class=s.max_per_class,
                                     seed=s.base.seed), scratch
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return data.load_dataset(s.dataset, work_dir=ctx.data_dir, max_per_class=s.max_per_class, seed=s.base.seed,
                             download=not models.offline()), None


def config_for(s: Settings, plan: RunPlan, weights_ok: dict[str, bool]) -> training.TrainConfig:
    cfg = plan.entry.config(s.base)
    if cfg.pretrained and not weights_ok.get(cfg.model, True):
        cfg = dataclasses.replace(cfg, pretrained=False)
    return cfg


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 1:
        return "under 1 s"
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def progress_html(fraction: float, text: str = "") -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="cc-progress"><div class="cc-progress-bar" style="width:{pct:.1f}%"></div>'
            f'<span class="cc-progress-text">{pct:.0f} %{" · " + text if text else ""}</span></div>')


def _weights_text(result: training.RunResult) -> str:
    src = result.weights_source or ""
    if src.startswith("random"):
        return "random init" + (f" ({result.config.get('init')})" if result.config.get("init") != "default" else "")
    return "ImageNet" if src else "–"


def results_table(done: list[tuple[RunPlan, training.RunResult]]) -> pd.DataFrame:
    rows = []
    for plan, r in done:
        row = compare.table_rows([r])[0]
        rows.append({"run": plan.label, "weights": _weights_text(r), "top-1 %": rounded(row["val_top1"]),
                     "top-5 %": rounded(row["val_top5"]), "epochs": row["epochs"], "train s": rounded(row["train_time_s"]),
                     "img/s": rounded(row["images_per_s"], 0), "trainable": row["trainable_params"],
                     "params": row["params"], "MACs (G)": None if row["macs"] is None else round(row["macs"] / 1e9, 3),
                     "latency ms": rounded(row["latency_ms"]), "cache": "yes" if row["feature_cache"] else "no",
                     "note": row["error"] or (row["stopped"] or ""),
                     "folder": Path(row["run_dir"]).name if row["run_dir"] else ""})
    return styled(pd.DataFrame(rows, columns=RESULT_COLUMNS, dtype=object), RESULT_FORMATS)


def write_downloads(ctx: Context, session: str, done: list[tuple[RunPlan, training.RunResult]]) -> list[str]:
    """results.csv, results.json and a zip of the run folders (weights included), under the runs folder."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    ctx.comparisons_dir.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f"{stamp}-{session[:6]}-", dir=ctx.comparisons_dir))
    rows = []
    for plan, r in done:
        row = compare.table_rows([r])[0]
        rows.append({"run": plan.label, **row, "weights": r.weights_source, "pretrained": r.config.get("pretrained"),
                     "optimizer": r.config.get("optimizer"), "lr": r.config.get("lr"), "init": r.config.get("init"),
                     "head": r.config.get("head"), "size": r.config.get("size")})
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["run"])
        writer.writeheader()
        writer.writerows(rows)
    json_path = out / "results.json"
    json_path.write_text(json.dumps([{"run": plan.label, **r.to_dict()} for plan, r in done], indent=2, default=str))
    zip_path = out / f"cnncompare-runs-{stamp}.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(csv_path, "results.csv", compress_type=zipfile.ZIP_DEFLATED)
        zf.write(json_path, "results.json", compress_type=zipfile.ZIP_DEFLATED)
        for _, r in done:
            if not r.run_dir or not Path(r.run_dir).is_dir():
                continue
            run_dir = Path(r.run_dir)
            for f in sorted(run_dir.rglob("*")):
                if f.is_file():
                    # weights are incompressible floats: store them, deflate the text files
                    method = zipfile.ZIP_STORED if f.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
                    zf.write(f, f"{run_dir.name}/{f.relative_to(run_dir).as_posix()}", compress_type=method)
    return [str(csv_path), str(json_path), str(zip_path)]


def _for_run(plan: RunPlan, ev: training.Event) -> str:
    """The engine's message, naming the run ('resnet18@none optimizer=sgd') instead of just the model."""
    prefix = f"{ev.model}:"
    return f"**{plan.label}**:{ev.message[len(prefix):]}" if ev.message.startswith(prefix) else ev.message


class _View:
    """What the page shows while a comparison runs; `outputs()` is one yield."""

    def __init__(self, plans: list[RunPlan]):
        self.plans = plans
        self.headline = ""
        self.log: list[str] = []
        self.fraction = 0.0
        self.bar_text = ""
        self.histories: dict[str, list[dict]] = {p.label: [] for p in plans}
        self.done: list[tuple[RunPlan, training.RunResult]] = []
        self.files: list[str] | None = None

    def status(self) -> str:
        parts = [self.headline] + [f"- {line}" for line in self.log[-12:]]
        return "\n".join(p for p in parts if p)

    def curves(self):
        series = [{"label": label, "history": h} for label, h in self.histories.items()]
        return plots.training_curves(series, title="Training loss and validation accuracy per epoch")

    def ended(self, plan: RunPlan, ev: training.Event) -> None:
        r = ev.result
        self.done.append((plan, r))
        if r.history:
            self.histories[plan.label] = list(r.history)
        self.log.append(warn_md(_for_run(plan, ev)) if r.error else _for_run(plan, ev))

    def outputs(self, full: bool):
        status, bar = self.status(), progress_html(self.fraction, self.bar_text)
        if not full:
            return status, bar, self.curves(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        items = [{"label": p.label, "classes": r.classes, "confusion": r.confusion, "val_top1": r.val_top1}
                 for p, r in self.done if r.confusion]
        points = [{"label": p.label, "val_top1": r.val_top1, "latency_ms": r.latency_ms,
                   "trainable_params": r.trainable_params} for p, r in self.done]
        return (status, bar, self.curves(), results_table(self.done), plots.confusion_matrices(items),
                plots.accuracy_vs_latency(points), self.files)


def _blank_outputs(status: str):
    return (status, progress_html(0.0), plots.training_curves([]), pd.DataFrame(columns=RESULT_COLUMNS),
            plots.confusion_matrices([]), plots.accuracy_vs_latency([]), None)


def _wrap_up(ctx: Context, session: str, view: _View, stopped: bool) -> tuple:
    n = len(view.plans)
    if stopped:
        view.headline = "**Stopped.** Finished epochs are saved; the table shows what each run reached."
        view.bar_text = "stopped"
        ran = {p.label for p, _ in view.done}
        skipped = [p.label for p in view.plans if p.label not in ran]
        if skipped:
            view.log.append(f"Not started (stopped before their turn): {', '.join(skipped)}.")
    else:
        view.headline, view.bar_text, view.fraction = f"**Done: {n} run(s).**", "done", 1.0
    try:
        view.files = write_downloads(ctx, session, view.done)
        view.log.append("Downloads: the results table (CSV, JSON) and a zip of the run folders with weights. "
                        "Fine-tuned runs can now be picked on the Predict tab.")
    except OSError as err:
        view.log.append(warn_md(f"Could not write the downloads: {err}"))
    return view.outputs(full=True)


class _Job:
    """The state of one comparison that must outlive a cancelled page (see `_finish_in_background`)."""

    def __init__(self):
        self.view: _View | None = None
        self.stream = None  # the engine's event stream of the current run
        self.plan: RunPlan | None = None
        self.scratch: Path | None = None


def _finish_in_background(ctx: Context, session: str, handle, job: _Job) -> None:
    """After a cancel (Stop, closed tab): let the engine stop at its next step and save, off the event loop.

    Gradio closes a cancelled generator from its event-loop thread, so the slow part (the engine
    saving weights, the downloads) runs here; the page picks the result up after Stop.
    """
    outputs = None
    try:
        if job.stream is not None and job.view is not None:
            for ev in job.stream:  # the stop flag is set: the engine stops within one step
                if ev.kind == "end":
                    job.view.ended(job.plan, ev)
        if job.view is not None:
            outputs = _wrap_up(ctx, session, job.view, stopped=True)
    except Exception as err:  # never let a background thread die silently
        message(err)
    finally:
        SESSIONS.finish(session, handle, outputs)
        if job.scratch is not None:
            shutil.rmtree(job.scratch, ignore_errors=True)


def finetune(ctx: Context, session: str, dataset, zip_file, models_text, freeze, max_per_class, optimizer, lr, epochs,
             batch_size, size, augment, pretrained, init, head, time_budget_s):
    """Generator: fine-tune each planned run in turn; yields (status, progress, curves, table, confusion,
    accuracy-vs-latency, files)."""
    handle = SESSIONS.start(session)
    job = _Job()
    final = None
    finished = False
    try:
        try:
            s = read_settings(dataset, zip_file, models_text, freeze, max_per_class, optimizer, lr, epochs,
                              batch_size, size, augment, pretrained, init, head, time_budget_s)
            yield _blank_outputs(f"**Loading the dataset ({s.dataset})…**")
            ds, job.scratch = load_data(ctx, s)
        except Exception as err:
            text = message(err)
            gr.Warning(text)
            final = _blank_outputs(warn_md(text))
            finished = True
            yield final
            return
        view = job.view = _View(s.plans)
        view.log.append(f"Dataset **{ds.name}**: {len(ds.classes)} classes, {len(ds.train)} training and "
                        f"{len(ds.val)} validation images.")
        weights_ok = {name: pretrained_available(name)
                      for name in sorted({p.entry.model for p in s.plans}) if s.base.pretrained}
        missing = [n for n, ok in weights_ok.items() if not ok]
        if missing:
            view.log.append(warn_md(
                f"No pretrained ImageNet weights for {', '.join(missing)} here (offline): "
                + ("they start" if len(missing) > 1 else "it starts")
                + " from **random weights** instead. A frozen random backbone is only a weak, random feature "
                  "extractor, so expect low accuracy from 'head' runs."))
        n = len(s.plans)
        last_yield = 0.0
        for i, plan in enumerate(s.plans):
            cfg = config_for(s, plan, weights_ok)
            view.headline = f"**Run {i + 1} of {n}: {plan.label}** — starting…"
            view.fraction = i / n
            job.plan = plan
            job.stream = compare.run_all([plan.entry], ds, cfg, out_dir=ctx.runs_root, should_stop=handle.stop.is_set)
            for ev in job.stream:
                if ev.kind in ("start", "info"):
                    view.log.append(_for_run(plan, ev))
                elif ev.kind == "step":
                    view.fraction = (i + ev.progress) / n
                    eta = f", about {_fmt_s(ev.eta_s)} left in this run" if ev.eta_s is not None else ""
                    view.headline = (f"**Run {i + 1} of {n}: {plan.label}** — epoch {ev.epoch}/{ev.epochs}, "
                                     f"step {ev.step}/{ev.steps}, loss {ev.loss:.3f}{eta}")
                    view.bar_text = f"run {i + 1}/{n}, epoch {ev.epoch}/{ev.epochs}"
                elif ev.kind == "epoch":
                    view.histories[plan.label].append(dict(epoch=ev.epoch, train_loss=ev.loss, train_acc=ev.train_acc,
                                                           val_loss=ev.val_loss, val_top1=ev.val_top1))
                    view.headline = (f"**Run {i + 1} of {n}: {plan.label}** — epoch {ev.epoch}/{ev.epochs} done: "
                                     f"validation top-1 {ev.val_top1:.1f} %")
                elif ev.kind == "end":
                    job.stream = None  # this run is over: nothing left to finish if the page goes away now
                    view.ended(plan, ev)
                    view.fraction = (i + 1) / n
                    yield view.outputs(full=True)
                    last_yield = time.monotonic()
                    continue
                now = time.monotonic()
                if now - last_yield >= YIELD_EVERY_S:
                    last_yield = now
                    yield view.outputs(full=False)
            job.stream = None
        final = _wrap_up(ctx, session, view, stopped=handle.stop.is_set())
        finished = True
        yield final
    finally:
        handle.stop.set()  # whatever happens, this session's run ends at its next step
        if finished or job.view is None:
            SESSIONS.finish(session, handle, final)
            if job.scratch is not None:
                shutil.rmtree(job.scratch, ignore_errors=True)
        else:  # cancelled (Stop, closed tab) or crashed mid-run
            threading.Thread(target=_finish_in_background, args=(ctx, session, handle, job),
                             name=f"cnncompare-stop-{session[:8]}", daemon=True).start()


def final_page(session: str, timeout_s: float = 120.0):
    """After Stop: the final page of this session's run, once the engine has stopped and saved it."""
    handle = SESSIONS.last(session)
    if handle is None or not handle.user_stop.is_set():
        return (gr.skip(),) * 7
    if not handle.done.wait(timeout_s) or handle.outputs is None:
        return (gr.skip(),) * 7
    return handle.outputs


def estimate(ctx: Context, dataset, zip_file, models_text, freeze, max_per_class, optimizer, lr, epochs, batch_size,
             size, augment, pretrained, init, head, time_budget_s) -> str:
    """A time estimate for every planned run, from a few real training steps on random data."""
    scratch = None
    try:
        s = read_settings(dataset, zip_file, models_text, freeze, max_per_class, optimizer, lr, epochs, batch_size,
                          size, augment, pretrained, init, head, time_budget_s)
        ds, scratch = load_data(ctx, s)
        lines = [f"**Estimate** for {len(ds.train)} training and {len(ds.val)} validation images, "
                 f"{s.base.epochs} epoch(s) at {s.base.size} px:", "", "| run | time | how |", "|---|---|---|"]
        total = 0.0
        for plan in s.plans:
            cfg = config_for(s, plan, {})
            try:
                est = training.estimate(cfg, len(ds.train), len(ds.val), len(ds.classes))
            except CNNCompareError as err:
                lines.append(f"| {plan.label} | – | {warn_md(str(err))} |")
                continue
            t = min(est.total_s, cfg.time_budget_s) if cfg.time_budget_s else est.total_s
            total += t
            budget = f" (stops at the {_fmt_s(cfg.time_budget_s)} budget)" if cfg.time_budget_s and est.total_s > t else ""
            lines.append(f"| {plan.label} | ~{_fmt_s(t)}{budget} | {est.note} on {est.device} |")
        lines += ["", f"**Total: about {_fmt_s(total)}** (plus a few seconds per run to start and to save). "
                  "Estimates come from timing two training steps; real runs vary by ±30 %."]
        if SESSIONS.active:
            lines.append(warn_md("A fine-tuning run is using this machine right now, so this estimate is pessimistic."))
        return "\n".join(lines)
    except Exception as err:
        text = message(err)
        gr.Warning(text)
        return warn_md(text)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def build(ctx: Context) -> SimpleNamespace:
    gr.Markdown("Train several models on one dataset, each with its own freeze policy, and compare them. "
                "**Estimate** first: on a CPU, small inputs (64 px), few epochs and a cap on images per class "
                "keep a run to a minute or two. One training run uses the machine at a time; others wait in line.")
    preset_md = gr.Markdown(elem_classes=["cc-preset"], elem_id="ft-preset", visible=False)
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            dataset = gr.Radio(DATASETS, value="shapes", label="Dataset", elem_id="ft-dataset")
            zip_file = gr.File(label="Your images (.zip with one folder per class; used with 'your images')",
                               file_types=[".zip"], type="filepath", elem_id="ft-zip")
            max_per_class = gr.Number(value=60, precision=0, minimum=0, label="Images per class (0 = all)",
                                      info="a cap keeps CPU runs short; 20 % of each class is held out for validation")
            models_text = gr.Textbox(value="resnet18@head, alexnet@head", lines=3, elem_id="ft-models",
                                     label="Models: model@freeze, separated by commas or one per line",
                                     info="freeze: none | head | stages:K | layers:N. Per-run settings may follow, "
                                          "e.g. 'resnet18@none optimizer=sgd lr=0.05 init=he'.")
            freeze = gr.Dropdown(["head", "none", "stages:1", "stages:2", "stages:3", "layers:10"], value="head",
                                 allow_custom_value=True, label="Default freeze policy (for models without @)")
            with gr.Accordion("Training settings", open=True):
                with gr.Row():
                    optimizer = gr.Dropdown(list(training.OPTIMIZERS), value="adam", label="Optimizer",
                                            info="momentum = SGD with momentum 0.9")
                    lr = gr.Number(value=1e-3, label="Learning rate", minimum=0)
                with gr.Row():
                    epochs = gr.Number(value=3, precision=0, minimum=1, maximum=200, label="Epochs")
                    batch_size = gr.Number(value=32, precision=0, minimum=1, maximum=1024, label="Batch size")
                    size = gr.Number(value=64, precision=0, minimum=16, maximum=512, label="Input size (px)")
                with gr.Row():
                    pretrained = gr.Checkbox(value=True, label="Start from ImageNet weights",
                                             info="offline: random weights instead, said so in the status")
                    augment = gr.Checkbox(value=False, label="Augment (flips, resized crops)",
                                          info="turns the feature cache off")
                with gr.Row():
                    init = gr.Dropdown(list(models.INITS), value="default", label="Initialisation (from scratch)")
                    head = gr.Dropdown(list(models.HEADS), value="linear", label="Head",
                                       info="mlp: new 4096-4096 classifier")
                    time_budget = gr.Number(value=0, minimum=0, label="Time budget per run (s, 0 = none)")
            with gr.Row():
                estimate_btn = gr.Button("Estimate time", elem_id="ft-estimate")
                start_btn = gr.Button("Start", variant="primary", elem_id="ft-start")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop")
        with gr.Column(scale=3):
            status = gr.Markdown("Set up a comparison on the left and press **Start**.", elem_classes=["cc-note"],
                                 elem_id="ft-status")
            progress = gr.HTML(progress_html(0.0), elem_id="ft-progress")
            curves = gr.Plot(plots.training_curves([]), label="Curves", elem_id="ft-curves")
    table = gr.Dataframe(headers=RESULT_COLUMNS, label="Results (the CSV download has every setting and metric)",
                         interactive=False, wrap=True, elem_id="ft-table", column_widths=RESULT_WIDTHS)
    confusion = gr.Plot(label="Confusion matrices", elem_id="ft-confusion")
    with gr.Row():
        acc_lat = gr.Plot(label="Accuracy vs. latency", elem_id="ft-acclat", scale=3)
        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="ft-files", scale=2)

    inputs = [dataset, zip_file, models_text, freeze, max_per_class, optimizer, lr, epochs, batch_size, size, augment,
              pretrained, init, head, time_budget]

    @gpu(duration=600)
    def run_finetune(dataset, zip_file, models, freeze, max_per_class, optimizer, lr, epochs, batch_size, size,
                     augment, pretrained, init, head, time_budget_s, request: gr.Request):
        yield from finetune(ctx, session_of(request), dataset, zip_file, models, freeze, max_per_class, optimizer,
                            lr, epochs, batch_size, size, augment, pretrained, init, head, time_budget_s)

    def run_estimate(dataset, zip_file, models, freeze, max_per_class, optimizer, lr, epochs, batch_size, size,
                     augment, pretrained, init, head, time_budget_s):
        return estimate(ctx, dataset, zip_file, models, freeze, max_per_class, optimizer, lr, epochs, batch_size,
                        size, augment, pretrained, init, head, time_budget_s)

    def stop(request: gr.Request):
        stopped = SESSIONS.stop(session_of(request))
        return "**Stopping…** the current step finishes and is saved." if stopped else "Nothing is running."

    def show_final(request: gr.Request):
        return final_page(session_of(request))

    start_event = start_btn.click(
        run_finetune, inputs, [status, progress, curves, table, confusion, acc_lat, files], api_name="finetune",
        concurrency_limit=1, concurrency_id="train", show_progress="full", show_progress_on=[status])
    estimate_btn.click(run_estimate, inputs, status, api_name="estimate", concurrency_limit=1,
                       concurrency_id="estimate", show_progress_on=[status])
    outputs = [status, progress, curves, table, confusion, acc_lat, files]
    stop_btn.click(stop, None, status, api_name="stop", cancels=[start_event], queue=False).then(
        show_final, None, outputs, api_visibility="private", concurrency_limit=None, show_progress="hidden")
    return SimpleNamespace(inputs=inputs, dataset=dataset, zip_file=zip_file, models=models_text, freeze=freeze,
                           max_per_class=max_per_class, optimizer=optimizer, lr=lr, epochs=epochs,
                           batch_size=batch_size, size=size, augment=augment, pretrained=pretrained, init=init,
                           head=head, time_budget=time_budget, preset_md=preset_md, status=status, table=table,
                           start_event=start_event, stop=stop_btn)
