"""What the Fine-tune form asks for, read into the engine's terms: a dataset choice and a checked `compare.Plan`
within this server's limits; the dataset loaded the way the CLI loads it (`data.open_source`); the GPU time a
shared GPU must lend it.

The form's fields arrive as one mapping by name (the API's parameter names too). The engine decides: the plan
applies the server's limits (`compare.Limits`), the data loader the server's pixel and unpacking caps, the
estimate module the GPU time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .. import compare, data, estimate, runs
from ..errors import CNNCompareError
from ..server import boundary, ledger, sharing, visitors
from ..serving import BoundedCache
from ..settings import Setting, coerce
from . import forms
from . import weights as weights_ui
from .common import Context, file_path
from .gpu import on_zerogpu
from .uploads import checked_upload

__all__ = [
    "DATASETS",
    "IMAGES_PER_CLASS",
    "Comparison",
    "read_dataset",
    "read_comparison",
    "load_data",
    "load_source",
    "gpu_seconds_for",
    "admit",
    "share_of",
    "eviction_note",
]

DATASETS = [
    ("shapes: drawn shapes, made here (offline)", "shapes"),
    ("your images: a .zip upload", "zip"),
    ("CIFAR-10 (needs a download)", "cifar10"),
    ("CIFAR-100 (needs a download)", "cifar100"),
]
# A page-only setting (the engine never sees it: it caps what the dataset loader reads).
IMAGES_PER_CLASS = Setting(
    "max_per_class",
    "Images per class (0 = all)",
    "a cap keeps CPU runs short; 20 % of each class is held out for validation",
    int,
    60,
    low=0,
)


@dataclasses.dataclass
class Comparison:
    """What the form asks for: a dataset and the engine's plan of runs."""

    dataset: str  # shapes | zip | cifar10 | cifar100
    zip_path: str | None
    max_per_class: int | None
    plan: compare.Plan

    @property
    def source(self) -> str:
        """What `data.load_dataset` takes: the uploaded zip's path, or the dataset's name."""
        return self.zip_path if self.dataset == "zip" else self.dataset


def read_dataset(values: Mapping[str, Any]) -> tuple[str, str | None, int | None]:
    """(dataset choice, the uploaded zip's path or None, images per class or None) from the form's values.

    Raises:
        CNNCompareError: an unknown dataset, 'your images' without an upload, a bad cap, in one sentence.
        gr.Error: a zip that was not uploaded (a path on the server).
    """
    source = str(values.get("dataset") or "shapes").strip().lower()
    if source not in {v for _, v in DATASETS}:
        shown = str(values.get("dataset"))[:40]
        raise CNNCompareError(f"Unknown dataset '{shown}': choose shapes, zip, cifar10 or cifar100.")
    zip_path = file_path(values.get("zip_file"))
    if source == "zip" and not zip_path:
        raise CNNCompareError("Upload a .zip of your images first (one folder per class inside).")
    if source == "zip":
        zip_path = str(checked_upload(zip_path, "The zip"))  # only an upload, never a file of the server
    cap = coerce(IMAGES_PER_CLASS, values.get("max_per_class"))
    return source, zip_path if source == "zip" else None, cap or None


def read_comparison(ctx: Context, values: Mapping[str, Any], visitor: visitors.Visitor | None = None) -> Comparison:
    """The form's values (by name) as a dataset choice and a checked `compare.Plan`, within this server's limits.

    Raises:
        CNNCompareError: the first problem (unknown dataset, no upload, a bad setting, an unknown
        model or freeze policy, too many runs, a limit of the server), in one sentence.
        gr.Error: a zip that was not uploaded (a path on the server).
    """
    source, zip_path, cap = read_dataset(values)
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
    return Comparison(source, zip_path, cap, plan)


def load_data(ctx: Context, c: Comparison, visitor: visitors.Visitor | None = None) -> data.LoadedData:
    """The dataset of a comparison, checked against this server's pixel limit at the plan's largest input size.

    Raises:
        CNNCompareError: a bad zip, one that unpacks to more than CNNCOMPARE_MAX_UNPACK_MB (or past the visitor's
        quota), or a dataset over CNNCOMPARE_MAX_DATASET_MPIX at the largest input size of the plan.
    """
    size = max(run.settings.size for run in c.plan.runs())
    return load_source(ctx, c.source, c.max_per_class, c.plan.settings.seed, size, visitor)


def load_source(
    ctx: Context,
    source: str,
    max_per_class: int | None,
    seed: int,
    size: int | None = None,
    visitor: visitors.Visitor | None = None,
) -> data.LoadedData:
    """`load_data` for a dataset alone (the dataset report before a plan exists: no pixel check).

    A named dataset (shapes, CIFAR) is a pure function of its name, cap and seed: it is kept (bounded in bytes) and
    shared by every visitor loading the same, read-only (a class pressing the same preset loads it once). An upload
    is the visitor's own: unpacked into their folder (its bytes counted against their quota first) and kept for
    them alone, so how fast it loads says nothing about anyone else's uploads."""
    upload = source not in {v for _, v in DATASETS}
    who = visitor.id if (upload and visitor is not None) else ""
    work_dir = ledger.unpack_dir(ctx, visitor) if who else None

    def load():
        if not upload:
            return data.open_source(source, ctx.env, max_per_class=max_per_class, seed=seed, server=True)
        done = ledger.disk_bytes((work_dir or ctx.data_dir) / "uploads" / data.file_digest(source))  # reused part
        need = max(0, data.unpack_bytes(source) - done)
        with ledger.reserve(ctx, visitor, need, "Unpacking your upload", "data"):
            return data.open_source(
                source, ctx.env, max_per_class=max_per_class, seed=seed, server=True, work_dir=work_dir
            )

    ds = DATASETS_KEPT.get((who, data.source_identity(source, max_per_class, seed)), load)
    if size is not None and ctx.env.max_dataset_mpix > 0:
        data.check_dataset_size(ds, size, ctx.env.max_dataset_mpix)
    return ds


def _dataset_bytes(ds: data.LoadedData) -> int:
    return sum(getattr(split.array, "nbytes", 0) or 64 * len(split) for split in (ds.train, ds.val)) + 65536


DATASETS_KEPT = BoundedCache(256 * 2**20, size=_dataset_bytes)


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
    scope = visitor.folder if c.dataset == "zip" else ""
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
        c.plan.check_memory(*size)
    if on_zerogpu():  # a shared GPU is lent for a fixed time
        gpu_seconds_for(c, ctx)
