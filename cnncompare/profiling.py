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
import subprocess
import time
import weakref
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from . import models, runtime
from .errors import CNNCompareError
from .models import catalog
from .serving import GATE, BoundedCache
from .settings import INPUT_SIZE, coerce
from .timing import (  # re-exported: profiling is where timing is looked for
    CPU_BATCH,
    GPU_BATCH,
    GRAPH_NOTE,
    Latency,
    capture_graph,
    default_batch,
    latency_runs,
    make_input,
    measure_graph_latency,
    measure_latency,
    measure_throughput,
    prepare,
    summarize,
    time_calls,
    time_forward,
    with_batch_backoff,
)

__all__ = [
    "INPUT_SIZE",
    "input_size",
    "COUNTED_OPS",
    "module_macs",
    "GRAPH_NOTE",
    "PEAK_TFLOPS",
    "Latency",
    "Profile",
    "profile",
    "count_macs",
    "activation_bytes",
    "PeakMemory",
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
    "CPU_BATCH",
    "GPU_BATCH",
]

COUNTED_OPS = "conv, mm, addmm, bmm (multiply-adds; BatchNorm, activations, pooling, adds and biases not counted)"
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
def input_size(value) -> int | None:
    """A size typed in the app or the CLI: a whole number of pixels, or None for each model's native size.

    Raises:
        CNNCompareError: neither a number in INPUT_SIZE's bounds nor empty/"native".
    """
    if isinstance(value, str) and value.strip().lower() in ("native", "auto", "default"):
        return None
    return coerce(INPUT_SIZE, value)


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
    latency_measured_at: str | None = None  # when the latency was measured here (UTC, HH:MM:SS)
    latency_shared: bool = False  # measured earlier, for anyone who asked: reused, not measured again

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


def module_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of `module` on the input `x` (a meta tensor and module: nothing is computed)."""
    counter = _FlopCounter()
    with torch.no_grad(), counter:
        module(x)
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


class PeakMemory(TorchDispatchMode):
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
    tracker = PeakMemory()
    with torch.inference_mode(), tracker:
        out = meta(x)
    del out
    return tracker.peak + x.numel() * x.element_size()


# Counting is a pure function of (architecture, size): done once and kept (bounded), for everyone who asks.
COUNTS = BoundedCache(16 * 2**20, size=lambda v: 256)
# Timings of models built by name (random weights) at one size on one device with the cores to themselves: the
# machine's numbers, kept for the server's life and shared (`Profile.latency_shared`).
TIMINGS = BoundedCache(4 * 2**20, size=lambda v: 2048)


def _spec_key(spec: models.ModelSpec) -> tuple:
    return (spec.name, spec.num_classes, spec.head, spec.pretrained)


def _counts(spec: models.ModelSpec, size: int) -> tuple[int, int, int]:
    """(MACs, activation bytes, weights bytes) of an architecture at one size, counted once on the meta device."""

    def count():
        return count_macs(spec, size), activation_bytes(spec, size), weights_bytes(models.build(spec, device="meta"))

    return COUNTS.get((_spec_key(spec), size), count)


def _params(spec: models.ModelSpec) -> tuple[int, int]:
    return models.count_params(models.build(spec, device="meta"))


def stage_blocks(name: str, size: int) -> list[dict]:
    """A model's blocks (stem, stages, pre-logits, head) at one size as dicts, counted once on the meta device and
    kept for everyone (the Architectures tab's parameters-per-stage chart); [] when the model has no such split."""

    def count() -> list[dict]:
        try:
            return [b.to_dict() for b in models.blocks(models.build(name, device="meta"), size)]
        except (CNNCompareError, RuntimeError):
            return []

    return [dict(b) for b in COUNTS.get((name, size, "blocks"), count, size=lambda v: 512 * (len(v) + 1))]


def _now() -> str:
    return time.strftime("%H:%M:%S", time.gmtime())


def weights_bytes(model: nn.Module) -> int:
    """Bytes of the floating-point weights and buffers stored as fp32 (what a .pth file holds)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * 4 for t in tensors if t.is_floating_point())  # as fp32, like the .pth files


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
    with GATE.quiet(), runtime.cpu_threads(device):  # measured alone: no training step, no other work
        t.threads = torch.get_num_threads()
        x1 = make_input(1, size, precision)
        t.latency = summarize(time_forward(model, x1, precision, **latency_runs(device), budget_s=budget_s))
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


def _latency(spec, model, size: int, dev, batch: int | None, budget_s: float):
    """(timing, when measured, whether it was another request's measurement). A model by name (random weights): its
    timing is the architecture's, kept and shared; a given model is timed itself."""
    if model is not None:
        return _time_model(model, size, dev, batch, budget_s), _now(), False
    key = (spec.name, size, str(dev), runtime.DEFAULT_THREADS, batch, budget_s)
    found = TIMINGS.peek(key)
    shared = found is not None
    if found is None:
        found = (_time_model(models.build(spec), size, dev, batch, budget_s), _now())
        TIMINGS.put(key, found)
    return (*found, shared)


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
    if model is None:  # counted once per architecture, not built again for every visitor who asks
        params, trainable = COUNTS.get((_spec_key(spec), "params"), lambda: _params(spec))
    else:
        params, trainable = models.count_params(model)
    macs, act, weights = _counts(spec, size)
    timing, measured_at, shared = _latency(spec, model, size, dev, batch, budget_s) if latency else (None, None, False)
    timing = timing or _Timing(batch=batch or default_batch(dev), threads=torch.get_num_threads())
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
        size_mb=(weights if model is None else weights_bytes(model)) / 2**20,
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
        latency_measured_at=measured_at,
        latency_shared=shared,
    )
