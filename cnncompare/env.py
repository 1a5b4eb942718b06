"""The environment, read in one place: where runs and data live, whether downloads are off, and the
limits a shared server enforces (`Env`). Imports nothing of the package but its errors, so every
module may ask it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CNNCompareError

__all__ = ["Env", "machine_mb", "assets_dir", "AUTO"]

AUTO = -1.0  # a default worked out from the machine (see the field's help)
RUN_SHARE = 0.6  # of the memory beside the model cache: the server itself, predictions and profiles use the rest


def _env_flag(*names: str) -> bool:
    return any(os.environ.get(n, "").strip().lower() in ("1", "true", "yes", "on") for n in names)


def _env_number(name: str, default: float, kind: type = int):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(float(raw))
    except ValueError:
        raise CNNCompareError(f"Environment variable {name}={raw!r} is not a number.") from None
    if value < 0:
        raise CNNCompareError(f"Environment variable {name} must be >= 0, got {raw}.")
    return value


def env_setting(default, var: str, help: str, *, also: tuple[str, ...] = (), shown: str | None = None):
    """A field of `Env`: its environment variable(s), default (as the README shows it: `shown`) and help, once."""
    return field(default=default, metadata={"env": (var, *also), "help": help, "shown": shown})


def machine_mb() -> float:
    """This machine's memory in MiB: the smaller of the physical memory and the container's limit (cgroup)."""
    total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 2**20
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:  # "max", or a huge number: no limit
            total = min(total, int(raw) / 2**20)
    return total


@dataclass(frozen=True)
class Env:
    """Everything read from the environment, once; `Env.variables()` lists them (the README's table).

    The limits apply to the app (a shared server); the CLI, run by its owner, applies only
    runs_dir, offline, debug, max_decoded_mb and max_run_mb (a run that cannot fit is refused with one
    sentence instead of being killed by the kernel).
    """

    runs_dir: Path = env_setting(Path("runs"), "CNNCOMPARE_RUNS", "where runs are saved")
    offline: bool = env_setting(
        False, "CNNCOMPARE_OFFLINE", "never try a download (also HF_HUB_OFFLINE=1)", also=("HF_HUB_OFFLINE",)
    )
    debug: bool = env_setting(False, "CNNCOMPARE_DEBUG", "show tracebacks in the CLI")
    cpu_channels_last: bool = env_setting(
        True, "CNNCOMPARE_CPU_CHANNELS_LAST", "channels_last memory format on a CPU (faster convolutions on AVX-512)"
    )
    max_decoded_mb: float = env_setting(
        4096.0, "CNNCOMPARE_MAX_DECODED_MB", "decoded training images held in memory; larger datasets stream from disk"
    )
    # --- limits of a shared server (the app)
    max_models: int = env_setting(8, "CNNCOMPARE_MAX_MODELS", "models per Compare or Predict request")
    max_runs: int = env_setting(6, "CNNCOMPARE_MAX_RUNS", "runs per fine-tuning comparison")
    max_epochs: int = env_setting(50, "CNNCOMPARE_MAX_EPOCHS", "epochs per run")
    max_run_s: float = env_setting(900.0, "CNNCOMPARE_MAX_RUN_S", "longest a fine-tuning run may take, in seconds")
    max_run_mb: float = env_setting(
        AUTO,
        "CNNCOMPARE_MAX_RUN_MB",
        "memory one fine-tuning run may use on a CPU, counted before it starts; a run over it is refused with the "
        "largest batch and input size that fit (0 = no limit)",
        shown="60 % of (memory − model cache): 8,602 on a 16 GB Space",
    )
    max_image_mpix: float = env_setting(
        40.0, "CNNCOMPARE_MAX_IMAGE_MPIX", "pixels of one image to predict, in megapixels; read from its header"
    )
    max_dataset_mpix: float = env_setting(
        2000.0, "CNNCOMPARE_MAX_DATASET_MPIX", "images x pixels of one dataset at the training size, in megapixels"
    )
    max_model_params_m: float = env_setting(
        200.0,
        "CNNCOMPARE_MAX_MODEL_PARAMS_M",
        "timm models beyond the catalog above this many million parameters are refused",
    )
    model_cache_mb: float = env_setting(2048.0, "CNNCOMPARE_MODEL_CACHE_MB", "memory for built models kept for Predict")
    visitor_quota_mb: float = env_setting(
        2048.0,
        "CNNCOMPARE_VISITOR_QUOTA_MB",
        "disk for one visitor's runs and weights files; the oldest runs go first (a VGG lesson keeps about 1.1 GB "
        "of runs, a VGG16 weights file 528 MB)",
    )
    runs_cap_mb: float = env_setting(20000.0, "CNNCOMPARE_RUNS_CAP_MB", "disk for all visitors' runs together")
    run_expiry_h: float = env_setting(
        24.0, "CNNCOMPARE_RUN_EXPIRY_H", "visitors' runs are deleted after this many hours (0 = never)"
    )
    max_unpack_mb: float = env_setting(1024.0, "CNNCOMPARE_MAX_UNPACK_MB", "bytes one uploaded zip may unpack to")
    data_cap_mb: float = env_setting(
        8192.0, "CNNCOMPARE_DATA_CAP_MB", "disk for unpacked uploads; the least recently used go first"
    )
    downloads_cap_mb: float = env_setting(
        4096.0,
        "CNNCOMPARE_DOWNLOADS_CAP_MB",
        "disk for all visitors' downloads (exports, zips, heat maps), kept an hour",
    )
    code_attempts: int = env_setting(
        10,
        "CNNCOMPARE_CODE_ATTEMPTS",
        "unknown workspace codes one visitor may try in 10 minutes (one address: 10 times as many; members keep "
        "working)",
    )
    trusted_proxies: str = env_setting(
        "",
        "CNNCOMPARE_TRUSTED_PROXIES",
        "addresses (or networks, e.g. 10.0.0.0/8) of the reverse proxies whose X-Forwarded-For is believed; comma "
        "separated (none: the connection's own address counts)",
        shown="none",
    )
    train_per_address: int = env_setting(
        3, "CNNCOMPARE_TRAIN_PER_ADDRESS", "places one address may hold in the training line, whatever its keys"
    )
    max_sessions: int = env_setting(
        100,
        "CNNCOMPARE_MAX_SESSIONS",
        "browser sessions whose page state the server keeps (gradio's state_session_capacity, about 0.4 MB each); "
        "the least recently active go first (the app keeps nothing a page needs there: a returning page works as "
        "before)",
    )
    max_waiting: int = env_setting(2, "CNNCOMPARE_MAX_WAITING", "jobs one visitor may have waiting besides a training")
    queue_size: int = env_setting(64, "CNNCOMPARE_QUEUE_SIZE", "jobs waiting in the server's queue, all visitors")
    gpu_limit_s: float = env_setting(
        300.0,
        "CNNCOMPARE_GPU_LIMIT_S",
        "GPU seconds one request may ask a shared GPU (ZeroGPU) for; a comparison estimated to need more is refused",
    )
    shared_examples: bool = env_setting(
        False,
        "CNNCOMPARE_SHARED_EXAMPLES",
        "offer the runs made with the CLI (in the runs dir) to every visitor, read-only",
    )

    # --- where jobs run (docs/SERVER.md)
    executor: str = env_setting(
        "local",
        "CNNCOMPARE_EXECUTOR",
        "where trainings, exports, dataset decoding and galleries run: local (worker processes on this machine), "
        "inline (in the web server's process; chosen by itself on a ZeroGPU Space) or ray (a Ray cluster, at "
        "RAY_ADDRESS)",
    )
    train_slots: int = env_setting(
        0,
        "CNNCOMPARE_TRAIN_SLOTS",
        "trainings at once: one per GPU, 1 on a CPU, the cluster's CPUs (or GPUs) with ray (0 = that default)",
        shown="auto",
    )
    worker_slack: float = env_setting(
        1.5,
        "CNNCOMPARE_WORKER_SLACK",
        "a worker may hold (its job's counted memory + 1 GB for a fresh process's first model) times this, over its "
        "own size, before it is ended alone",
    )
    gate_log: str = env_setting(
        "",
        "CNNCOMPARE_GATE_LOG",
        "a file each worker process appends its record of training steps and timed measurements to when its job "
        "ends (to check that measurements ran alone)",
        shown="none",
    )
    spare_workers: int = env_setting(
        1, "CNNCOMPARE_SPARE_WORKERS", "worker processes kept started, so a job does not wait for torch's import"
    )

    @classmethod
    def read(cls) -> Env:
        """The values set in the environment; unset variables keep their defaults.

        Raises:
            CNNCompareError: a variable that is not a number, or a negative one.
        """
        values = {}
        for f in dataclasses.fields(cls):
            names = f.metadata["env"]
            if f.type in (bool, "bool"):
                values[f.name] = _env_flag(*names) if any(os.environ.get(n) for n in names) else f.default
            elif f.type in (str, "str"):
                values[f.name] = os.environ.get(names[0], "").strip()[:2000] or f.default
            elif f.type in (Path, "Path"):
                raw = os.environ.get(names[0], "").strip()
                values[f.name] = Path(raw).expanduser() if raw else f.default
            else:
                kind = int if f.type in (int, "int") else float
                values[f.name] = _env_number(names[0], f.default, kind)
        if values["max_run_mb"] == AUTO:
            values["max_run_mb"] = default_run_mb(values["model_cache_mb"], max(1, values["train_slots"]))
        return cls(**values)

    @classmethod
    def variables(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) of every environment variable, for the README and --help."""
        return [
            (f.metadata["env"][0], f.metadata.get("shown") or str(f.default), f.metadata["help"])
            for f in dataclasses.fields(cls)
        ]

    @property
    def data_dir(self) -> Path:
        """Downloads (CIFAR) and unpacked uploads: `<runs>/_data`, for the CLI and the app alike."""
        return self.runs_dir / "_data"

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.max_decoded_mb * 2**20)


def default_run_mb(model_cache_mb: float = 2048.0, train_slots: int = 1, total_mb: float | None = None) -> float:
    """The memory one run may use by default: RUN_SHARE of what is left beside the model cache, shared by the
    runs that may train at once (one here). A free CPU Space (16 GiB, a 2 GiB model cache): 8,602 MiB."""
    total = machine_mb() if total_mb is None else total_mb
    return round(max(512.0, RUN_SHARE * (total - model_cache_mb) / max(1, train_slots)))


def assets_dir() -> Path:
    """The app's example pictures and classroom notes: the repository's `assets/` (a clone, a Space), or the copy a
    wheel installs inside the package (`pip install .` maps `assets/` to `cnncompare/assets/`)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "assets", here.parent / "assets"):
        if candidate.is_dir():
            return candidate
    return here.parent / "assets"
