"""Timing a model on this machine: batch-1 latency (eager, and as a CUDA-graph replay on a GPU) and throughput,
after a warm-up, each call ended by a device sync. `profiling.profile` and the app call these.

On CUDA, batch-1 eager latency is mostly the CPU launching one small kernel after another; the graph replay
launches the whole forward pass at once (`GRAPH_NOTE`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from . import runtime
from .runtime import Precision

__all__ = [
    "GRAPH_NOTE",
    "CPU_BATCH",
    "GPU_BATCH",
    "Latency",
    "default_batch",
    "prepare",
    "time_calls",
    "time_forward",
    "summarize",
    "capture_graph",
    "measure_graph_latency",
    "measure_throughput",
    "with_batch_backoff",
    "measure_latency",
    "latency_runs",
    "make_input",
]

GRAPH_NOTE = (
    "On a GPU, batch-1 eager latency is mostly the CPU launching one small kernel after another "
    "(resnet50 on an H200: 5.4 ms eager, 0.86 ms as a CUDA-graph replay that launches the whole "
    "forward pass at once), so the graph latency is what the GPU itself needs and the eager one is "
    "what a plain PyTorch loop sees."
)

CPU_BATCH = 8
GPU_BATCH = 256


@dataclass
class Latency:
    """Summary of repeated timings, in milliseconds."""

    p50: float  # ms
    p90: float
    mean: float
    runs: int


def default_batch(device: torch.device) -> int:
    """Throughput batch: 256 on a GPU (backed off on out-of-memory), 8 on a CPU."""
    return GPU_BATCH if device.type == "cuda" else CPU_BATCH


def prepare(model: nn.Module, device: torch.device) -> tuple[nn.Module, Precision]:
    """Put `model` on `device` in eval mode and the device's memory format; returns it and its precision."""
    precision = runtime.precision_for(device)
    if device.type == "cuda":
        runtime.configure_cuda()
    return model.to(device, memory_format=precision.memory_format).eval(), precision


def make_input(batch: int, size: int, precision: Precision) -> torch.Tensor:
    x = torch.randn(batch, 3, size, size, device=precision.device)
    return x.contiguous(memory_format=precision.memory_format)


def time_calls(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 50,
    budget_s: float = 2.0,
) -> list[float]:
    """Wall times (ms) of single calls of `fn` after warm-up, each ended by a device sync.

    Runs at least `min_runs`, then stops once `budget_s` is spent or `max_runs` is reached.
    """
    for _ in range(warmup):
        fn()
    runtime.sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs:
        t0 = time.perf_counter()
        fn()
        runtime.sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= min_runs and time.perf_counter() - start > budget_s:
            break
    return times


def time_forward(model: nn.Module, x: torch.Tensor, precision: Precision | None = None, **kwargs) -> list[float]:
    """`time_calls` of eager inference forward passes on `x` (kwargs: warmup, min_runs, max_runs, budget_s)."""
    precision = precision or runtime.precision_for(x.device)
    with torch.inference_mode(), precision.autocast():
        return time_calls(lambda: model(x), x.device, **kwargs)


def summarize(times: list[float]) -> Latency:
    """Median, p90 and mean of a list of times (ms)."""
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return Latency(p50=statistics.median(ordered), p90=p90, mean=statistics.fmean(ordered), runs=len(ordered))


def latency_runs(device: torch.device) -> dict:
    # a GPU forward pass takes about a millisecond: many more runs fit in the same budget
    return dict(warmup=10, min_runs=20, max_runs=300) if device.type == "cuda" else {}


def _graph_autocast(precision: Precision):
    # autocast's cast cache must be off while capturing: a cached weight cast would live outside the graph
    if not precision.amp:
        return precision.autocast()  # a no-op
    return torch.autocast(precision.device.type, dtype=precision.dtype, cache_enabled=False)


def capture_graph(
    model: nn.Module, x: torch.Tensor, precision: Precision, warmup: int = 3
) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
    """Record one inference forward pass on a static copy of `x` as a CUDA graph.

    Warms up on a side stream first (cuDNN autotuning and lazy allocations stay out of the graph).

    Returns:
        (graph, static_input, static_output): copy a new batch into static_input, call
        graph.replay(), then read static_output (overwritten by the next replay).
    """
    static_x = x.clone()
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side), torch.inference_mode(), _graph_autocast(precision):
        for _ in range(warmup):
            model(static_x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph), _graph_autocast(precision):
        static_out = model(static_x)
    return graph, static_x, static_out


def measure_graph_latency(
    model: nn.Module, x: torch.Tensor, precision: Precision, budget_s: float = 2.0
) -> tuple[Latency | None, str | None]:
    """Batch latency of CUDA-graph replays of `model` on `x` (CUDA only).

    Returns:
        (latency, None), or (None, warning) when the model cannot be captured (it syncs with the
        CPU, branches on values, ...) or the device is not CUDA. Never raises for a failed capture.
    """
    if x.device.type != "cuda":
        return None, None
    stream = torch.cuda.current_stream(x.device)
    try:
        graph, _, _ = capture_graph(model, x, precision)
        return summarize(time_calls(graph.replay, x.device, **latency_runs(x.device), budget_s=budget_s)), None
    except Exception as err:  # noqa: BLE001 - a model that cannot be captured keeps its eager numbers
        _recover_cuda(stream)
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return None, f"CUDA-graph capture failed, graph latency not measured: {type(err).__name__}: {first_line}"


def _recover_cuda(stream: torch.cuda.Stream) -> None:
    # a capture that fails inside torch.cuda.graph can leave its capture stream current: go back
    torch.cuda.set_stream(stream)
    try:
        torch.cuda.synchronize(stream.device)
    except Exception:  # noqa: BLE001 - best effort after a failed capture
        pass
    torch.cuda.empty_cache()


B = TypeVar("B")


def with_batch_backoff(run: Callable[[int], B], batch: int, min_batch: int = 1) -> tuple[B, int]:
    """Call `run(batch)`, halving the batch on out-of-memory until it fits.

    Returns:
        (run's result, the batch that fitted).
    Raises:
        torch.OutOfMemoryError: even `min_batch` does not fit.
    """
    while True:
        try:
            return run(batch), batch
        except torch.OutOfMemoryError:
            if batch <= min_batch:
                raise
        # outside the except block: the traceback (and the tensors its frames hold) is gone
        batch = max(min_batch, batch // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def measure_throughput(
    model: nn.Module, size: int, precision: Precision, batch: int | None = None, budget_s: float = 2.0
) -> tuple[float, int]:
    """Images/s of eager forward passes at `batch` (default: `default_batch`), halved on out-of-memory.

    Returns:
        (images per second, the batch measured).
    """
    device = precision.device

    def run(b: int) -> float:
        x = make_input(b, size, precision)
        warmup = 3 if device.type == "cuda" else 1  # CUDA: cuDNN autotunes the new shape here
        times = time_forward(model, x, precision, warmup=warmup, min_runs=3, max_runs=20, budget_s=budget_s)
        return b * 1e3 / statistics.median(times)

    return with_batch_backoff(run, batch or default_batch(device))


def measure_latency(
    model: nn.Module, size: int, device: torch.device, batch: int | None = None, budget_s: float = 2.0
) -> tuple[Latency, float, int, str]:
    """Eager batch-1 latency and throughput of a real model (moved to `device`, eval mode).

    Returns:
        (batch-1 latency, images/s at the batch, the batch measured, precision label).
    """
    model, precision = prepare(model, device)
    x1 = make_input(1, size, precision)
    lat = summarize(time_forward(model, x1, precision, **latency_runs(device), budget_s=budget_s))
    ips, used = measure_throughput(model, size, precision, batch, budget_s)
    return lat, ips, used, precision.label
