"""What the Fine-tune form asks for, read into the engine's terms: a dataset choice and a checked `compare.Plan`
within this server's limits; the dataset loaded the way the CLI loads it (`data.open_source`); the GPU time a
shared GPU must lend it.

The form's fields arrive as one mapping by name (the API's parameter names too). The engine decides: the plan
applies the server's limits (`compare.Limits`), the data loader the server's pixel and unpacking caps, the
estimate module the GPU time.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import capture, compare, data, estimate, runs
from ..errors import CNNCompareError
from ..executor import Job, work
from ..server import boundary, ledger, sharing, visitors
from ..serving import BoundedCache
from ..settings import DataSettings
from . import forms
from . import weights as weights_ui
from .common import Context, file_path
from .gpu import on_zerogpu
from .uploads import checked_upload

__all__ = [
    "DATASETS",
    "PAGE_IMAGES_PER_CLASS",
    "Comparison",
    "read_dataset",
    "camera_of",
    "read_comparison",
    "data_spec",
    "spec_of",
    "unpacking",
    "decoded",
    "info_key",
    "gpu_seconds_for",
    "admit",
    "share_of",
    "eviction_note",
]

DATASETS = [
    ("shapes: drawn shapes, made here (offline)", "shapes"),
    ("your images: a .zip upload", "zip"),
    ("your camera: the classes you capture below", "camera"),
    ("CIFAR-10 (needs a download)", "cifar10"),
    ("CIFAR-100 (needs a download)", "cifar100"),
]
# The page starts its images per class here (the engine's default, all, is the CLI's): runs stay short on a CPU.
PAGE_IMAGES_PER_CLASS = 60


@dataclasses.dataclass
class Comparison:
    """What the form asks for: a dataset and the engine's plan of runs."""

    dataset: str  # the page's choice: shapes | zip | cifar10 | cifar100
    data: DataSettings  # what the engine opens: the dataset's name, or the checked upload's path
    plan: compare.Plan
    memory_mb: float = 0.0  # the most one of its runs was counted to need (`admit`); its worker is watched by it

    @property
    def source(self) -> str:
        return self.data.source

    @property
    def max_per_class(self) -> int | None:
        return self.data.max_per_class


def read_dataset(values: Mapping[str, Any], camera: Path | None = None) -> tuple[str, DataSettings]:
    """(the page's dataset choice, the engine's `DataSettings`) from the form's values: an upload's path is the
    checked upload's, the camera's classes are the visitor's own folder (`camera`: `ledger.camera_dir`), never a
    string from the web.

    Raises:
        CNNCompareError: an unknown dataset, 'your images' without an upload, a bad cap, in one sentence.
        gr.Error: a zip that was not uploaded (a path on the server).
    """
    source = str(values.get("dataset") or "shapes").strip().lower()
    if source not in {v for _, v in DATASETS}:
        shown = str(values.get("dataset"))[:40]
        raise CNNCompareError(f"Unknown dataset '{shown}': choose shapes, zip, camera, cifar10 or cifar100.")
    if source == "camera":
        if camera is None:
            raise CNNCompareError("Your camera's classes belong to your page: open the app and capture them there.")
        why = capture.Captures(camera).ready()
        if why:
            raise CNNCompareError(f"Your camera's classes are not ready: {why[0].lower()}{why[1:]}")
        return source, DataSettings(str(camera), values.get("max_per_class"))
    zip_path = file_path(values.get("zip_file"))
    if source == "zip" and not zip_path:
        raise CNNCompareError("Upload a .zip of your images first (one folder per class inside).")
    if source == "zip":
        zip_path = str(checked_upload(zip_path, "The zip"))  # only an upload, never a file of the server
    return source, DataSettings(zip_path if source == "zip" else source, values.get("max_per_class"))


def camera_of(ctx: Context, visitor: visitors.Visitor | None) -> Path | None:
    """The visitor's camera classes (None for a caller without a visitor)."""
    return ledger.camera_dir(ctx, visitor) if visitor is not None else None


def read_comparison(ctx: Context, values: Mapping[str, Any], visitor: visitors.Visitor | None = None) -> Comparison:
    """The form's values (by name) as a dataset choice and a checked `compare.Plan`, within this server's limits.

    Raises:
        CNNCompareError: the first problem (unknown dataset, no upload, a bad setting, an unknown
        model or freeze policy, too many runs, a limit of the server), in one sentence.
        gr.Error: a zip that was not uploaded (a path on the server).
    """
    dataset, data_settings = read_dataset(values, camera_of(ctx, visitor))
    entry, settings = forms.read_form(values)
    plan = compare.Plan.parse(
        boundary.text(values.get("models"), "The models box", 2000),
        model_defaults=entry,
        settings=settings,
        missing_weights="random",
        limits=ctx.limits,
    )
    boundary.check_web_plan(plan)  # no file or device of the server named from the web
    plan.weights_files = weights_ui.weights_map(ctx, visitor)  # the visitor's own uploads, by model
    return Comparison(dataset, data_settings, plan)


def data_spec(
    ctx: Context,
    data_settings: DataSettings,
    seed: int,
    size: int | None = None,
    visitor: visitors.Visitor | None = None,
) -> work.DataSpec:
    """How a worker opens a dataset for this server: its limits (unpacking, pixels at `size`), and an upload
    unpacked into the visitor's own folder (so how fast it loads says nothing about anyone else's uploads)."""
    upload = data_settings.source not in {v for _, v in DATASETS}
    work_dir = ledger.unpack_dir(ctx, visitor) if (upload and visitor is not None) else None
    return work.DataSpec(data_settings, ctx.env, seed, size, str(work_dir) if work_dir else None)


def spec_of(ctx: Context, c: Comparison, visitor: visitors.Visitor | None = None) -> work.DataSpec:
    """The dataset of a comparison, checked at the plan's largest input size against this server's pixel limit."""
    size = max(run.settings.size for run in c.plan.runs())
    return data_spec(ctx, c.data, c.plan.settings.seed, size, visitor)


def unpacking(ctx: Context, spec: work.DataSpec, visitor: visitors.Visitor | None):
    """The reservation an upload's unpacking needs before a worker writes it (`ledger.reserve`): what it unpacks
    to, less what an earlier unpacking of the same file left; nothing for a named dataset."""
    if spec.work_dir is None or visitor is None or not Path(spec.source).is_file():  # a folder: nothing to unpack
        return contextlib.nullcontext()
    done = ledger.disk_bytes(Path(spec.work_dir) / "uploads" / data.file_digest(spec.source))
    need = max(0, data.unpack_bytes(spec.source) - done)
    return ledger.reserve(ctx, visitor, need, "Unpacking your upload", "data")


def decoded(ctx: Context, spec: work.DataSpec, visitor: visitors.Visitor | None = None) -> work.DataInfo:
    """The dataset decoded by a worker (`executor.work.decode`), as a run would load it; what the page says of it is
    kept (a named dataset's for everyone, an upload's for its visitor alone).

    Raises:
        CNNCompareError: a bad zip, one that unpacks past CNNCOMPARE_MAX_UNPACK_MB (or the visitor's quota), a
        dataset over CNNCOMPARE_MAX_DATASET_MPIX at the spec's input size, in one sentence.
    """
    key = info_key(spec, visitor)

    def load() -> work.DataInfo:
        with unpacking(ctx, spec, visitor):
            job = Job(work.FN + "decode", {"data_spec": spec}, kind="decode", memory_mb=ctx.env.max_run_mb)
            return ctx.workers.call(job)

    return DATA_INFO.get(key, load)


def info_key(spec: work.DataSpec, visitor: visitors.Visitor | None) -> tuple:
    """What the page said of a decoded dataset is kept under: an upload's for its visitor alone."""
    who = visitor.id if (spec.work_dir and visitor is not None) else ""
    return who, data.source_identity(spec.source, spec.data.max_per_class, spec.seed), spec.size


DATA_INFO = BoundedCache(8 * 2**20, size=lambda info: 1024 + len(info.report_md) + 64 * len(info.classes))


def eviction_note(ctx: Context, c: Comparison, visitor: visitors.Visitor) -> str | None:
    """The visitor's runs this comparison would push out of their quota, said before it starts (None: it fits)."""
    size = data.planned_size(c.source, c.max_per_class)
    n_classes = size[2] if size else 10
    try:
        need = sum(runs.saved_bytes(run.entry, n_classes, run.settings.size) for run in c.plan.runs())
    except CNNCompareError:  # a run that cannot be built says so itself
        return None
    return ledger.eviction_note(ctx, visitor, need)


def share_of(ctx: Context, c: Comparison, visitor: visitors.Visitor) -> sharing.Share:
    """How this comparison's runs are shared: with anyone on this server, or (an upload of the visitor's, or their
    own weights file) only within the visitor's folder (their own, or their workspace's)."""
    scope = visitor.folder if c.dataset in ("zip", "camera") else ""
    dataset_id = data.source_identity(c.source, c.max_per_class, c.plan.settings.seed)
    return sharing.Share(ctx.shared, dataset_id, scope, private=visitor.folder)


def gpu_seconds_for(c: Comparison, ctx: Context) -> int:
    """The GPU time to ask ZeroGPU for, from the plan's MACs and the images and classes the dataset will give
    (`data.planned_size`: exact for shapes and CIFAR, counted from an upload's listing).

    Raises:
        CNNCompareError: the plan cannot fit CNNCOMPARE_GPU_LIMIT_S; the message says what to shrink.
    """
    size = data.planned_size(c.source, c.max_per_class)
    n_train, n_val, n_classes = size or (8 * (c.max_per_class or 200), 2 * (c.max_per_class or 200), 10)
    return estimate.gpu_duration(c.plan, n_train, n_val, n_classes, ctx.env.gpu_limit_s)


def admit(ctx: Context, c: Comparison) -> None:
    """A comparison's cost, checked before it takes a place in line: each run's memory on a CPU (counted for the
    images the dataset will give, `data.planned_size`), and on a shared GPU (ZeroGPU) the GPU time it needs.

    Raises:
        CNNCompareError: one sentence: what does not fit, and what would.
    """
    size = data.planned_size(c.source, c.max_per_class)
    if size is not None:
        counted = [m for m in c.plan.check_memory(*size) if m is not None]
        c.memory_mb = max((m.total_mb for m in counted), default=0.0)
    if on_zerogpu():  # a shared GPU is lent for a fixed time
        gpu_seconds_for(c, ctx)
