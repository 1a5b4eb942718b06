"""The images behind the confusion matrix, on the Fine-tune tab: pick a run and a cell (true class, predicted
class), or "where the models disagree", and see those validation images with every run's prediction and heat map.

After a comparison, `remember(ctx, visitor, results, dataset)` (called by the Fine-tune tab while the
dataset is still loaded) computes the gallery (`cnncompare.gallery.prepare`) and saves it in the
visitor's own folder (`visitors/<hash>/.gallery/latest.npz`), so it survives a refreshed page and
works when training ran in another process (ZeroGPU). `refresh` then fills the dropdowns and shows the
busiest mistake of the first run; each change of a dropdown shows that selection. Heat maps come from
the visitor's own saved runs only (looked up by folder name inside their folder).

Captions stay short (`#index true: ✓/✗ prediction per run`) so the gallery never cuts them; the
full text of every image (each run's class and confidence) is listed under the gallery.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from .. import gallery as engine
from ..errors import CNNCompareError
from ..executor import Job, work
from ..server import visitors
from . import lenient
from .common import Context, in_line, message, warn_md

__all__ = ["build", "remember", "show", "selection", "DISAGREE", "ANY", "GALLERY_FILE", "CELL_CLICK_JS"]

DISAGREE = "where the models disagree"
ANY = "any class"
GALLERY_FILE = Path(".gallery") / "latest.npz"
EMPTY_NOTE = (
    "After a comparison, click a cell of a confusion matrix (or pick a run and two classes here) to see those "
    "validation images."
)
# Plotly reports clicks on the confusion matrices: each click writes its cell into the hidden #g-cell box, whose
# change opens the cell's images. Plots are redrawn as runs end, so new ones are looked for every second.
CELL_CLICK_JS = """
() => {
  const attach = () => {
    document.querySelectorAll('#ft-confusion .js-plotly-plot').forEach((div) => {
      if (div.dataset.ccCell || typeof div.on !== 'function') return;
      div.dataset.ccCell = '1';
      div.on('plotly_click', (ev) => {
        const pt = ev && ev.points && ev.points[0];
        const box = document.querySelector('#g-cell textarea, #g-cell input');
        if (!pt || !box) return;
        box.value = [pt.data.name, pt.y, pt.x, Date.now()].join('\\t');  // the time: a second click changes it too
        box.dispatchEvent(new Event('input', {bubbles: true}));
        const target = document.getElementById('ft-gallery-box');
        if (target) target.scrollIntoView({block: 'start', behavior: 'smooth'});
      });
    });
  };
  setInterval(attach, 1000);
}
"""


def _path(ctx: Context, visitor: visitors.Visitor) -> Path:
    return visitors.visitor_dir(ctx, visitor) / GALLERY_FILE


def remember(ctx: Context, visitor: visitors.Visitor, results, data_spec) -> str:
    """Compute and save the gallery of a finished comparison for this visitor, in a worker (`executor.work.gallery`:
    it decodes the validation images and predicts them again where a run recorded no predictions); a note for the
    log ("" when all went well). Never raises: a gallery is a nice-to-have beside the results."""
    path = _path(ctx, visitor)
    try:
        job = Job(
            work.FN + "gallery",
            {"results": list(results), "data_spec": data_spec, "path": str(path)},
            kind="gallery",
            memory_mb=ctx.env.max_run_mb,
        )
        return ctx.workers.call(job)
    except CNNCompareError as err:
        path.unlink(missing_ok=True)  # never show an older comparison's images as this one's
        return str(err)
    except Exception as err:
        path.unlink(missing_ok=True)
        return message(err)


def _load(ctx: Context, visitor: visitors.Visitor) -> engine.GalleryData:
    return engine.load(_path(ctx, visitor))


def selection(data: engine.GalleryData) -> tuple[str, str, str]:
    """The first thing to show: the first run's busiest off-diagonal cell (else its first class), as
    (run, true class, predicted class)."""
    import numpy as np

    r = data.runs[0]
    k = len(data.classes)
    counts = np.bincount(data.true * k + r.pred, minlength=k * k).reshape(k, k)
    np.fill_diagonal(counts, -1)
    t, p = np.unravel_index(int(counts.argmax()), counts.shape)
    if counts[t, p] <= 0:
        t = p = 0
    return r.label, data.classes[t], data.classes[p]


def show(ctx: Context, visitor: visitors.Visitor, run: str, true: str, predicted: str) -> tuple[list, str]:
    """(gallery value: [(image, caption)], the Markdown under it) for one selection.

    Raises:
        CNNCompareError: no comparison yet, an unknown run or class.
    """
    data = _load(ctx, visitor)
    if run == DISAGREE:
        if len(data.runs) < 2:
            return [], "Only one run finished: compare two or more to see where they disagree."
        idx = engine.disagreements(data, None if true in (None, "", ANY) else true)
        head = f"The runs predict different classes for **{len(idx)}** validation image(s)" + (
            f" of class *{true}*" if true not in (None, "", ANY) else ""
        )
    else:
        if true in (None, "", ANY) or predicted in (None, "", ANY):
            raise CNNCompareError("Pick a true class and a predicted class (a cell of the matrix).")
        idx = engine.cell(data, run, true, predicted)
        verb = "correctly as" if true == predicted else "as"
        head = f"**{run}** predicted **{len(idx)}** validation image(s) of *{true}* {verb} *{predicted}*"
    shown, notes = engine.items(data, idx, runs_root=visitors.visitor_dir(ctx, visitor))
    if not idx:
        return [], head + "."
    head += f"; showing {len(shown)}." if len(shown) < len(idx) else "."
    legend = "Each picture: the image, then where each run looked (Grad-CAM): " + ", ".join(
        f"{n + 1}. {r.label}" for n, r in enumerate(data.runs)
    )
    lines = [head, legend if any(it.heat_maps for it in shown) else ""]
    lines += [f"- {it.text}" for it in shown]
    lines += [warn_md(n) for n in notes + data.notes]
    return [(it.image, it.caption) for it in shown], "\n".join(line for line in lines if line)


def _choices(data: engine.GalleryData | None):
    if data is None:
        return [], [], []
    runs_ = [r.label for r in data.runs] + ([DISAGREE] if len(data.runs) > 1 else [])
    return runs_, list(data.classes) + [ANY], list(data.classes)


def _dropdowns(runs_=(), trues=(), preds=(), run=None, true=None, pred=None) -> tuple:
    """The three selectors' updates, each with its label (an update without one would show gradio's "Dropdown");
    "where the models disagree" shows each run's own answer, so the predicted class is not asked for then."""
    return (
        gr.Dropdown(choices=list(runs_), value=run, label="Run"),
        gr.Dropdown(choices=list(trues), value=true, label="True class"),
        gr.Dropdown(choices=list(preds), value=pred, **_predicted(run)),
    )


def _predicted(run) -> dict:
    disagree = run == DISAGREE
    label = "Predicted class (each run's own, under the images)" if disagree else "Predicted class"
    return dict(label=label, interactive=not disagree)


def _layout() -> SimpleNamespace:
    with gr.Group(elem_classes=["cc-gallery"]):
        gr.Markdown("**The images behind the matrix**: pick a run and a cell (true → predicted class).")
        with gr.Row():
            run_dd = lenient.Dropdown([], label="Run", elem_id="g-run", scale=2, min_width=200, allow_custom_value=True)
            true_dd = lenient.Dropdown(
                [], label="True class", elem_id="g-true", scale=1, min_width=140, allow_custom_value=True
            )
            pred_dd = lenient.Dropdown(
                [], label="Predicted class", elem_id="g-pred", scale=1, min_width=140, allow_custom_value=True
            )
        images = gr.Gallery(
            label="Validation images (then each run's heat map)",
            columns=3,
            height="auto",
            object_fit="contain",
            preview=False,
            elem_id="g-images",
            elem_classes=["cc-gallery"],
        )
        note = gr.Markdown(EMPTY_NOTE, elem_id="g-note")
        # a click on a confusion-matrix cell writes "run<TAB>true<TAB>predicted" here (CELL_CLICK_JS)
        cell = gr.Textbox(show_label=False, container=False, elem_id="g-cell", elem_classes=["cc-hidden"])
    return SimpleNamespace(run_dd=run_dd, true_dd=true_dd, pred_dd=pred_dd, images=images, note=note, cell=cell)


def _handlers(ctx: Context) -> SimpleNamespace:
    """The panel's endpoints: a cell's images (API `/confusion_images`), a clicked cell, the refresh after a run."""

    def _who(visitor, request):
        return ctx.visitor(visitor, request)

    def shown(who, run, true, predicted):
        try:
            return show(ctx, who, run, true, predicted)
        except Exception as err:
            return [], warn_md(message(err))

    def confusion_images(run, true, predicted, visitor=None, request: gr.Request = None):
        """The validation images of one cell of `run`'s confusion matrix (true -> predicted), or with
        run="where the models disagree" the images the runs predict differently, with each run's answer."""
        yield from in_line(
            ctx,
            "gallery",
            visitor,
            request,
            lambda who: shown(who, run, true, predicted),
            refused=lambda text: ([], warn_md(text)),
            waiting=lambda text: (gr.skip(), text),
        )

    def refresh(visitor=None, request: gr.Request = None):
        """After a comparison: the dropdowns of its runs and classes, and its busiest mistake."""
        try:
            who = _who(visitor, request)
            data = _load(ctx, who)
        except CNNCompareError:
            return (*_dropdowns(), [], EMPTY_NOTE)
        runs_, trues, preds = _choices(data)
        run, true, pred = selection(data)
        value, text = shown(who, run, true, pred)
        return (*_dropdowns(runs_, trues, preds, run, true, pred), value, text)

    def clicked(text, visitor=None, request: gr.Request = None):
        """A confusion-matrix cell clicked: its run and classes in the dropdowns, and its images."""
        run, true, pred = [*str(text or "").split("\t"), "", "", ""][:3]
        yield from in_line(
            ctx,
            "gallery",
            visitor,
            request,
            lambda who: (run, true, pred, *shown(who, run, true, pred)),
            refused=lambda text: (gr.skip(), gr.skip(), gr.skip(), [], warn_md(text)),
            waiting=lambda text: (gr.skip(), gr.skip(), gr.skip(), gr.skip(), text),
        )

    return SimpleNamespace(confusion_images=confusion_images, refresh=refresh, clicked=clicked)


def build(ctx: Context) -> SimpleNamespace:
    """The gallery panel (call inside the Fine-tune tab's Blocks, under the confusion matrices).

    Returns a namespace with `refresh` (fn), `refresh_inputs` and `outputs`: chain
    `.then(g.refresh, g.refresh_inputs, g.outputs)` after a comparison's event. API: `/confusion_images`.
    """
    ui = _layout()
    run_dd, true_dd, pred_dd, images, note, cell = ui.run_dd, ui.true_dd, ui.pred_dd, ui.images, ui.note, ui.cell
    h = _handlers(ctx)
    # API callers name a run and classes of their own last comparison; `show` checks them against it
    state = ctx.visitor_state
    extra = [state] if state is not None else []
    cell.change(
        h.clicked,
        [cell, *extra],
        [run_dd, true_dd, pred_dd, images, note],
        api_visibility="private",
        concurrency_limit=None,
    )
    # "where the models disagree" takes no predicted class: the selector says so and rests
    run_dd.input(
        lambda run: gr.Dropdown(**_predicted(run)),
        run_dd,
        pred_dd,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    inputs = [run_dd, true_dd, pred_dd, *extra]
    gr.on(
        [run_dd.input, true_dd.input, pred_dd.input],
        h.confusion_images,
        inputs,
        [images, note],
        api_name="confusion_images",
        concurrency_limit=None,  # waits in the app's fair queue, never in gradio's
    )
    return SimpleNamespace(
        run=run_dd,
        true=true_dd,
        pred=pred_dd,
        gallery=images,
        note=note,
        refresh=h.refresh,
        refresh_inputs=extra or None,
        outputs=[run_dd, true_dd, pred_dd, images, note],
        blank=(*_dropdowns(), [], EMPTY_NOTE),
        confusion_images=h.confusion_images,
    )
