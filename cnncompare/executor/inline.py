"""Jobs in the calling process, as before workers existed: the CLI, and a ZeroGPU Space (its GPU is attached only
inside the `spaces.GPU` function that runs the job, so the job cannot leave that process)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from .base import Executor, Job, run_here

__all__ = ["InlineExecutor"]


class InlineExecutor(Executor):
    name = "inline"

    def stream(self, job: Job, should_stop: Callable[[], bool] | None = None) -> Iterator[Any]:
        out = run_here(job, should_stop)
        if inspect.isgenerator(out):
            return (yield from out)
        return out
