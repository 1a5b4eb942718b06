"""What a model costs: parameters, MACs/FLOPs, size, activation memory, latency, throughput.

Counting (parameters, MACs, activation memory) runs on the meta device: shapes only, no
weights allocated, no arithmetic done, so profiling VGG16 costs milliseconds. Timing runs
the real model on the chosen device.

MACs vs FLOPs: papers and torchvision's `_ops` count multiply-accumulates (MACs);
`torch.utils.flop_counter` counts 2 FLOPs per MAC. We report both, counted over
convolutions and matrix multiplications only (conv, mm, addmm, bmm); BatchNorm, ReLU,
pooling, additions and biases are not counted, as in torchvision's published numbers.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
import weakref
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from . import catalog, models
from .errors import CNNCompareError

COUNTED_OPS = "conv, mm, addmm, bmm (multiply-adds; BatchNorm, activations, pooling, adds and biases not counted)"


@dataclass
class Latency:
    p50: float  # ms
    p90: float
    mean: float
    runs: int


@dataclass
class Profile:
    name: str
    family: str
    input_size: int
    params: int
    trainable_params: int
    macs: int
    flops: int
    size_mb: float  # fp32 weights + buffers, MiB (as torchvision's _file_size)
    activation_mb: float  # peak memory of activations in one batch-1 inference forward pass, MiB
    latency_ms: Latency | None
    throughput_ips: float | None
    batch: int
    device: str
    dtype: str
    threads: int
    ref_top1: float | None
    ref_top5: float | None
    year: int | None
    counted_ops: str = COUNTED_OPS
    env: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- environment

def resolve_device(device: str = "auto") -> torch.device:
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CNNCompareError("CUDA was requested but no GPU is available here; use --device cpu or auto.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise CNNCompareError(f"Unknown device '{device}': use auto, cpu or cuda.")
    return torch.device(device)


def environment(device: torch.device) -> dict:
    import timm
    import torchvision

    env = dict(torch=torch.__version__, torchvision=torchvision.__version__, timm=timm.__version__,
               python=platform.python_version(), threads=torch.get_num_threads(),
               cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count())
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


# --------------------------------------------------------------------------- counting

def count_macs(model_or_spec: nn.Module | models.ModelSpec | str, size: int) -> int:
    """Multiply-accumulates of one batch-1 forward pass at size x size, counted on the meta device."""
    meta = _meta_twin(model_or_spec)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() // 2


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
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                key = t.untyped_storage()._cdata
                if key in self._seen:
                    continue  # a view or an in-place result: no new memory
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
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * 4 for t in tensors if t.is_floating_point())  # as fp32, like the .pth files


# --------------------------------------------------------------------------- timing

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model: nn.Module, x: torch.Tensor, *, warmup: int = 3, min_runs: int = 10,
                 max_runs: int = 50, budget_s: float = 2.0, amp: bool = False) -> list[float]:
    """Wall times (ms) of single forward passes after warm-up, each bracketed by a device sync.

    Runs at least `min_runs`, then stops once `budget_s` is spent or `max_runs` is reached.
    """
    device = x.device
    times: list[float] = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            model(x)
        _sync(device)
        start = time.perf_counter()
        while len(times) < max_runs:
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
            if len(times) >= min_runs and time.perf_counter() - start > budget_s:
                break
    return times


def summarize(times: list[float]) -> Latency:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return Latency(p50=statistics.median(ordered), p90=p90, mean=statistics.fmean(ordered), runs=len(ordered))


def default_batch(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 8


def prepare_for_device(model: nn.Module, device: torch.device) -> tuple[nn.Module, bool, str]:
    """Move to device; on CUDA use channels_last and bf16 autocast (tensor cores). Returns (model, amp, dtype)."""
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        amp = torch.cuda.is_bf16_supported()
        return model, amp, "bf16 autocast, channels_last" if amp else "fp32, channels_last"
    return model, False, "fp32"


def measure_latency(model: nn.Module, size: int, device: torch.device, batch: int | None = None,
                    budget_s: float = 2.0) -> tuple[Latency, float, int, str]:
    """(batch-1 latency, throughput images/s at `batch`, batch, dtype) for a real model."""
    model, amp, dtype = prepare_for_device(model, device)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x1 = torch.randn(1, 3, size, size, device=device).contiguous(memory_format=fmt)
    lat = summarize(time_forward(model, x1, budget_s=budget_s, amp=amp))
    batch = batch or default_batch(device)
    xb = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    # throughput: fewer, longer steps; at least 3 after one warm-up
    tb = time_forward(model, xb, warmup=1, min_runs=3, max_runs=20, budget_s=budget_s, amp=amp)
    return lat, batch * 1e3 / statistics.median(tb), batch, dtype


# --------------------------------------------------------------------------- one call

def profile(name_or_model: str | nn.Module, size: int | None = None, *, batch: int | None = None,
            device: str = "auto", latency: bool = True, budget_s: float = 2.0) -> Profile:
    """Profile a catalog/timm model by name (random weights), or an already built model."""
    if batch is not None and batch < 1:
        raise CNNCompareError(f"Batch size must be at least 1, got {batch}.")
    dev = resolve_device(device)
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
    lat = thr = None
    dtype = "fp32"
    used_batch = batch or default_batch(dev)
    if latency:
        real = model if model is not None else models.build(spec)
        lat, thr, used_batch, dtype = measure_latency(real, size, dev, batch, budget_s)
    ref = info.reference
    return Profile(name=spec.name, family=info.family, input_size=size, params=params, trainable_params=trainable,
                   macs=macs, flops=2 * macs, size_mb=weights_bytes(meta) / 2**20, activation_mb=act / 2**20,
                   latency_ms=lat, throughput_ips=thr, batch=used_batch, device=_device_label(dev), dtype=dtype,
                   threads=torch.get_num_threads(), ref_top1=ref.top1 if ref else None,
                   ref_top5=ref.top5 if ref else None, year=info.year, env=environment(dev))


def _device_label(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"
