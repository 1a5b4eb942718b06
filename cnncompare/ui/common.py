"""What the tabs share: where runs live, per-session stop flags, messages, small formatters.

Nothing here holds engine logic: it keeps user-facing messages readable, keeps one
user's Stop from touching another user's run, and caches built models for prediction.
Module globals are shared by every visitor, so anything per user is keyed by
`request.session_hash`; models and tensors never go into `gr.State`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from .. import compare, models
from ..env import Env
from ..errors import CNNCompareError, first_line, shown, without_paths
from ..executor import Executor, choose
from ..server import sharing, visitors
from ..server.fairqueue import FairQueue, queued
from ..serving import BoundedCache
from .gpu import on_zerogpu

log = logging.getLogger("cnncompare.ui")


# Lanes of the fair queue and their slots (jobs at once): one training uses the machine at a time; blocks: quick
# jobs (counting on the meta device, listing runs); files: reading and writing a visitor's weights files.
LANES = {"train": 1, "watch": 256, "estimate": 1, "profile": 2, "predict": 4, "blocks": 4, "gallery": 2, "files": 1}
MEASURING = ("profile", "estimate")  # lanes whose work times itself: it takes the cores alone (`Gate.quiet`)


@dataclass
class Context:
    """Where runs live and the limits every tab enforces, read once from the environment (`env.Env`);
    the fair queue in front of the work; the component that holds the visitor's key (set by build_app)."""

    env: Env
    queue: FairQueue = None  # type: ignore[assignment]
    visitor_state: Any = None  # gr.BrowserState; None when a tab is built on its own (tests)
    workspaces: visitors.Workspaces = None  # type: ignore[assignment]
    shared: sharing.SharedRuns = None  # type: ignore[assignment]  # identical runs computed once
    executor: Executor = None  # type: ignore[assignment]  # where trainings run (CNNCOMPARE_EXECUTOR)
    workers: Executor = None  # type: ignore[assignment]  # where exports, decoding and galleries run: this machine

    def __post_init__(self):
        if self.executor is None:
            kind = "inline" if on_zerogpu() else self.env.executor
            self.executor = choose.shared(kind, spare=self.env.spare_workers, slack=self.env.worker_slack)
        if self.workers is None:
            self.workers = (
                self.executor
                if self.executor.name != "ray"
                else choose.shared("local", spare=self.env.spare_workers, slack=self.env.worker_slack)
            )
        if self.queue is None:
            self.queue = FairQueue(
                {**LANES, "train": choose.train_slots(self.executor, self.env.train_slots)},
                max_waiting=self.env.max_waiting,
                max_queued=self.env.queue_size,
                per_address=self.env.train_per_address,
            )
        if self.workspaces is None:
            self.workspaces = visitors.Workspaces(visitors.visitors_root(self), self.env.code_attempts)
        if self.shared is None:
            self.shared = sharing.SharedRuns(self.runs_root)

    def visitor(self, value: Any, request: Any) -> visitors.Visitor:
        """The visitor of a call (`visitors.resolve`), with this server's workspace codes.

        Raises:
            CNNCompareError: a bad key, a code this server did not make, no key and no session.
        """
        return visitors.resolve(value, request, self.workspaces)

    @classmethod
    def from_env(cls, runs_root: str | Path | None = None, env: Env | None = None) -> Context:
        """`Env.read()` (or `env`), with `runs_root` (when given) in place of CNNCOMPARE_RUNS; makes the
        runs folder."""
        env = env or Env.read()
        root = Path(runs_root).expanduser() if runs_root else env.runs_dir
        env = dataclasses.replace(env, runs_dir=root.resolve())
        env.runs_dir.mkdir(parents=True, exist_ok=True)
        return cls(env)

    @property
    def runs_root(self) -> Path:
        """Runs made with the CLI (offered as shared examples when CNNCOMPARE_SHARED_EXAMPLES=1) and, under
        visitors/, every visitor's runs (CNNCOMPARE_RUNS or ./runs)."""
        return self.env.runs_dir

    @property
    def data_dir(self) -> Path:
        """Where CIFAR downloads and unpacked uploads go (never inside a run folder)."""
        return self.env.data_dir

    @property
    def max_models(self) -> int:
        """Models per Compare / Predict request: keeps one visitor from hogging the machine."""
        return self.env.max_models

    @property
    def max_runs(self) -> int:
        """Runs per fine-tuning comparison."""
        return self.env.max_runs

    @property
    def limits(self) -> compare.Limits:
        """What one comparison may ask of this server (runs, epochs, time, model size); the plan applies them."""
        return compare.Limits.of(self.env)

    @property
    def offline(self) -> bool:
        """Downloads are switched off (no CIFAR, no pretrained weights)."""
        return self.env.offline

    def check_model(self, name: str) -> None:
        """The catalog, or a timm model under CNNCOMPARE_MAX_MODEL_PARAMS_M million parameters.

        Raises:
            CNNCompareError: an unknown model, or one too big for this server.
        """
        models.check_allowed(name, self.env.max_model_params_m)


def in_line(
    ctx: Context,
    lane: str,
    visitor,
    request,
    work: Callable,
    *,
    refused: Callable,
    waiting: Callable,
    computes: bool | None = None,
    warn: bool = False,
):
    """Generator, the one opening of every queued endpoint: who is calling (`ctx.visitor`), then their place in
    `lane` of the fair queue, then `work(visitor)`'s answers (a generator, or one answer). A refusal (a bad key, no
    session, over a limit) yields `refused(sentence)` once (`warn`: also as a toast); `waiting(sentence)` is
    yielded while in line. `computes`: whether the work uses this process's cores (default: all lanes but the
    measuring ones, whose work takes the machine alone in `Gate.quiet`)."""

    def refuse(text: str):
        if warn:
            gr.Warning(text)
        return refused(text)

    try:
        who = ctx.visitor(visitor, request)
    except CNNCompareError as err:
        yield refuse(str(err))
        return

    def run():
        out = work(who)
        if hasattr(out, "__next__"):
            yield from out
        else:
            yield out

    yield from queued(
        ctx.queue,
        who.id,
        lane,
        run,
        refused=refuse,
        waiting=waiting,
        computes=lane not in MEASURING if computes is None else computes,
        address=who.address,
    )


# --------------------------------------------------------------------------- sessions


class RunHandle:
    """One training run of one session: its stop flag and, once it has ended, what the page should show."""

    def __init__(self):
        self.stop = threading.Event()  # checked by the engine between steps
        self.user_stop = threading.Event()  # the visitor pressed Stop (not just: the run ended)
        self.done = threading.Event()
        self.outputs: tuple | None = None

    def finish(self, outputs: tuple | None) -> None:
        self.outputs = outputs
        self.done.set()


class Sessions:
    """Per-session training runs: stop flags, and the final page of the last run.

    The Stop button sets the flags of its own session only; the training generator checks them
    between steps, so a stop lands within one step even while the generator is not yielding.
    (An API client may run more than one training in one session, under different visitor keys:
    Stop stops them all.)
    """

    KEEP_LAST = 256  # finished runs remembered (their final tables), oldest forgotten first

    def __init__(self):
        self._lock = threading.Lock()
        self._active: dict[str, list[RunHandle]] = {}
        self._last: OrderedDict[str, RunHandle] = OrderedDict()

    def start(self, session: str) -> RunHandle:
        handle = RunHandle()
        with self._lock:
            self._active.setdefault(session, []).append(handle)
            self._last[session] = handle
            self._last.move_to_end(session)
            while len(self._last) > self.KEEP_LAST:
                self._last.popitem(last=False)
        return handle

    def stop(self, session: str) -> bool:
        with self._lock:
            handles = list(self._active.get(session, ()))
        for handle in handles:
            handle.user_stop.set()
            handle.stop.set()
        return bool(handles)

    def finish(self, session: str, handle: RunHandle, outputs: tuple | None) -> None:
        with self._lock:
            handles = self._active.get(session, [])
            if handle in handles:
                handles.remove(handle)
            if not handles:
                self._active.pop(session, None)
        handle.finish(outputs)

    def last(self, session: str) -> RunHandle | None:
        with self._lock:
            return self._last.get(session)

    def running(self, session: str) -> bool:
        with self._lock:
            return bool(self._active.get(session))

    @property
    def active(self) -> int:
        with self._lock:
            return sum(len(h) for h in self._active.values())


SESSIONS = Sessions()


def session_of(request) -> str:
    """The visitor's session id (gradio_client gets one per Client), or a fixed id when called directly."""
    return getattr(request, "session_hash", None) or "local"


# --------------------------------------------------------------------------- messages


# The engine's sentences speak to the CLI where a command line helps; a web visitor is told what to click instead.
CLI_TO_PAGE = [
    ("Run 'python -m cnncompare models' for the catalog", "The Architectures tab lists the catalog"),
    (
        "pass a local weights file (--weights PATH / 'weights file' in the app) or train from scratch (pretrained off)",
        "untick 'Start from ImageNet weights' to train from scratch",
    ),
    ("(--weights PATH / 'weights file' in the app)", ""),
]


def for_the_page(text: str) -> str:
    """An engine message as a web visitor reads it: command-line hints become what to click in the app."""
    for cli, page in CLI_TO_PAGE:
        text = text.replace(cli, page)
    return text


def message(err: BaseException) -> str:
    """One readable sentence for the page; unexpected errors are logged with their traceback."""
    if isinstance(err, CNNCompareError):
        return without_paths(for_the_page(str(err)))
    if isinstance(err, gr.Error):  # raised on purpose, e.g. by the upload checks: its message is for the visitor
        return without_paths(str(err.message))
    log.exception("unexpected error in the app", exc_info=err)
    text = shown(without_paths(first_line(err)), 200) if str(err).strip() else ""
    return (
        f"Something unexpected went wrong ({type(err).__name__}{': ' + text if text else ''}). "
        "The app keeps running; try other settings."
    )


def warn_md(text: str) -> str:
    return f"⚠️ {text}"


def parse_names(value, limit: int | None = None) -> list[str]:
    """Model names from a multiselect (list) or a comma/newline separated string, de-duplicated; at most `limit`."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).replace("\n", ",").split(",")
    out: list[str] = []
    for item in items:
        name = shown(str(item).strip(), 80)  # no model or run has a longer name; what is echoed stays short
        if name and name not in out:
            out.append(name)
    if limit is not None and len(out) > limit:
        raise CNNCompareError(f"Choose at most {limit} models at a time (got {len(out)}).")
    return out


def file_path(value) -> str | None:
    """A path from whatever an upload component hands over (path string, FileData dict, object); whether it
    is an upload is checked by `uploads.checked_upload`."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or None
    return getattr(value, "path", None) or getattr(value, "name", None)


def millions(n) -> float | None:
    return None if n is None else round(n / 1e6, 2)


def billions(n) -> float | None:
    return None if n is None else round(n / 1e9, 3)


def rounded(x, digits: int = 1) -> float | None:
    return None if x is None else round(float(x), digits)


def styled(df, formats: dict):
    """A table whose numbers read well in the page (thousands separators, fixed decimals, '–' for none),
    while API clients still get the raw values."""
    formats = {k: v for k, v in formats.items() if k in df.columns}
    return df.style.format(formats, na_rep="–").hide(axis="index")


def shape_text(shape) -> str:
    return "×".join(str(s) for s in shape) if shape else "–"


# --------------------------------------------------------------------------- model cache

# Built models shared by all visitors (inference only: eval mode, never trained), bounded by the bytes of their
# parameters and buffers; the least recently used go first, and a model larger than the budget is used once.
MODELS = BoundedCache(2048 * 2**20, size=models.model_bytes)
