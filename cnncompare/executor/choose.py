"""The executor named by CNNCOMPARE_EXECUTOR."""

from __future__ import annotations

import threading

from ..errors import CNNCompareError
from .base import Executor
from .cluster import RayExecutor
from .inline import InlineExecutor
from .local import LocalExecutor

__all__ = ["make", "shared", "train_slots"]

_MADE: dict[tuple, Executor] = {}
_LOCK = threading.Lock()


def shared(kind: str, **kw) -> Executor:
    """`make`, once per process for the same arguments: the apps of one process share their workers."""
    key = (kind, *sorted(kw.items()))
    with _LOCK:
        if key not in _MADE:
            _MADE[key] = make(kind, **kw)
        return _MADE[key]


def train_slots(executor: Executor, asked: int = 0) -> int:
    """Trainings at once: `asked`, or one per GPU (1 on a CPU; the cluster's slots with Ray)."""
    if asked > 0:
        return asked
    if isinstance(executor, RayExecutor):
        return executor.slots()
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def make(kind: str, *, spare: int = 1, slack: float = 1.5, address: str | None = None) -> Executor:
    """The executor named by CNNCOMPARE_EXECUTOR (`KINDS`).

    Raises:
        CNNCompareError: an unknown kind; `ray` without Ray installed, or a cluster it cannot reach.
    """
    kind = (kind or "local").strip().lower()
    if kind == "inline":
        return InlineExecutor()
    if kind == "local":
        return LocalExecutor(spare=spare, slack=slack)
    if kind == "ray":
        return RayExecutor(address=address, slack=slack)
    raise CNNCompareError(f"Unknown executor '{kind[:40]}': choose local, inline or ray (CNNCOMPARE_EXECUTOR).")
