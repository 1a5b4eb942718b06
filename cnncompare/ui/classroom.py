"""The class's workspace, at the top of every page: which workspace this page is in (always said), one button for
the teacher (a workspace opened with their runs in it, its link and a QR code for the projector), and the class's
latest comparison (curves, results, confusion matrices, the lesson's reading), refreshed every few seconds.

The engine side (who opened it, the record of the latest comparison, carrying the runs) is `server.classroom`;
joining and leaving by code stay on the Predict tab's panel (`predict._workspace_panel`).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from urllib.parse import quote

import gradio as gr
import segno

from .. import training
from ..errors import CNNCompareError
from ..server import classroom, visitors
from .common import in_line, message, warn_md
from .results import RESULT_COLUMNS, View

__all__ = ["bar", "panel", "wire", "land", "REFRESH_S"]

REFRESH_S = 5.0  # how often a member's page looks for the class's newest comparison (a cached file read)
PRIVATE = (
    "Private: your runs are seen only in this browser (a teacher shares a class's runs with one link: **Class** tab)."
)


def bar() -> gr.Markdown:
    """One short line under the banner: which workspace this page is in."""
    return gr.Markdown(PRIVATE, elem_id="cc-workspace", elem_classes=["cc-workspace"])


def panel(bar: gr.Markdown) -> SimpleNamespace:
    """The Class tab's content."""
    gr.Markdown(
        "**Teachers:** one button opens a workspace with your runs in it and shows its link and QR code for the "
        "projector. Everyone who opens the link shares the class's runs, and sees here the class's latest "
        "comparison (its curves, results and reading) as soon as it ends. Weights files stay each person's own.",
        elem_classes=["cc-note"],
    )
    start = gr.Button("Start a class workspace with my runs", variant="primary", elem_id="class-start")
    link = gr.HTML(elem_id="class-link")
    status = gr.Markdown(elem_id="class-status", elem_classes=["cc-note", "cc-status"])
    curves = gr.Plot(show_label=False, elem_id="class-curves")
    table = gr.Dataframe(headers=RESULT_COLUMNS, interactive=False, wrap=True, elem_id="class-table")
    confusion = gr.Plot(show_label=False, elem_id="class-confusion")
    shown = gr.State(None)  # the record this page shows (its time): a tick redraws only a newer one
    timer = gr.Timer(REFRESH_S)
    return SimpleNamespace(
        bar=bar, start=start, link=link, status=status, curves=curves, table=table, confusion=confusion,
        shown=shown, timer=timer,
    )  # fmt: skip


def _page(request) -> str:
    """This page's address (without its query), as the browser sent it."""
    headers = getattr(request, "headers", None) or {}
    return str(headers.get("referer") or "").split("?")[0][:200]


def _link_html(code: str, request) -> str:
    page = _page(request)
    link = f"{page}?workspace={quote(code)}" if page else f"this page's address + ?workspace={code}"
    qr = segno.make(link, error="m").svg_data_uri(scale=5, border=2) if page else ""
    img = f'<img src="{qr}" alt="QR code of the workspace link" style="width:180px;height:180px">' if qr else ""
    return (
        f'<div style="display:flex;gap:16px;align-items:center;flex-wrap:wrap">{img}<div>'
        f"<b>The class's link</b> (open it, or scan the code):<br><code style='word-break:break-all'>{link}</code>"
        "</div></div>"
    )


def bar_text(ctx, who: visitors.Visitor) -> str:
    if not who.workspace:
        return PRIVATE
    teacher = classroom.teacher_of(ctx, who)
    by = " You opened it with your runs." if teacher == who.id else ""
    return (
        f"**You are in a class workspace** (`…{who.folder[-4:]}`): runs and results shared with everyone who has its "
        f"link (**Class** tab).{by} Leave it on the Predict tab (*Back to my own runs*)."
    )


def class_view(ctx, who: visitors.Visitor) -> tuple:
    """(record time, status, curves, table, confusion) of the workspace's latest comparison."""
    got = classroom.latest(ctx, who)
    if got is None:
        text = "No comparison has finished in this workspace yet: the first one to end appears here by itself."
        return None, text, None, None, None
    rec, dirs = got
    results = []
    for d in dirs:
        try:
            results.append(training.RunResult.from_dict(json.loads((d / "results.json").read_text())))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    view = View([r.label for r in results], session=f"class:{who.folder}")
    for r in results:
        view.results.append(r)
        view.histories[r.label] = list(r.history or [])
    by = (
        "you"
        if rec.get("by") == who.id
        else "the teacher"
        if rec.get("by") == classroom.teacher_of(ctx, who)
        else "a classmate"
    )
    runs = ", ".join(f"`{r.label}`" for r in results)
    view.headline = f"**The class's latest comparison** (by {by}: {runs}):\n\n{rec.get('headline', '')}"
    view.log = [str(rec.get("dataset") or "")]
    status, _, curves, table, confusion, _, _ = view.outputs(full=True)
    return rec.get("time"), status, curves, table, confusion


def land(ctx, tabs: gr.Tabs):
    """The page's load: a page opened with a workspace's link lands on the Class tab (what the class sees)."""

    def landing(visitor=None, request: gr.Request = None):
        params = getattr(request, "query_params", None) or {}
        try:
            joined = bool(params.get("workspace")) and ctx.visitor(visitor, request).workspace
        except CNNCompareError:
            joined = False
        return gr.Tabs(selected="class") if joined else gr.skip()

    return dict(fn=landing, inputs=[ctx.visitor_state], outputs=[tabs])


def wire(ctx, ui: SimpleNamespace, pred: SimpleNamespace, demo: gr.Blocks) -> None:
    """`pred`: the Predict tab (its runs list follows the workspace)."""
    state = ctx.visitor_state
    view_out = [ui.shown, ui.status, ui.curves, ui.table, ui.confusion]

    def show(visitor=None, request: gr.Request = None):
        """The bar, the link and the class view for this page's workspace (on load, and after a change)."""
        try:
            who = ctx.visitor(visitor, request)
        except CNNCompareError as err:
            return warn_md(message(err)), "", gr.skip(), None, "", None, None, None
        if not who.workspace:
            return bar_text(ctx, who), "", gr.Button(visible=True), None, "", None, None, None
        code = str(visitor.get("code") or "") if isinstance(visitor, dict) else ""  # checked by ctx.visitor
        link = _link_html(code, request)
        return bar_text(ctx, who), link, gr.Button(visible=False), *class_view(ctx, who)

    def tick(shown, visitor=None, request: gr.Request = None):
        try:
            who = ctx.visitor(visitor, request)
        except CNNCompareError:
            return (gr.skip(),) * 5
        if not who.workspace:
            return (gr.skip(),) * 5
        got = classroom.latest(ctx, who)
        if got is None or got[0].get("time") == shown:
            return (gr.skip(),) * 5
        return class_view(ctx, who)

    def start(visitor=None, request: gr.Request = None):
        def work(who):
            try:
                code = ctx.workspaces.create(who.id, visitors.address_of(request))
                value = visitors.join_workspace(visitor, code, ctx.workspaces, visitors.address_of(request))
                member = ctx.visitor(value, request)
                n = classroom.carry_runs(ctx, member)
            except CNNCompareError as err:
                return gr.skip(), warn_md(message(err)), gr.skip()
            said = f"{bar_text(ctx, member)} {n} of your runs came along." if n else bar_text(ctx, member)
            return value, said, _link_html(code, request)

        refused = lambda text: (gr.skip(), warn_md(text), gr.skip())  # noqa: E731
        yield from in_line(
            ctx, "blocks", visitor, request, work, refused=refused, waiting=lambda t: (gr.skip(), t, gr.skip())
        )

    inputs = [state] if state is not None else None
    shown_out = [ui.bar, ui.link, ui.start, *view_out]  # in a workspace already: no second one to start
    demo.load(show, inputs, shown_out, api_visibility="private", queue=False)
    ui.timer.tick(
        tick, [ui.shown, *(inputs or [])], view_out, api_visibility="private", queue=False, show_progress="hidden"
    )
    if state is None:
        return
    ui.start.click(start, [state], [state, ui.bar, ui.link], api_visibility="private", concurrency_limit=None).then(
        show, inputs, shown_out, api_visibility="private", queue=False
    ).then(pred.refresh_runs, pred.refresh_inputs, [pred.runs, pred.runs_note], api_visibility="private", queue=False)
    state.change(show, inputs, shown_out, api_visibility="private", queue=False, show_progress="hidden")
