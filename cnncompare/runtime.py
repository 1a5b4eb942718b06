"""Where and how tensors run: device, precision, memory format, synchronisation, peak memory, threads.

Every part of the engine that runs a model (profiling, training, estimates, inference) asks
this module, so they agree: on CUDA, bf16 autocast (fp16 with a grad scaler where bf16 is
missing) and channels_last; on a CPU, fp32. channels_last is also used on a CPU when it
measures faster there (it does on AVX-512 CPUs for convolutions: 140 vs 107 GMAC/s for VGG16
features at 112 px on a 2-core machine); `CNNCOMPARE_CPU_CHANNELS_LAST=0` turns it off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass

import torch

from .env import Env
from .errors import CNNCompareError
from .settings import parse_device

__all__ = [
    "Precision",
    "resolve_device",
    "precision_for",
    "sync",
    "reset_peak_memory",
    "peak_memory_mb",
    "device_label",
    "cpu_threads",
    "cpu_job_paused",
    "configure_cuda",
    "Dist",
    "is_main_process",
]


@dataclass(frozen=True)
class Precision:
    """How a model runs on one device."""

    device: torch.device
    amp: bool  # autocast on
    dtype: torch.dtype  # autocast dtype (float32 when amp is off)
    memory_format: torch.memory_format
    needs_scaler: bool  # fp16 training needs a GradScaler; bf16 and fp32 do not

    def autocast(self):
        """The autocast context for this precision (a no-op when amp is off)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def label(self) -> str:
        """'bf16 autocast, channels_last' / 'fp32' ..."""
        name = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(self.dtype, "fp32")
        fmt = ", channels_last" if self.memory_format == torch.channels_last else ""
        return name + fmt


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda', 'cuda:1' as given.

    Raises:
        CNNCompareError: CUDA asked for but absent, or an unknown device name.
    """
    if isinstance(device, torch.device):
        return device
    device = parse_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CNNCompareError("CUDA was requested but no GPU is available here; use device cpu or auto.")
    return torch.device(device)


def _cpu_channels_last() -> bool:
    return Env.read().cpu_channels_last


def precision_for(device: torch.device | str, *, training: bool = False) -> Precision:
    """The precision and memory format to use on `device` (inference and training agree)."""
    device = resolve_device(device)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16 else torch.float16
        return Precision(device, True, dtype, torch.channels_last, needs_scaler=training and not bf16)
    fmt = torch.channels_last if _cpu_channels_last() else torch.contiguous_format
    return Precision(device, False, torch.float32, fmt, needs_scaler=False)


_CUDA_CONFIGURED = False


def configure_cuda() -> None:
    """cuDNN autotuning and TF32 matmuls: what a plain PyTorch training script on a GPU would turn on.

    Autotuning costs its time on the first step of each new shape: training reports those first
    steps apart as warm-up.
    """
    global _CUDA_CONFIGURED
    if _CUDA_CONFIGURED or not torch.cuda.is_available():
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    _CUDA_CONFIGURED = True


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start counting peak memory afresh: CUDA's allocator peak, or (Linux) the process's peak RSS."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float | None:
    """MiB: CUDA max allocated since the last reset, or the process's peak RSS on a CPU (None where unknown)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if sys.platform.startswith("win"):
        return None
    import resource  # Unix only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def device_label(device: torch.device) -> str:
    """'cuda (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# --------------------------------------------------------------------------- CPU threads

_THREADS_LOCK = threading.Lock()
_JOBS = 0
DEFAULT_THREADS = _DEFAULT_THREADS = torch.get_num_threads()  # PyTorch's own default: one thread per core


def _set_threads_for(jobs: int) -> None:
    torch.set_num_threads(_DEFAULT_THREADS if jobs <= 1 else max(1, _DEFAULT_THREADS // jobs))


@contextlib.contextmanager
def cpu_threads(device: torch.device):
    """Share the CPU cores among the CPU jobs running at once in this process.

    A lone job keeps PyTorch's defaults (one thread per core, OpenMP's default waiting: the
    fastest for one user, as a bare loop would run). When a second CPU job starts beside it (two
    visitors of one server), the intra-op threads become cores // jobs, so the jobs do not
    oversubscribe the cores; with two jobs of two spinning threads each on two cores,
    resnet18 at batch 1 went from 65 ms to 710 ms. The thread count is shared by the worker
    threads of a process, so it follows the number of jobs as they start and end.
    """
    global _JOBS
    if device.type != "cpu":
        yield
        return
    with _THREADS_LOCK:
        _JOBS += 1
        _set_threads_for(_JOBS)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _JOBS -= 1
            _set_threads_for(_JOBS)


def cpu_job_paused(device: torch.device, paused: bool) -> None:
    """A CPU job that pauses (a training waiting for other visitors' requests) gives its share of the cores back
    meanwhile, and takes it again when it resumes."""
    global _JOBS
    if device.type != "cpu":
        return
    with _THREADS_LOCK:
        _JOBS = max(0, _JOBS + (-1 if paused else 1))
        _set_threads_for(_JOBS)


# --------------------------------------------------------------------------- more than one process


def is_main_process() -> bool:
    """False in the processes of a torchrun job other than rank 0 (they neither write runs nor print)."""
    return os.environ.get("RANK", "0") in ("", "0")


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls, device_type: str = "cpu") -> Dist:
        """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK and join the process group (NCCL on GPUs, gloo on CPUs)."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0") or 0))

    @property
    def main(self) -> bool:
        """True in the process that writes files and prints (rank 0)."""
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the processes (itself when alone)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def any(self, flag: bool, device: torch.device) -> bool:
        """True when `flag` is true in any process."""
        if self.world == 1:
            return flag
        return bool(self.sum(torch.tensor([int(flag)], device=device)).item())

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel around `module` in a torchrun job (gradients averaged); `module` alone."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
