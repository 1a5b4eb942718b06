"""Architectures tab: profile several models side by side, draw them, and see what a freeze policy freezes."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from .. import diagram, models, plots, profiling
from ..errors import CNNCompareError
from ..models import catalog
from ..settings import FreezePolicy
from . import lenient
from .common import SESSIONS, billions, in_line, message, millions, parse_names, rounded, shape_text, styled, warn_md
from .figures import figure
from .gpu import gpu

# Short headers (one word each, never broken on a projector); their units are in UNITS_LINE under the table.
PROFILE_COLUMNS = [
    "model",
    "family",
    "year",
    "px",
    "params",
    "MACs",
    "FLOPs",
    "weights",
    "activ.",
    "latency",
    "p90",
    "img/s",
    "top-1",
]
# pixel widths: the table keeps them and scrolls sideways on a narrow screen instead of squeezing letters
PROFILE_WIDTHS = [
    "180px",
    "110px",
    "60px",
    "56px",
    "76px",
    "72px",
    "80px",
    "84px",
    "72px",
    "90px",
    "84px",
    "80px",
    "66px",
]
GRAPH_COLUMN = "graph"  # CUDA-graph p50, shown only when measured (on a GPU)
UNITS_LINE = (
    "<small>**px**: input side · **params** in millions · **MACs**, **FLOPs** in billions per image · "
    "**weights**, **activ.** (activation memory) in MiB · **latency** (median) and **p90**: batch-1 time "
    "in ms · **img/s**: throughput at batch {batch} · **top-1**: published ImageNet accuracy in %{graph}</small>"
)
BLOCK_COLUMNS = ["model", "block", "layers", "params", "trainable", "output (C×H×W)", "state"]
POLICY_CHOICES = [(f"{value}: {meaning}", value) for value, meaning in FreezePolicy.CHOICES]
INPUT_SIZE = profiling.INPUT_SIZE  # empty = each model's native size (Inception v3: 299 px)
SIZE_CHOICES = [(INPUT_SIZE.none_text, INPUT_SIZE.none_text)] + [str(n) for n in (224, 299, 160, 128, 96, 64)]
LATENCY_BUDGET_S = 1.0  # seconds per timing phase and model: enough for a stable median on a CPU


def _profile_row(p: profiling.Profile) -> dict:
    lat = p.latency_ms
    return {
        "model": p.name,
        "family": p.family,
        "year": p.year,
        "px": p.input_size,
        "params": millions(p.params),
        "MACs": billions(p.macs),
        "FLOPs": billions(p.flops),
        "weights": rounded(p.size_mb),
        "activ.": rounded(p.activation_mb),
        "latency": rounded(lat.p50) if lat else None,
        "p90": rounded(lat.p90) if lat else None,
        GRAPH_COLUMN: rounded(p.latency_graph_ms.p50, 2) if p.latency_graph_ms else None,
        "img/s": rounded(p.throughput_ips) if p.throughput_ips else None,
        "top-1": rounded(p.ref_top1, 2),
    }


def _error_row(name: str, size: int | None) -> dict:
    """A row for a model that could not be profiled (its reason is in the note under the table)."""
    row = dict.fromkeys(PROFILE_COLUMNS)
    try:
        info = catalog.get(name)
        row.update(family=info.family, year=info.year, px=size or info.default_size)
    except CNNCompareError:
        row["px"] = size
    row["model"] = name
    return row


PROFILE_FORMATS = {
    "year": "{}",
    "px": "{}",
    "params": "{:.2f}",
    "MACs": "{:.3f}",
    "FLOPs": "{:.3f}",
    "weights": "{:.1f}",
    "activ.": "{:.1f}",
    "latency": "{:.1f}",
    "p90": "{:.1f}",
    "img/s": "{:.1f}",
    "top-1": "{:.2f}",
}


def _table(rows: list[dict]):
    columns = list(PROFILE_COLUMNS)
    if any(r.get(GRAPH_COLUMN) is not None for r in rows):
        columns.insert(columns.index("p90") + 1, GRAPH_COLUMN)
    return styled(pd.DataFrame(rows, columns=columns, dtype=object), {**PROFILE_FORMATS, GRAPH_COLUMN: "{:.2f}"})


def _size_text(size: int | None, profiles: list[profiling.Profile] = ()) -> str:
    if size:
        return f"{size} px"
    sizes = {p.input_size for p in profiles}
    return f"{sizes.pop()} px (native)" if len(sizes) == 1 else "each model's native size"


def _size_notes(profiles: list[profiling.Profile]) -> list[str]:
    """Say when rows use different sizes, and when a published top-1 was measured at another size."""
    lines = []
    sizes = {p.input_size for p in profiles}
    if len(sizes) > 1:
        odd = [f"{p.name} at {p.input_size} px" for p in profiles if p.input_size != min(sizes)]
        lines.append(
            f"Rows use different input sizes ({', '.join(odd)}; the others at {min(sizes)} px): MACs, memory and "
            "latency grow with the square of the side, so compare like with like or type one size above."
        )
    other = [p for p in profiles if p.ref_top1 is not None and p.input_size != catalog.get(p.name).default_size]
    if other:
        natives = ", ".join(f"{p.name} {catalog.get(p.name).default_size} px" for p in other)
        lines.append(
            f"The published top-1 of {', '.join(p.name for p in other)} was measured at the native size "
            f"({natives}), not at the size profiled here."
        )
    return lines


def _model_notes(names: list[str]) -> list[str]:
    out = []
    for name in names:
        try:
            info = catalog.get(name)
        except CNNCompareError:
            continue
        if info.notes:
            out.append(f"**{info.name}**: {info.notes}")
    return out


def _note(
    n_done: int,
    n_total: int,
    size: int | None,
    profiles: list[profiling.Profile],
    errors: list[str],
    measured: bool,
    busy: bool,
    current: str | None,
    box_ticked: bool = False,
    names: list[str] | None = None,
) -> str:
    """The text under the table: progress, units, how things were counted and timed, per-model notes."""
    lines = []
    if current:
        lines.append(f"**Profiling {current} ({n_done + 1} of {n_total})…**")
    else:
        lines.append(f"**{len(profiles)} of {n_total} model(s) profiled at {_size_text(size, profiles)}.**")
    batch = profiles[0].batch if profiles else profiling.CPU_BATCH
    graph = any(p.latency_graph_ms for p in profiles)
    lines.append(UNITS_LINE.format(batch=batch, graph=" · **graph**: CUDA-graph median in ms" if graph else ""))
    lines.append(
        "Parameters, MACs and memory are counted on PyTorch's meta device (no weights, no arithmetic). "
        "MACs count the multiply-adds of convolutions and matrix products only, like torchvision's "
        'published "GFLOPS"; FLOPs = 2 × MACs. ImageNet top-1 is torchvision\'s published accuracy '
        "for the pretrained weights, not measured here."
    )
    if profiles and measured:
        p = profiles[0]
        where = (
            "These are this machine's numbers, not a GPU's."
            if not p.device.startswith("cuda")
            else (profiling.GRAPH_NOTE)
        )
        lines.append(
            f"Latency: batch 1 on **{p.device}**, {p.dtype}, median (p50) and p90 of repeated runs; "
            f"throughput at batch {p.batch}. {where}"
        )
        timed = [p for p in profiles if p.latency_ms]
        if timed:
            lines.append(
                "Each latency is timed alone, in a quiet moment (a fine-tuning run on this server pauses"
                + (", as one did now" if busy else "")
                + ") and kept for everyone: "
                + ", ".join(
                    f"{p.name} {'reused, measured' if p.latency_shared else 'measured'} at {p.latency_measured_at} UTC"
                    for p in timed
                )
                + "."
            )
    elif profiles and box_ticked:
        lines.append("Latency not measured yet (counting only): press **Compare** to time each model on this machine.")
    elif profiles:
        lines.append("Latency not measured (counting only): tick *measure latency* and press **Compare** to time them.")
    missing = plots.without_reference([{"name": p.name, "ref_top1": p.ref_top1} for p in profiles])
    if missing:
        lines.append("No published ImageNet accuracy (left out of the accuracy plot): " + ", ".join(missing) + ".")
    lines.extend(_size_notes(profiles))
    lines.extend(f"{p.name}: {w}" for p in profiles for w in p.warnings)
    lines.extend(_model_notes(names or [p.name for p in profiles]))
    for e in errors:
        lines.append(warn_md(e))
    return "\n\n".join(lines)


def _figures(profiles: list[profiling.Profile], stage_blocks: dict[str, list[dict]], measured: bool):
    rows = [
        dict(
            name=p.name,
            macs=p.macs,
            params=p.params,
            ref_top1=p.ref_top1,
            input_size=p.input_size,
            latency_p50=p.latency_ms.p50 if p.latency_ms else None,
            latency_p90=p.latency_ms.p90 if p.latency_ms else None,
        )
        for p in profiles
    ]
    device = profiles[0].device if profiles and measured else ""
    return (
        figure(plots.accuracy_vs_macs, rows),
        figure(plots.latency_bars, rows, device),
        figure(plots.params_per_stage, stage_blocks),
    )


@gpu(duration=120)
def profile_models(
    models_selected,
    size,
    measure_latency,
    *,
    limit: int | None = None,
    check: Callable[[str], None] | None = None,
    box_ticked: bool = False,
):
    """Profile each chosen model at one input size (None: each its own); yields the growing table and figures."""
    try:
        names = parse_names(models_selected, limit)
        size = profiling.input_size(size)
        if not names:
            raise CNNCompareError("Choose at least one model.")
    except CNNCompareError as err:
        gr.Warning(str(err))
        empty = plots.message_figure("Choose models and press Compare.")
        yield warn_md(str(err)), _table([]), empty, empty, empty, *ranking_view([])
        return
    measure = bool(measure_latency)
    rows: list[dict] = []
    profiles: list[profiling.Profile] = []
    stage_blocks: dict[str, list[dict]] = {}
    errors: list[str] = []
    busy = False
    for i, name in enumerate(names):
        if measure:  # show which model is being timed: the slow part
            yield (
                _note(i, len(names), size, profiles, errors, measure, busy, name, names=names),
                _table(rows),
                *(gr.skip(),) * 5,
            )
        try:
            busy = busy or (measure and SESSIONS.active > 0)
            if check is not None:
                check(name)  # the catalog, or a timm model under this server's size cap
            p = profiling.profile(name, size, latency=measure, budget_s=LATENCY_BUDGET_S)
            profiles.append(p)
            rows.append(_profile_row(p))
            stage_blocks[p.name] = profiling.stage_blocks(p.name, p.input_size)
        except Exception as err:  # one model's problem must not hide the others
            text = message(err)
            errors.append(f"{name}: {text}" if name not in text else text)
            rows.append(_error_row(name, size))
    if errors and not profiles:
        gr.Warning(errors[0])
    yield (
        _note(len(names), len(names), size, profiles, errors, measure, busy, None, box_ticked, names),
        _table(rows),
        *_figures(profiles, stage_blocks, measure),
        *ranking_view(profiles),
    )


def blocks_view(models_selected, size, policy, *, limit: int | None = None, check: Callable[[str], None] | None = None):
    """Each model's blocks (stem, stages, pre-logits, head) and what `policy` would freeze."""
    try:
        names = parse_names(models_selected, limit)
        size = profiling.input_size(size)
        policy_text = str(policy or "none").strip() or "none"
        parsed = models.FreezePolicy.parse(policy_text)
    except CNNCompareError as err:
        return warn_md(str(err)), pd.DataFrame(columns=BLOCK_COLUMNS)
    if not names:
        return "Choose models above to see their blocks.", pd.DataFrame(columns=BLOCK_COLUMNS)
    lines = [
        f"**Freeze policy `{parsed}` at {_size_text(size)}.** Frozen blocks keep their pretrained weights "
        "(their BatchNorm statistics stay fixed too); only the rest is trained."
    ]
    rows = []
    for name in names:
        try:
            if check is not None:
                check(name)
            report = models.freeze_report(name, parsed, size)  # the answer of `cnncompare blocks` too
        except Exception as err:
            lines.append(f"- **{name}**: {warn_md(message(err))}")
            continue
        lines.append(f"- **{name}**: {warn_md(report.summary()) if report.problem else report.summary()}")
        for g in report.blocks:
            state = "frozen" if g.frozen else ("trains" if g.trainable == g.params else "partly frozen")
            rows.append(
                {
                    "model": name,
                    "block": g.name,
                    "layers": len(g.modules),
                    "params": g.params,
                    "trainable": g.trainable,
                    "output (C×H×W)": shape_text(g.out_shape),
                    "state": state if g.params else "–",
                }
            )
    return "\n".join(lines), styled(
        pd.DataFrame(rows, columns=BLOCK_COLUMNS, dtype=object), {"params": "{:,}", "trainable": "{:,}"}
    )


def diagram_view(
    models_selected, size, policy, *, limit: int | None = None, check: Callable[[str], None] | None = None
):
    """The diagram of the chosen models at one size under one freeze policy (a plotly figure)."""
    try:
        names = parse_names(models_selected, limit)
        size = profiling.input_size(size)
        policy_text = str(models.FreezePolicy.parse(str(policy or "none").strip() or "none"))
        if not names:
            return plots.message_figure("Choose models above to see their diagrams.")
        for name in names:
            if check is not None:
                check(name)
            models.check_input_size(catalog.get(name).name, size or catalog.get(name).default_size)
        problems = [r.summary() for r in (models.freeze_report(n, policy_text, size) for n in names) if r.problem]
        if not problems:
            return diagram.figure(names, size, policy_text)
        else:  # e.g. stages:4 on AlexNet (3 stages): draw them unfrozen, say why (as `cnncompare diagram` does)
            fig = diagram.figure(names, size, "none")
            fig.add_annotation(
                text=f"Not frozen as asked: {'; '.join(problems)}",
                x=0,
                y=1.0,
                yshift=-40,
                xref="paper",
                yref="paper",
                showarrow=False,
                xanchor="left",
                font=dict(size=12, color="#b45309"),
            )
            return fig
    except Exception as err:
        return plots.message_figure(message(err))


def ranking_view(profiles: list[profiling.Profile]) -> tuple:
    """The MACs-vs-latency ranking and its sentence, from the profiles themselves (not the rounded table)."""
    rows = [
        dict(name=p.name, macs=p.macs, latency_p50=p.latency_ms.p50 if p.latency_ms else None, params=p.params)
        for p in profiles
        if p.macs
    ]
    return figure(plots.ranking, rows), plots.ranking_note(rows)


def catalog_table() -> pd.DataFrame:
    rows = []
    for name in catalog.names():
        info = catalog.get(name)
        ref = info.reference
        rows.append(
            {
                "model": name,
                "family": info.family,
                "year": info.year,
                "built by": info.backend,
                "native px": info.default_size,
                "min px": info.min_size,
                "top-1": round(ref.top1, 2) if ref and ref.top1 else None,
                "what it is": info.depth_note,
            }
        )
    return pd.DataFrame(rows, dtype=object)


CATALOG_WIDTHS = ["190px", "120px", "60px", "100px", "90px", "76px", "70px", "330px"]


def build(ctx) -> SimpleNamespace:
    """The tab: its layout (`_compare_layout`, `_blocks_layout`), its handlers (`_handlers`), then the wiring."""
    ui = SimpleNamespace(**_compare_layout(), **_blocks_layout())
    return _wire(ctx, ui, _handlers(ctx))


def _compare_layout() -> dict:
    gr.Markdown(
        "Pick architectures and an input size, then **Compare**: one table side by side, the cost of "
        "each network, where its parameters sit and a diagram of every layer. Counting is instant; timing "
        "takes a few seconds per model on a CPU."
    )
    with gr.Row(equal_height=True):
        models_dd = lenient.Dropdown(
            choices=catalog.names(),
            value=list(catalog.CLASSIC_FOUR),
            multiselect=True,
            allow_custom_value=True,
            scale=4,
            elem_id="arch-models",
            label="Models (from the catalog, or type any timm model name and press Enter)",
        )
        size = lenient.Dropdown(
            choices=SIZE_CHOICES,
            value=INPUT_SIZE.none_text,
            allow_custom_value=True,
            label="Input size (px)",
            info="native: each model's own (224; Inception v3 299), or type a size",
            scale=1,
            elem_id="arch-size",
        )
        with gr.Column(scale=1, min_width=200):
            latency = gr.Checkbox(
                value=True,
                label="Measure latency on this machine",
                info="a few seconds per model; untick to count only",
            )
            compare_btn = gr.Button("Compare", variant="primary", elem_id="arch-compare")
    table = gr.Dataframe(
        headers=PROFILE_COLUMNS,
        label="Side by side",
        interactive=False,
        wrap=True,
        elem_id="arch-table",
        elem_classes=["cc-table"],
        max_height=420,
        column_widths=PROFILE_WIDTHS,
    )
    note = gr.Markdown(elem_classes=["cc-note"], elem_id="arch-note")  # units and notes, under the table
    with gr.Row():
        acc_plot = gr.Plot(label="Accuracy vs. MACs", elem_id="arch-acc")
        lat_plot = gr.Plot(label="Latency", elem_id="arch-latency")
    with gr.Row():
        with gr.Column():
            rank_plot = gr.Plot(label="Work vs. time", elem_id="arch-ranking")
            rank_note = gr.Markdown(elem_classes=["cc-note"], elem_id="arch-ranking-note")
        stage_plot = gr.Plot(label="Parameters per block", elem_id="arch-stages")
    return dict(
        models_dd=models_dd,
        size=size,
        latency=latency,
        compare_btn=compare_btn,
        table=table,
        note=note,
        acc_plot=acc_plot,
        lat_plot=lat_plot,
        rank_plot=rank_plot,
        rank_note=rank_note,
        stage_plot=stage_plot,
    )


def _blocks_layout() -> dict:
    gr.Markdown(
        "### Blocks and freezing\nEvery network is split the same way: **stem**, **stages** (one per "
        "halving of resolution), **pre-logits** (e.g. VGG's fc6/fc7) and **head** (the classifier). "
        "Pick a freeze policy to see which blocks it freezes and how many parameters are left to train."
    )
    with gr.Row():
        policy = lenient.Dropdown(
            choices=POLICY_CHOICES,
            value="head",
            allow_custom_value=True,
            scale=2,
            label=f"Freeze policy ({FreezePolicy.FORMS})",
            elem_id="arch-policy",
        )
        blocks_md = gr.Markdown(elem_id="arch-blocks-note")
    diagram_plot = gr.Plot(label="Diagram: every unit of each network, frozen ones hatched", elem_id="arch-diagram")
    blocks_df = gr.Dataframe(
        headers=BLOCK_COLUMNS,
        label="Blocks",
        interactive=False,
        max_height=420,
        elem_id="arch-blocks",
        elem_classes=["cc-table"],
        column_widths=["190px", "100px", "70px", "120px", "120px", "150px", "110px"],
    )
    with gr.Accordion("The catalog", open=False):
        gr.Dataframe(
            value=catalog_table(),
            interactive=False,
            wrap=True,
            max_height=500,
            elem_classes=["cc-table"],
            column_widths=CATALOG_WIDTHS,
        )
        gr.Markdown(
            "<small>**native px**: the input size each model was trained at (and is profiled at when the size "
            "is left empty) · **min px**: the smallest input it accepts · **top-1**: published ImageNet "
            "accuracy in %</small>\n\n" + "\n\n".join(_model_notes(catalog.names())),
            elem_classes=["cc-note"],
        )
    return dict(policy=policy, blocks_md=blocks_md, diagram_plot=diagram_plot, blocks_df=blocks_df)


def _handlers(ctx) -> SimpleNamespace:
    # The per-app model cap comes from the environment (CNNCOMPARE_MAX_MODELS); the wrappers keep the
    # API's parameter names (models_selected, size, measure_latency, policy), plus `visitor` (the key kept in
    # the browser; API clients may leave it out). Each waits for its lane of the fair queue.
    empty = plots.message_figure("Choose models and press Compare.")

    def queued(lane: str, visitor, request, refused: Callable[[str], tuple], waiting: Callable[[str], tuple], work):
        refuse = lambda text: refused(warn_md(text))  # noqa: E731
        yield from in_line(ctx, lane, visitor, request, lambda _who: work(), refused=refuse, waiting=waiting, warn=True)

    def profile_refused(text):
        return text, _table([]), empty, empty, empty, empty, ""

    def profile_waiting(text):
        return text, *(gr.skip(),) * 6

    def profile(models_selected, size, measure_latency, visitor=None, request: gr.Request = None):
        """Profile each chosen model at one input size; yields the growing table and the figures."""
        # Counting is cheap (meta device): it waits in the quick lane, not behind others' latency measurements.
        lane = "profile" if measure_latency else "blocks"
        yield from queued(
            lane,
            visitor,
            request,
            profile_refused,
            profile_waiting,
            lambda: profile_models(models_selected, size, measure_latency, limit=ctx.max_models, check=ctx.check_model),
        )

    def count_only(models_selected, size, measure_latency=False, visitor=None, request: gr.Request = None):
        # the note tells the truth about the box: ticked means "press Compare", not "tick it"
        yield from queued(
            "blocks",
            visitor,
            request,
            profile_refused,
            profile_waiting,
            lambda: profile_models(
                models_selected,
                size,
                False,
                limit=ctx.max_models,
                check=ctx.check_model,
                box_ticked=bool(measure_latency),
            ),
        )

    def draw(models_selected, size, policy, visitor=None, request: gr.Request = None):
        """The diagram of the chosen models: one row per unit, frozen units hatched."""
        yield from queued(
            "blocks",
            visitor,
            request,
            lambda text: (plots.message_figure(text),),
            lambda text: (gr.skip(),),
            lambda: iter([(diagram_view(models_selected, size, policy, limit=ctx.max_models, check=ctx.check_model),)]),
        )

    def blocks(models_selected, size, policy, visitor=None, request: gr.Request = None):
        """Each model's blocks (stem, stages, pre-logits, head) and what `policy` would freeze."""
        yield from queued(
            "blocks",
            visitor,
            request,
            lambda text: (text, pd.DataFrame(columns=BLOCK_COLUMNS)),
            lambda text: (text, gr.skip()),
            lambda: iter([blocks_view(models_selected, size, policy, limit=ctx.max_models, check=ctx.check_model)]),
        )

    def draw_one(models_selected, size, policy, visitor=None, request: gr.Request = None):
        # gradio wants the single output itself, not a 1-tuple; it passes the request only to a parameter
        # annotated gr.Request (without it the call has no session, and is refused)
        for out in draw(models_selected, size, policy, visitor, request):
            yield out[0] if isinstance(out, tuple) else out

    return SimpleNamespace(profile=profile, count_only=count_only, draw_one=draw_one, blocks=blocks)


def _wire(ctx, ui: SimpleNamespace, h: SimpleNamespace) -> SimpleNamespace:
    state = ctx.visitor_state
    models_dd, size, latency, compare_btn, policy = ui.models_dd, ui.size, ui.latency, ui.compare_btn, ui.policy
    note, table, acc_plot, lat_plot, stage_plot = ui.note, ui.table, ui.acc_plot, ui.lat_plot, ui.stage_plot
    rank_plot, rank_note, diagram_plot = ui.rank_plot, ui.rank_note, ui.diagram_plot
    blocks_md, blocks_df = ui.blocks_md, ui.blocks_df
    extra = [state] if state is not None else []
    # concurrency_limit=None: they start at once in gradio's queue and wait in the app's fair queue.
    profile_event = compare_btn.click(
        h.profile,
        [models_dd, size, latency] + extra,
        [note, table, acc_plot, lat_plot, stage_plot, rank_plot, rank_note],
        api_name="profile",
        concurrency_limit=None,
        concurrency_id="profile",
        show_progress="minimal",
    )
    # the diagram and the blocks follow the chosen models, size and policy (the "blocks" lane: quick, meta device)
    choice_args = dict(concurrency_limit=None, concurrency_id="blocks", show_progress="minimal")
    gr.on(
        [compare_btn.click, policy.change],
        h.draw_one,
        [models_dd, size, policy] + extra,
        [diagram_plot],
        api_name="diagram",
        **choice_args,
    )
    gr.on(
        [compare_btn.click, policy.change],
        h.blocks,
        [models_dd, size, policy] + extra,
        [blocks_md, blocks_df],
        api_name="blocks",
        **choice_args,
    )

    def wire_load(demo: gr.Blocks) -> None:
        # A counting-only comparison on page load, so the tab never opens empty (well under a second).
        demo.load(
            h.count_only,
            [models_dd, size, latency] + extra,
            [note, table, acc_plot, lat_plot, stage_plot, rank_plot, rank_note],
            api_visibility="private",
            **choice_args,
        )
        demo.load(
            h.draw_one,
            [models_dd, size, policy] + extra,
            [diagram_plot],
            api_visibility="private",
            **choice_args,
        )
        demo.load(
            h.blocks,
            [models_dd, size, policy] + extra,
            [blocks_md, blocks_df],
            api_visibility="private",
            **choice_args,
        )

    return SimpleNamespace(
        models=models_dd,
        size=size,
        latency=latency,
        compare=compare_btn,
        table=table,
        note=note,
        policy=policy,
        blocks_df=blocks_df,
        diagram=diagram_plot,
        ranking=rank_plot,
        profile_event=profile_event,
        wire_load=wire_load,
    )
