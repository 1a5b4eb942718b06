"""What a job is and what every executor answers (see the package's docstring)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import CNNCompareError, first_line

__all__ = ["Job", "JobEnded", "Executor", "resolve", "run_here", "outcomes", "KINDS"]

KINDS = ("local", "inline", "ray")


class JobEnded(CNNCompareError):
    """A job that ended before it finished (its worker killed, over its memory, its node lost)."""


@dataclass(frozen=True)
class Job:
    """What a worker runs: `fn` ("module:function" of the engine) called with `kwargs`; picklable.

    `memory_mb`: what it was admitted with (counted before it queued; the worker is ended past it, with slack);
    `kind` names it in sentences and in `ps` ("train", "export", "gallery", "decode", "estimate")."""

    fn: str
    kwargs: dict = field(default_factory=dict)
    kind: str = "train"
    memory_mb: float = 0.0
    label: str = ""
    gpus: float = 0.0
    cpus: float = 1.0

    @property
    def what(self) -> str:
        return self.label or {"train": "the training", "export": "the export"}.get(self.kind, f"the {self.kind}")


def resolve(fn: str) -> Callable:
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)


def run_here(job: Job, should_stop: Callable[[], bool] | None = None) -> Any:
    """Call the job's function in this process: its value, or its generator (`should_stop` passed to functions
    that take it)."""
    fn = resolve(job.fn)
    kwargs = dict(job.kwargs)
    if "should_stop" in inspect.signature(fn).parameters:
        kwargs["should_stop"] = should_stop or (lambda: False)
    return fn(**kwargs)


def outcomes(job: Job, should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[str, Any]]:
    """Run a job here as a worker does, said as messages: ("item", x) for each item it yields, then ("return",
    value), or ("error", one sentence) when it fails."""
    try:
        out = run_here(job, should_stop)
        value = out
        if inspect.isgenerator(out):
            while True:
                try:
                    item = next(out)
                except StopIteration as done:
                    value = done.value
                    break
                yield ("item", item)
        yield ("return", value)
    except CNNCompareError as err:
        yield ("error", str(err))
    except Exception as err:  # one sentence back; the worker's log keeps the kind
        yield ("error", f"{type(err).__name__}: {first_line(err)[:200]}")


class Executor:
    """The two calls every executor answers (see the module's docstring)."""

    name = "?"

    def stream(self, job: Job, should_stop: Callable[[], bool] | None = None) -> Iterator[Any]:
        raise NotImplementedError

    def call(self, job: Job, should_stop: Callable[[], bool] | None = None) -> Any:
        """A function job's value (a generator job's items are passed over; its return value is returned)."""
        gen = self.stream(job, should_stop)
        while True:
            try:
                next(gen)
            except StopIteration as done:
                return done.value

    def running(self) -> list[dict]:
        """The jobs running now (kind, label, process id where there is one), for the operator."""
        return []

    def close(self) -> None:
        pass
