"""Fine-tune tab: one dataset, several models (each with its freeze policy), live curves, results.

The form is one dict name -> component (`form`): the training settings' widgets come from the
settings schema (`forms.py`), the page's own fields (dataset, upload, models, images per class)
are added by hand. Handlers get the form's values as one mapping keyed by those names (Gradio's
`inputs_kwargs=form`), which are also the API's parameter names.

This module is the page and its wiring. What the form asks for is read by `comparison.py` (the
engine's `compare.Plan`, within the server's limits); a comparison's life (the fair queue, the
engine's run, Stop, the final page) is `jobs.py`; what the page shows of it is `results.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import gradio as gr

from .. import plots
from ..errors import CNNCompareError
from ..executor import Job, work
from ..loop import lr_curve
from ..server import visitors
from ..settings import FreezePolicy, TrainSettings
from . import camera as camera_ui
from . import exports, forms, jobs, lenient
from . import gallery as gallery_ui
from . import weights as weights_ui
from .common import SESSIONS, Context, in_line, message, session_of, warn_md
from .comparison import (
    DATASETS,
    PAGE_IMAGES_PER_CLASS,
    camera_of,
    data_spec,
    decoded,
    eviction_note,
    read_comparison,
    read_dataset,
    spec_of,
    unpacking,
)
from .results import NOTES, RESULT_COLUMNS, RESULT_WIDTHS, RESULTS_LEGEND, blank_outputs, progress_html
from .uploads import UploadedFile

DEFAULT_MODELS = "resnet18@head, alexnet@head"
FREEZE_SUGGESTIONS = [value for value, _ in FreezePolicy.CHOICES]
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
LR_FIELDS = ("lr", "schedule", "warmup_epochs", "epochs")  # what the learning-rate curve follows


def lr_figure(values: Mapping[str, Any]):
    """The learning rate over the run, step by step, as the engine sets it (`loop.lr_curve`) for the form's
    learning rate, schedule, warm-up and epochs."""
    title = "Learning rate during the run"
    try:
        _, settings = forms.read_form({k: values[k] for k in LR_FIELDS if k in values})
    except CNNCompareError as err:
        return plots.message_figure(message(err), title, height=210)
    warm = f", {settings.warmup_epochs:g} warm-up epoch(s)" if settings.warmup_epochs else ""
    return plots.lr_schedule(*lr_curve(settings), f"Learning rate: {settings.schedule}{warm}")


def dataset_report(ctx: Context, values: Mapping[str, Any], visitor: visitors.Visitor | None = None) -> str:
    """The dataset as a run would load it: classes with their training/validation counts, skipped files with
    the reason, notes (the engine's `DataReport.summary`, as the CLI prints it); file names only."""
    try:
        _, data_settings = read_dataset(values, camera_of(ctx, visitor))
        info = decoded(ctx, data_spec(ctx, data_settings, TrainSettings().seed, visitor=visitor), visitor)
        head = (
            f"**Dataset report**: {len(info.classes)} classes, {info.n_train} training and {info.n_val} "
            "validation images (what Estimate and Start will use)."
        )
        return head + "\n\n" + info.report_md
    except Exception as err:
        return warn_md(message(err))


def estimate(ctx: Context, values: Mapping[str, Any], visitor: visitors.Visitor | None = None) -> str:
    """The engine's estimate of every planned run (`estimate.estimate_plan`: the CLI prints the same text), and
    what this server adds: a training running now, others waiting."""
    try:
        c = read_comparison(ctx, values, visitor)
        spec = spec_of(ctx, c, visitor)
        with unpacking(ctx, spec, visitor):  # the steps are timed in a worker, on the decoded dataset
            job = Job(work.FN + "estimate_text", {"plan": c.plan, "data_spec": spec}, kind="estimate")
            text = ctx.workers.call(dataclasses.replace(job, memory_mb=ctx.env.max_run_mb))
            # folded with one click, so a projector keeps Start, the status and the curves on one screen
            lines = [f"<details open><summary><b>Estimate</b> (click to fold)</summary>\n\n{text}\n\n</details>"]
        if visitor is not None and (note := eviction_note(ctx, c, visitor)):
            lines.append(warn_md(note))
        if SESSIONS.active:  # its steps were timed alone (the training paused), but the run will share the machine
            lines.append(
                "A fine-tuning run is using this machine right now: yours waits for it, and any run here pauses "
                "while other visitors' predictions run, so it may take longer than this."
            )
        waiting = ctx.queue.waiting("train")
        if waiting:
            lines.append(f"{waiting} training(s) are waiting for the machine: yours would start after them.")
        return "\n\n".join(lines)
    except Exception as err:
        text = message(err)
        gr.Warning(text)
        return warn_md(text)


def _same(text: str) -> str:
    return text


# --------------------------------------------------------------------------- the page


# After a Learn preset fills the form, bring the top of the tab (the preset's text, Start, the curves) into view.
SCROLL_TO_TOP_JS = (
    "() => { const el = document.getElementById('ft-main'); if (el) el.scrollIntoView({block: 'start'}); }"
)


FOLD_ESTIMATE_JS = "() => document.querySelectorAll('#ft-estimate-out details').forEach(d => { d.open = false; })"


def _setup_column(ctx: Context, form: dict) -> SimpleNamespace:
    """The set-up (left column): the dataset, the models and the training settings (added to `form`)."""
    preset_md = gr.Markdown(elem_classes=["cc-preset"], elem_id="ft-preset", visible=False)
    gr.Markdown(
        "Train several models on one dataset, each with its own freeze policy, and compare them. On a CPU, "
        "small inputs (64 px), few epochs and a cap on images per class keep a run to a minute or two; "
        "**Estimate** says how long. One training uses the machine at a time; others wait in line.",
        elem_classes=["cc-note"],
    )
    form["dataset"] = lenient.Radio(DATASETS, value="shapes", label="Dataset", elem_id="ft-dataset")
    form["zip_file"] = UploadedFile(
        label="Your images (.zip with one folder per class, or CIFAR's own .tar.gz; choosing it selects 'your images')",
        file_types=[".zip", ".gz", ".tgz"],
        type="filepath",
        height=150,
        elem_id="ft-zip",
    )
    camera = camera_ui.panel()
    report_md = gr.Markdown(elem_classes=["cc-note", "cc-report"], elem_id="ft-data-report")
    form["max_per_class"] = forms.widget("max_per_class", value=PAGE_IMAGES_PER_CLASS)
    form["models"] = gr.Textbox(
        value=DEFAULT_MODELS,
        lines=3,
        elem_id="ft-models",
        label="Models: model@freeze, separated by commas or one per line",
        info=f"freeze: {FreezePolicy.FORMS}. Per-run settings may "
        "follow, e.g. 'resnet18@none optimizer=sgd lr=0.05 init=he'.",
    )
    form |= forms.form(["freeze"], freeze=WIDGET_OVERRIDES["freeze"])
    with gr.Accordion("Training settings", open=True):
        for names in TRAINING_ROWS:
            with gr.Row():
                form |= forms.form(names, **{n: WIDGET_OVERRIDES[n] for n in names if n in WIDGET_OVERRIDES})
            if names == TRAINING_ROWS[1]:  # the schedule's curve, right under its settings
                lr_plot = gr.Plot(lr_figure(forms.values_of(form)), show_label=False, elem_id="ft-lr", min_width=200)
    with gr.Accordion(
        "Your own weights (used when 'Start from ImageNet weights' is ticked)", open=False, elem_id="ft-weights"
    ):
        weights = weights_ui.build(ctx)
    return SimpleNamespace(preset_md=preset_md, report_md=report_md, lr_plot=lr_plot, weights=weights, camera=camera)


def _live_column() -> SimpleNamespace:
    """The live column: Estimate / Start / Stop, the progress bar, the status and the curves."""
    with gr.Row(elem_classes=["cc-actions"]):
        estimate_btn = gr.Button("Estimate time", elem_id="ft-estimate", min_width=90)
        start_btn = gr.Button("Start", variant="primary", elem_id="ft-start", min_width=90)
        stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop", min_width=90)
    estimate_md = gr.Markdown(elem_classes=["cc-note", "cc-estimate"], elem_id="ft-estimate-out")
    progress = gr.HTML(progress_html(0.0), elem_id="ft-progress")
    status = gr.Markdown(
        "Set up a comparison and press **Start**.", elem_classes=["cc-note", "cc-status"], elem_id="ft-status"
    )
    curves = gr.Plot(plots.live_curves([]), show_label=False, elem_id="ft-curves")
    return SimpleNamespace(
        estimate_btn=estimate_btn,
        start_btn=start_btn,
        stop_btn=stop_btn,
        estimate_md=estimate_md,
        progress=progress,
        status=status,
        curves=curves,
    )


def _results(ctx: Context) -> SimpleNamespace:
    """The results, full width: the table, its notes, the confusion matrix and its images, the downloads."""
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
    confusion = gr.Plot(plots.confusion_figure([]), show_label=False, elem_id="ft-confusion")
    with gr.Accordion("The images behind the confusion matrix", open=True, elem_id="ft-gallery-box"):
        gallery = gallery_ui.build(ctx)
    with gr.Row():
        acc_lat = gr.Plot(label="Accuracy vs. cost", elem_id="ft-acclat", scale=3)
        files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="ft-files", scale=2)
    with gr.Accordion("Take a run home: standalone weights and ONNX", open=False, elem_id="ft-export-box"):
        export_panel = exports.build(ctx, "ft")
    return SimpleNamespace(
        table=table,
        notes_md=notes_md,
        confusion=confusion,
        gallery=gallery,
        acc_lat=acc_lat,
        files=files,
        export_panel=export_panel,
    )


def _handlers(ctx: Context) -> SimpleNamespace:
    """The tab's endpoints (their parameter names are the API's)."""

    def run_finetune(request: gr.Request, visitor=None, **values):
        """Fine-tune each model of `models` on the dataset in turn; streams status, curves and results."""
        try:
            who = ctx.visitor(visitor, request)
        except CNNCompareError as err:
            yield blank_outputs(warn_md(str(err)))
            return
        yield from jobs.finetune(ctx, session_of(request), values, who)

    def run_estimate(request: gr.Request, visitor=None, **values):
        """How long each planned run would take here, from two timed training steps per model (timed alone)."""
        work = lambda who: estimate(ctx, values, who)  # noqa: E731
        yield from in_line(ctx, "estimate", visitor, request, work, refused=warn_md, waiting=_same, warn=True)

    def run_report(request: gr.Request, visitor=None, **values):
        def work(who):
            yield "Reading the dataset…"
            yield dataset_report(ctx, values, who)

        # a worker decodes; counted as computing here, so no latency is measured meanwhile
        yield from in_line(
            ctx, "estimate", visitor, request, work, refused=warn_md, waiting=_same, computes=True, warn=True
        )

    def stop(request: gr.Request):
        session = session_of(request)
        if SESSIONS.stop(session):
            return "**Stopping…** the current step finishes and is saved."
        last = SESSIONS.last(session)
        if last is not None and last.outputs:  # the finished run's status and reading stay true: keep them
            gr.Info("Nothing is running: the results below are the last run's.")
            return last.outputs[0]
        return "Nothing is running."

    def show_final(request: gr.Request):
        return jobs.final_page(session_of(request))

    def show_notes(table_value, request: gr.Request):
        empty = table_value is None or len(table_value) == 0
        return RESULTS_LEGEND if empty else (NOTES.get(session_of(request)) or RESULTS_LEGEND)

    return SimpleNamespace(
        run_finetune=run_finetune,
        run_estimate=run_estimate,
        run_report=run_report,
        stop=stop,
        show_final=show_final,
        show_notes=show_notes,
    )


def _wire_data(form, camera, report_md, lr_plot, named, outputs, estimate_md, gallery, run_report) -> tuple:
    """The dataset's inputs and the learning-rate curve; returns (blank, cleared): what a new dataset empties."""
    # An upload selects 'your images' (Estimate and Start then use it) and shows what the zip holds.
    report_kw = dict(
        inputs_kwargs=named, api_visibility="private", concurrency_limit=None, show_progress_on=[report_md]
    )
    # One state on screen: what no longer applies (results of another dataset, an estimate of another plan) goes.
    blank = [*outputs, estimate_md, *gallery.outputs]
    quiet = dict(api_visibility="private", queue=False, show_progress="hidden")

    def cleared(text: str = "The dataset changed: press **Start** for new results.") -> tuple:
        return (*blank_outputs(text), "", *gallery.blank)

    form["zip_file"].upload(lambda: "zip", None, form["dataset"], **quiet).then(cleared, None, blank, **quiet).then(
        run_report, None, report_md, **report_kw
    )
    form["zip_file"].clear(lambda: ("shapes", ""), None, [form["dataset"], report_md], **quiet).then(
        cleared, None, blank, **quiet
    )
    form["dataset"].input(cleared, None, blank, **quiet).then(run_report, None, report_md, **report_kw)
    # The camera's classes: 'Train on these classes' selects them, like an upload does.
    camera.use.click(lambda: "camera", None, form["dataset"], **quiet).then(cleared, None, blank, **quiet).then(
        run_report, None, report_md, **report_kw
    )
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
    return blank, cleared


def _wire_edits(form, preset_md, estimate_md, start_btn) -> None:
    """An edit by hand: the lesson's banner and the estimate no longer describe the form (a lesson's own filling of
    the form is not an input event). Start folds the estimate: the run's page fits one projector screen."""
    start_btn.click(None, js=FOLD_ESTIMATE_JS, api_visibility="private", queue=False)
    gr.on(
        [comp.input for name, comp in form.items() if name not in ("dataset", "zip_file")],
        lambda: (gr.Markdown(visible=False), ""),
        None,
        [preset_md, estimate_md],
        api_visibility="private",
        queue=False,
        show_progress="hidden",
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
            setup = _setup_column(ctx, form)
        with gr.Column(scale=6, min_width=320, elem_id="ft-live", elem_classes=["cc-sticky"]):
            live = _live_column()
    res = _results(ctx)
    preset_md, report_md, lr_plot, weights = setup.preset_md, setup.report_md, setup.lr_plot, setup.weights
    start_btn, stop_btn, estimate_btn, estimate_md = live.start_btn, live.stop_btn, live.estimate_btn, live.estimate_md
    status, progress, curves = live.status, live.progress, live.curves
    table, notes_md, confusion, gallery = res.table, res.notes_md, res.confusion, res.gallery
    acc_lat, files, export_panel = res.acc_lat, res.files, res.export_panel
    outputs = [status, progress, curves, table, confusion, acc_lat, files]

    # The form's values arrive as one mapping, by name (inputs_kwargs=form): the names are also the API's
    # parameter names, so clients call predict(dataset=..., models=..., epochs=..., api_name="/finetune").
    # `visitor` is the key kept in the browser (API clients may leave it out: one visitor per session).
    state = ctx.visitor_state
    named = {**form, "visitor": state} if state is not None else form

    h = _handlers(ctx)
    # concurrency_limit=None: these start at once in gradio's queue and wait in the app's fair queue
    # (one training at a time, per-visitor limits), so one client can never fill gradio's queue.
    start_event = start_btn.click(
        h.run_finetune,
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
        h.run_estimate,
        None,
        estimate_md,
        inputs_kwargs=named,
        api_name="estimate",
        concurrency_limit=None,
        concurrency_id="estimate",
        show_progress_on=[estimate_md],
    )
    stop_btn.click(h.stop, None, status, api_name="stop", cancels=[start_event], queue=False).then(
        h.show_final, None, outputs, api_visibility="private", concurrency_limit=None, show_progress="hidden"
    ).then(gallery.refresh, gallery.refresh_inputs, gallery.outputs, api_visibility="private")
    start_event.then(gallery.refresh, gallery.refresh_inputs, gallery.outputs, api_visibility="private")
    start_event.then(**export_panel.refresh, api_visibility="private", queue=False)
    table.change(h.show_notes, table, notes_md, api_visibility="private", queue=False, show_progress="hidden")
    camera_ui.wire(ctx, setup.camera, state)
    blank, cleared = _wire_data(
        form, setup.camera, report_md, lr_plot, named, outputs, estimate_md, gallery, h.run_report
    )
    _wire_edits(form, preset_md, estimate_md, start_btn)
    preset_md.change(None, None, None, js=SCROLL_TO_TOP_JS, api_visibility="private", queue=False)
    return SimpleNamespace(
        blank=blank,
        cleared=cleared,
        exports=export_panel,
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
