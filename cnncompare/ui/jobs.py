"""One comparison's life on the server, from the Start button to its final page: wait in the fair queue (one
training at a time, one per visitor; the place in line is shown), load the dataset, run the engine's plan into
the visitor's own folder while the page follows it about once a second, then the downloads and the visitor's
quota. Stop sets a per-session flag the engine checks between steps; a page that goes away (Stop, a closed tab)
lets the engine finish and save in a background thread, and the page picks that final state up after Stop.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from .. import compare, lessons, training
from ..errors import CNNCompareError
from ..estimate import duration_text
from ..executor import Job, work
from ..server import classroom, ledger, visitors
from ..server.fairqueue import wait_text
from . import gallery as gallery_ui
from .common import SESSIONS, Context, message, warn_md
from .comparison import (
    DATA_INFO,
    Comparison,
    admit,
    eviction_note,
    gpu_seconds_for,
    info_key,
    read_comparison,
    share_of,
    spec_of,
    unpacking,
)
from .gpu import gpu
from .results import View, blank_outputs, status_only

__all__ = ["finetune", "train", "final_page", "write_downloads", "YIELD_EVERY_S"]

YIELD_EVERY_S = 1.0
FOLLOWER_SLOWER = 3  # a follower's page every 3 s


ZIP_WEIGHTS_MB = 100.0  # a comparison's weights up to this go in its zip; larger ones are taken home one run at a time


def write_downloads(
    ctx: Context, visitor: visitors.Visitor, results: list[training.RunResult]
) -> tuple[list[str], bool]:
    """The engine's export (results.csv, results.json, a zip of the run folders), written for this visitor into a
    folder with a random name in their own download folder (run folders are never served by path), counted against
    their quota and the server's cap before it is written (`ledger.reserve`); and whether the weights are in it.
    Weights over ZIP_WEIGHTS_MB stay out (two VGG runs made a 1 GB zip per visitor, an hour): the export panel
    takes one run home, as standalone weights."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folders = [Path(r.run_dir) for r in results if r.run_dir and Path(r.run_dir).is_dir()]
    weights = sum((d / "weights.safetensors").stat().st_size for d in folders if (d / "weights.safetensors").is_file())
    with_weights = weights <= ZIP_WEIGHTS_MB * 2**20
    others = sum(f.stat().st_size for d in folders for f in d.rglob("*") if f.is_file() and f.suffix != ".safetensors")
    need = others + (weights if with_weights else 0) + 2**20  # the zip of the folders, and the tables
    with ledger.reserve(ctx, visitor, need, "The downloads of this comparison", "downloads"):
        paths = compare.export(results, ledger.downloads_dir(visitor), stamp=stamp, include_weights=with_weights)
    return [str(p) for p in paths], with_weights


def _wrap_up(
    ctx: Context, visitor: visitors.Visitor, view: View, stopped: bool, lesson: lessons.Lesson | None = None
) -> tuple:
    """The final page: what really happened (done, failed, or where it was stopped), what a lesson's runs showed,
    the downloads, the notes."""
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
        if lesson is not None and (reading := lesson.read(view.results)).sentence:
            mark = "" if reading.showed else "⚠ "
            view.headline += f"\n\n{mark}**What the runs showed:** {reading.sentence}"
    try:
        view.files, with_weights = write_downloads(ctx, visitor, view.results)
        saved = [r for r in trained if r.final_epoch]
        who = "by everyone in your workspace" if visitor.workspace else "only by you"
        weights = (
            " with weights"
            if with_weights
            else " (the weights, over 100 MB, are not in it: 'Take a run home' below exports one run at a time)"
        )
        view.log.append(
            "Downloads: the results table (CSV, JSON) and a zip of the run folders"
            + (f"{weights}. The trained runs can now be picked on the Predict tab ({who})." if saved else ".")
        )
    except CNNCompareError as err:  # over the visitor's quota or the server's cap: the runs are kept all the same
        view.log.append(warn_md(f"No download zip: {err}"))
    except OSError as err:
        view.log.append(warn_md(f"Could not write the downloads ({type(err).__name__})."))
    try:  # in a class's workspace, every member's page shows it next (and it comes along into one)
        classroom.record(ctx, visitor, view.headline, view.log[0] if view.log else "", [r.run_dir for r in trained])
    except (CNNCompareError, OSError) as err:
        view.log.append(warn_md(f"Not shown to your workspace: {message(err)}"))
    try:  # the visitor's quota and the server's cap and expiry, after the downloads hold this comparison
        view.log += [warn_md(line) for line in ledger.after_run(ctx, visitor)]
    except OSError:
        pass
    view.folded = True
    return view.outputs(full=True)


class _Job:
    """The state of one comparison that must outlive a cancelled page (see `_finish_in_background`)."""

    def __init__(self):
        self.view: View | None = None
        self.stream = None  # the engine's event stream (compare.run_plan)
        self.ticket = None  # its place in the fair queue, held until the engine has stopped and saved
        self.data_spec = None  # its dataset, for the confusion gallery made when the runs are over (also after a Stop)
        self.share = None  # how its runs are shared with identical ones (`sharing.Share`)
        self.claims: dict[str, str] = {}  # label -> 'mine' | 'own' (computed here) | 'live' | 'done' (followed)
        self.unpacking = None  # the reservation of an upload's unpacking, held while its worker may write it


def _release(ctx: Context, job: _Job) -> None:
    if job.unpacking is not None:
        job.unpacking.__exit__(None, None, None)
        job.unpacking = None
    if job.ticket is not None:
        ctx.queue.leave(job.ticket)
    if job.share is not None:  # runs it claimed and never finished: whoever follows them is told
        job.share.registry.release(job.share.token)


def _remember_gallery(ctx: Context, visitor, view: View, spec) -> None:
    """Keep what the confusion gallery needs of this comparison (its note, if any, goes to the status)."""
    note = gallery_ui.remember(ctx, visitor, view.results, spec)
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
            if job.data_spec is not None:
                _remember_gallery(ctx, visitor, job.view, job.data_spec)
            outputs = _wrap_up(ctx, visitor, job.view, stopped=True)
    except Exception as err:  # never let a background thread die silently
        message(err)
    finally:
        SESSIONS.finish(session, handle, outputs)
        _release(ctx, job)


def _limits_line(ctx: Context) -> str | None:
    most = ctx.env.max_run_s
    if most and most > 0:
        return (
            f"On this server each run stops after at most {duration_text(most)} (what it reached is kept), and "
            f"takes at most {ctx.env.max_epochs} epochs."
        )
    return None


def finetune(ctx: Context, session: str, values: Mapping[str, Any], visitor: visitors.Visitor):
    """Generator: wait for the machine in the fair queue (in the app's own process), then `train`; yields
    (status, progress, curves, table, confusion, accuracy-vs-latency, files)."""
    job = _Job()
    try:  # a comparison that cannot run, or a visitor over their share, never gets a stop flag or a place in line
        c = read_comparison(ctx, values, visitor)
        admit(ctx, c)  # what it costs, before it waits: memory on a CPU, GPU time on a shared GPU
        job.share = share_of(ctx, c, visitor)
        job.claims = claims = job.share.claim_all(c.plan)  # identical runs finished or in progress are followed
        lane = "train" if any(v in ("mine", "own") for v in claims.values()) else "watch"
        job.ticket = ctx.queue.join(visitor.id, lane, visitor.address)
    except Exception as err:
        text = message(err)
        gr.Warning(text)
        yield blank_outputs(warn_md(text))
        return
    handle = SESSIONS.start(session)
    training_started = False
    try:
        for position, eta in ctx.queue.waits(job.ticket):
            if handle.stop.is_set():
                break
            yield status_only(wait_text(job.ticket.lane, position, eta))
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
    return blank_outputs("**Stopped** before the run started: nothing ran.")


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
            yield blank_outputs(f"**Loading the dataset ({c.dataset})…**")
            job.data_spec = spec_of(ctx, c, visitor)
            computed = _start(ctx, c, visitor, job, handle)
        except Exception as err:
            text = message(err)
            gr.Warning(text)
            final = blank_outputs(warn_md(text))
            finished = True
            yield final
            return
        view = job.view = View([run.label for run in c.plan.runs()], session)
        view.log.append(_data_line(c, computed.info))
        limits = _limits_line(ctx)
        if limits:
            view.log.append(limits)
        if note := eviction_note(ctx, c, visitor):  # said before the runs take the disk
            view.log.append(warn_md(note))
        last_yield = 0.0
        # A follower's page (a run identical to one in progress, `watch` lane) is redrawn less often: thirty of
        # them redrawn every second cost the server more than the run they watch.
        every = YIELD_EVERY_S * (FOLLOWER_SLOWER if job.ticket is not None and job.ticket.lane == "watch" else 1)
        out_dir = visitors.visitor_dir(ctx, visitor, create=True)  # this visitor's own folder
        job.stream = compare.run_shared(
            c.plan,
            computed.events,
            out_dir=out_dir,
            should_stop=handle.stop.is_set,
            owner=visitor.id,
            share=job.share,
            claims=job.claims,
            classes=computed.info.classes if computed.info else (),
        )
        for ev in job.stream:
            if view.event(ev):
                yield view.outputs(full=True)
                last_yield = time.monotonic()
            elif ev.kind == "pause" or time.monotonic() - last_yield >= every:  # a pause is said at once
                last_yield = time.monotonic()
                yield view.outputs(full=False)
        job.stream = None  # all runs are over: nothing left to finish if the page goes away now
        _remember_gallery(ctx, visitor, view, job.data_spec)
        lesson = lessons.lesson_of(c.dataset, c.max_per_class, c.plan)  # a Learn preset's: read what it showed
        final = _wrap_up(ctx, visitor, view, stopped=handle.stop.is_set(), lesson=lesson)
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


class _Computed:
    """The runs this comparison computes itself: a job's stream (the events of those runs), and its dataset's
    `DataInfo` (the job's first item; kept for the followers of the same dataset, who decode nothing)."""

    def __init__(self, stream, info):
        self.stream, self.info = stream, info

    def events(self, labels: list[str]):
        return self.stream if self.stream is not None else iter(())


def _start(ctx: Context, c: Comparison, visitor: visitors.Visitor, job: _Job, handle) -> _Computed:
    """Start the worker of the runs this comparison computes (`executor.work.fine_tune`): the dataset is decoded
    there, never in the web server; an upload's unpacking is reserved first and held while the worker may write.

    Raises:
        CNNCompareError: the dataset cannot be read (a bad zip, over a limit), in one sentence.
    """
    mine = [label for label, claim in job.claims.items() if claim in ("mine", "own")]
    key = info_key(job.data_spec, visitor)
    if not mine:
        return _Computed(None, DATA_INFO.peek(key))
    job.unpacking = unpacking(ctx, job.data_spec, visitor)
    job.unpacking.__enter__()
    spec = Job(
        work.FN + "fine_tune",
        dict(
            plan=c.plan,
            data_spec=job.data_spec,
            labels=mine,
            out_dir=str(visitors.visitor_dir(ctx, visitor, create=True)),
            owner=visitor.id,
        ),
        kind="train",
        memory_mb=c.memory_mb or ctx.env.max_run_mb,
        label="the training",
    )
    # a visitor's own weights files live on this server: their runs stay on this machine's workers
    executor = ctx.workers if c.plan.weights_files else ctx.executor
    stream = executor.stream(spec, handle.stop.is_set)
    info = next(stream)
    DATA_INFO.put(key, info)
    return _Computed(stream, info)


def _data_line(c: Comparison, info) -> str:
    if info is None:
        return f"Dataset **{c.dataset}** (the runs follow identical ones of other visitors: nothing decoded here)."
    skipped = info.skipped
    return (
        f"Dataset **{info.name}**: {len(info.classes)} classes, {info.n_train} training and {info.n_val} validation "
        "images" + (f"; {skipped} file(s) skipped (see the dataset report)." if skipped else ".")
    )


def final_page(session: str, timeout_s: float = 120.0):
    """After Stop: the final page of this session's run, once the engine has stopped and saved it."""
    handle = SESSIONS.last(session)
    if handle is None or not handle.user_stop.is_set():
        return (gr.skip(),) * 7
    if not handle.done.wait(timeout_s) or handle.outputs is None:
        return (gr.skip(),) * 7
    return handle.outputs
