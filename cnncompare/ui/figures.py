"""Figures built once and sent as they are.

A plotly figure is a pure function of its data, and building one is pure Python under the GIL: 50-200 ms on this
2-core CPU (`make_subplots` alone about 90 ms), longer than a prediction. Thirty visitors following the same run,
or counting the same four models, would each build the same figure, and a training's thread would wait for the
GIL meanwhile. So a figure is kept by the digest of its data, already serialised (gradio's `PlotData`, which its
`Plot` sends without touching it), bounded in bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

from gradio.components.plot import PlotData

from ..serving import BoundedCache

__all__ = ["figure", "FIGURES"]

FIGURES = BoundedCache(64 * 2**20, size=lambda p: 512 + len(p.plot))


class _Opaque(TypeError):
    """An argument whose content cannot be read as data: that figure is built, not kept."""


def _plain(value: Any):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors: their whole content
        return value.tolist()
    raise _Opaque(type(value).__name__)


def _digest(fn: Callable, args: tuple, kwargs: dict) -> str | None:
    try:
        text = json.dumps(
            [fn.__module__, fn.__qualname__, args, kwargs], sort_keys=True, default=_plain, allow_nan=True
        )
    except (_Opaque, TypeError, ValueError):
        return None
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def figure(fn: Callable[..., Any], *args, **kwargs) -> PlotData:
    """`fn(*args, **kwargs)` (a function of `cnncompare.plots`) as gradio's serialised plot, built once per content."""

    def build() -> PlotData:
        return PlotData(type="plotly", plot=fn(*args, **kwargs).to_json())

    key = _digest(fn, args, kwargs)
    return build() if key is None else FIGURES.get(key, build)
