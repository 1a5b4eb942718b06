"""What a model costs: parameters, MACs/FLOPs, size, activation memory, latency, throughput.

Counting (parameters, MACs, activation memory) runs on the meta device: shapes only, no
weights allocated, no arithmetic done, so profiling VGG16 costs milliseconds. Timing runs
the real model on the chosen device, in the precision `runtime.precision_for` picks (bf16
autocast and channels_last on CUDA, fp32 on a CPU).

MACs vs FLOPs: papers and torchvision's `_ops` count multiply-accumulates (MACs);
`torch.utils.flop_counter` counts 2 FLOPs per MAC. We report both, counted over
convolutions and matrix multiplications only (conv, mm, addmm, bmm); BatchNorm, ReLU,
pooling, additions and biases are not counted, as in torchvision's published numbers.

On CUDA, batch-1 latency is measured twice: eagerly (one Python call per layer, so the CPU
launching kernels dominates) and as a CUDA-graph replay (the whole forward pass launched at
once). See `GRAPH_NOTE`.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import statistics
import subprocess
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from . import catalog, models, runtime
from .errors import CNNCompareError
from .runtime import Precision
from .settings import Setting, coerce

__all__ = [
    "INPUT_SIZE",
    "input_size",
    "COUNTED_OPS",
    "GRAPH_NOTE",
    "PEAK_TFLOPS",
    "Latency",
    "Profile",
    "profile",
    "count_macs",
    "activation_bytes",
    "weights_bytes",
    "environment",
    "driver_version",
    "peak_tflops",
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
]

COUNTED_OPS = "conv, mm, addmm, bmm (multiply-adds; BatchNorm, activations, pooling, adds and biases not counted)"

GRAPH_NOTE = (
    "On a GPU, batch-1 eager latency is mostly the CPU launching one small kernel after another "
    "(resnet50 on an H200: 5.4 ms eager, 0.86 ms as a CUDA-graph replay that launches the whole "
    "forward pass at once), so the graph latency is what the GPU itself needs and the eager one is "
    "what a plain PyTorch loop sees."
)

# Dense (no 2:4 sparsity) tensor-core peak in TFLOP/s for the precision cnncompare runs on the card: bf16,
# or fp16 on cards without bf16 (T4, V100). Vendor datasheets; the first substring found in
# torch.cuda.get_device_name() wins, so specific names come before general ones. None: not published.
PEAK_TFLOPS: tuple[tuple[str, float | None], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),  # GH200 matches H200
    ("A100", 312.0),
    ("A10G", None),
    ("A10", 125.0),  # AWS publishes no tensor peak for its A10G
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 4090", 165.2),  # 4090: fp32 accumulate
    ("T4", 65.0),
    ("V100-PCIE", 112.0),
    ("V100", 125.0),  # fp16: no bf16 tensor cores
)

# The profiling input size, shared by the app and the CLI. Empty (None) or "native" = each model's own
# size (224 px for most, 299 px for Inception v3). Wider bounds than a training run's (TrainSettings.size):
# counting a 1024 px input is cheap and timing it still quick.
INPUT_SIZE = Setting(
    "size",
    "Input size (px)",
    "the side of the square input; leave empty (native) for each model's own size: 224 px, Inception v3 299 px",
    int,
    None,
    low=16,
    high=1024,
    optional=True,
    none_text="native",
)


def input_size(value) -> int | None:
    """A size typed in the app or the CLI: a whole number of pixels, or None for each model's native size.

    Raises:
        CNNCompareError: neither a number in INPUT_SIZE's bounds nor empty/"native".
    """
    if isinstance(value, str) and value.strip().lower() in ("native", "auto", "default"):
        return None
    return coerce(INPUT_SIZE, value)


CPU_BATCH = 8
GPU_BATCH = 256


@dataclass
class Latency:
    """Summary of repeated timings, in milliseconds."""

    p50: float  # ms
    p90: float
    mean: float
    runs: int


@dataclass
class Profile:
    """Counts and timings of one model at one input size on one device (`to_dict` for JSON)."""

    name: str
    family: str
    input_size: int
    params: int
    trainable_params: int
    macs: int
    flops: int
    size_mb: float  # fp32 weights + buffers, MiB (as torchvision's _file_size)
    activation_mb: float  # peak memory of activations in one batch-1 inference forward pass, MiB
    latency_ms: Latency | None  # batch 1, eager forward passes
    throughput_ips: float | None  # images/s at `batch`
    batch: int
    device: str
    dtype: str
    threads: int
    ref_top1: float | None
    ref_top5: float | None
    year: int | None
    counted_ops: str = COUNTED_OPS
    env: dict = field(default_factory=dict)
    latency_graph_ms: Latency | None = None  # batch 1, CUDA-graph replays (CUDA only; see GRAPH_NOTE)
    tflops: float | None = None  # achieved at throughput_ips: 2 * MACs * images/s / 1e12
    peak_tflops: float | None = None  # the device's dense bf16 (fp16) tensor peak, where known
    peak_fraction: float | None = None  # tflops / peak_tflops
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- environment


def environment(device: torch.device) -> dict:
    """Versions and hardware that the numbers depend on (GPU name, driver, CUDA, cuDNN on CUDA)."""
    import numpy
    import timm
    import torchvision

    env = dict(
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        timm=timm.__version__,
        numpy=numpy.__version__,
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            driver=driver_version(),
        )
    return env


@functools.cache
def driver_version() -> str | None:
    """The NVIDIA driver version ('550.54.15'), from nvidia-smi; None where it cannot be read."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.strip().splitlines()
    return lines[0].strip() if lines else None


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 (fp16 where the card has no bf16) tensor-core peak of a GPU by its name; None if unknown."""
    for key, peak in PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


# --------------------------------------------------------------------------- counting


def count_macs(model_or_spec: nn.Module | models.ModelSpec | str, size: int) -> int:
    """Multiply-accumulates of one batch-1 forward pass at size x size, counted on the meta device."""
    meta = _meta_twin(model_or_spec)
    counter = _FlopCounter()
    with torch.no_grad(), counter:
        meta(torch.empty(1, 3, size, size, device="meta"))
    return counter.flops // 2


class _FlopCounter(TorchDispatchMode):
    """torch's FLOP formulas (`flop_registry`: conv, mm, addmm, bmm, ...) without FlopCounterMode's module tracker.

    FlopCounterMode hooks every module of the process while it counts, so a Grad-CAM gradient in
    another visitor's thread failed meanwhile; a dispatch mode is seen by its own thread only.
    Totals equal FlopCounterMode's (checked for the classic models, Inception v3, ViT, ConvNeXt).
    """

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def _meta_twin(model_or_spec) -> nn.Module:
    spec = model_or_spec.cnncompare.spec if isinstance(model_or_spec, nn.Module) else model_or_spec
    return models.build(spec, device="meta").eval()


class _PeakMemory(TorchDispatchMode):
    """Track live bytes of tensors created by ops; tensors free when Python drops them.

    On the meta device this follows the same allocation and release pattern as a real
    inference pass (in-place ops and views allocate nothing new), without any memory.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                key = t.untyped_storage()._cdata
                if key in self._seen or key in inputs:
                    continue  # a view (of an activation or a weight) or an in-place result: no new memory
                nbytes = t.untyped_storage().nbytes()
                self._seen.add(key)
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._release, key, nbytes)
        return out


def activation_bytes(model_or_spec, size: int) -> int:
    """Peak bytes held by activations during one batch-1 inference forward pass (input included)."""
    meta = _meta_twin(model_or_spec)
    x = torch.empty(1, 3, size, size, device="meta")
    tracker = _PeakMemory()
    with torch.inference_mode(), tracker:
        out = meta(x)
    del out
    return tracker.peak + x.numel() * x.element_size()


def weights_bytes(model: nn.Module) -> int:
    """Bytes of the floating-point weights and buffers stored as fp32 (what a .pth file holds)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * 4 for t in tensors if t.is_floating_point())  # as fp32, like the .pth files


# --------------------------------------------------------------------------- timing


def default_batch(device: torch.device) -> int:
    """Throughput batch: 256 on a GPU (backed off on out-of-memory), 8 on a CPU."""
    return GPU_BATCH if device.type == "cuda" else CPU_BATCH


def prepare(model: nn.Module, device: torch.device) -> tuple[nn.Module, Precision]:
    """Put `model` on `device` in eval mode and the device's memory format; returns it and its precision."""
    precision = runtime.precision_for(device)
    if device.type == "cuda":
        runtime.configure_cuda()
    return model.to(device, memory_format=precision.memory_format).eval(), precision


def _input(batch: int, size: int, precision: Precision) -> torch.Tensor:
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


def _latency_runs(device: torch.device) -> dict:
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
        return summarize(time_calls(graph.replay, x.device, **_latency_runs(x.device), budget_s=budget_s)), None
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
        x = _input(b, size, precision)
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
    x1 = _input(1, size, precision)
    lat = summarize(time_forward(model, x1, precision, **_latency_runs(device), budget_s=budget_s))
    ips, used = measure_throughput(model, size, precision, batch, budget_s)
    return lat, ips, used, precision.label


# --------------------------------------------------------------------------- one call


@dataclass
class _Timing:
    latency: Latency | None = None
    graph: Latency | None = None
    ips: float | None = None
    batch: int = CPU_BATCH
    threads: int = 1
    warnings: list[str] = field(default_factory=list)


def _time_model(model: nn.Module, size: int, device: torch.device, batch: int | None, budget_s: float) -> _Timing:
    model, precision = prepare(model, device)
    t = _Timing(batch=batch or default_batch(device))
    with runtime.cpu_threads(device):
        t.threads = torch.get_num_threads()
        x1 = _input(1, size, precision)
        t.latency = summarize(time_forward(model, x1, precision, **_latency_runs(device), budget_s=budget_s))
        t.graph, warning = measure_graph_latency(model, x1, precision, budget_s)
        if warning:
            t.warnings.append(warning)
        try:
            t.ips, t.batch = measure_throughput(model, size, precision, batch, budget_s)
        except torch.OutOfMemoryError:
            t.warnings.append("throughput not measured: out of memory even at batch 1")
    asked = batch or default_batch(device)
    if t.ips is not None and t.batch != asked:
        t.warnings.append(f"batch {asked} did not fit in memory; throughput measured at batch {t.batch}")
    return t


def profile(
    name_or_model: str | nn.Module,
    size: int | None = None,
    *,
    batch: int | None = None,
    device: str = "auto",
    latency: bool = True,
    budget_s: float = 2.0,
) -> Profile:
    """Profile a catalog/timm model by name (random weights), or an already built model.

    Args:
        name_or_model: a model name (with ModelSpec defaults) or a model from `models.build`.
        size: input side in pixels (default: the model's own).
        batch: throughput batch (default 256 on CUDA, halved until it fits; 8 on a CPU).
        device: "auto", "cpu", "cuda" or "cuda:N".
        latency: False counts only (no real model is built or run).
        budget_s: seconds per timing phase (at least the minimum number of runs is always made).

    Returns:
        A Profile: params, MACs/FLOPs, size, activation memory, latency (eager; CUDA graph on a GPU),
        throughput, TFLOP/s and fraction of peak, device and versions.

    Raises:
        CNNCompareError: an unknown model, an input size it cannot take, a bad batch or device.
    """
    if batch is not None and batch < 1:
        raise CNNCompareError(f"Batch size must be at least 1, got {batch}.")
    dev = runtime.resolve_device(device)
    if isinstance(name_or_model, nn.Module):
        model = name_or_model
        spec = model.cnncompare.spec
    else:
        spec = models.ModelSpec(name_or_model)
        model = None
    info = catalog.get(spec.name)
    size = size or info.default_size
    models.check_input_size(spec.name, size)
    meta = models.build(spec, device="meta") if model is None else model
    params, trainable = models.count_params(meta)
    macs = count_macs(spec, size)
    act = activation_bytes(spec, size)
    timing = _Timing(batch=batch or default_batch(dev), threads=torch.get_num_threads())
    if latency:
        timing = _time_model(model if model is not None else models.build(spec), size, dev, batch, budget_s)
    tflops = 2 * macs * timing.ips / 1e12 if timing.ips else None
    peak = peak_tflops(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else None
    ref = info.reference
    return Profile(
        name=spec.name,
        family=info.family,
        input_size=size,
        params=params,
        trainable_params=trainable,
        macs=macs,
        flops=2 * macs,
        size_mb=weights_bytes(meta) / 2**20,
        activation_mb=act / 2**20,
        latency_ms=timing.latency,
        throughput_ips=timing.ips,
        batch=timing.batch,
        device=runtime.device_label(dev),
        dtype=runtime.precision_for(dev).label,
        threads=timing.threads,
        ref_top1=ref.top1 if ref else None,
        ref_top5=ref.top5 if ref else None,
        year=info.year,
        env=environment(dev),
        latency_graph_ms=timing.graph,
        tflops=tflops,
        peak_tflops=peak,
        peak_fraction=tflops / peak if tflops and peak else None,
        warnings=timing.warnings,
    )
