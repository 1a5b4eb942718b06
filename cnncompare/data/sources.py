"""Where data comes from: `load_dataset` picks the reader for a source string.

Handles the sources that are not plain folders itself (CIFAR-10/100 through torchvision,
zip uploads extracted safely) and hands generated shapes, folders and Hugging Face `hf:`
datasets (`hf.py`) to their modules. Whether downloads are allowed is
decided in one place, `_offline()`.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..models import offline as _models_offline
from .base import (
    DataError,
    DataReport,
    ImageDataset,
    LoadedData,
    _check_options,
    _Options,
    _report_counts,
    _subset,
)
from .folders import load_folder
from .shapes import load_shapes
from .zipsafe import MAX_TOTAL_BYTES, extract_zip

__all__ = ["ACCEPTED_SOURCES", "load_dataset"]

ACCEPTED_SOURCES = "'shapes', 'cifar10', 'cifar100', 'hf:<dataset name>', or a path to a folder or .zip file"


def _offline() -> bool:
    """True when nothing may be downloaded (CNNCOMPARE_OFFLINE=1 or HF_HUB_OFFLINE=1, as for model weights)."""
    return _models_offline()


def load_dataset(
    source: str,
    *,
    work_dir: str | Path,
    val_fraction: float = 0.2,
    max_per_class: int | None = None,
    seed: int = 0,
    shapes_per_class: int = 200,
    shapes_size: int = 64,
    cifar_root: str | Path | None = None,
    download: bool = True,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_unpack_bytes: int | None = None,
) -> LoadedData:
    """Load, validate and split a dataset; raise DataError for anything the user must fix.

    `max_per_class` caps the images per class over both splits (a seeded random subset);
    for data that comes already split the cap is shared as `val_fraction` says. The words
    'shapes', 'cifar10' and 'cifar100' win over folders of that name: write './shapes'.
    `max_total_bytes` (or its synonym `max_unpack_bytes`, a server's per-job budget) lowers the
    limit on what a zip may unpack to, and on the images an `hf:` dataset may write and download.

    Args:
        source: "shapes", "cifar10", "cifar100", "hf:NAME" (or "hf:NAME:CONFIG", or "hf:PATH" of a folder
            written by datasets' save_to_disk), a folder of class folders, or a .zip of one.
        work_dir: where zips are unpacked and downloads go (the source itself is never changed).

    Returns:
        LoadedData: name, classes, train and val splits, and the report (counts, skipped files, notes).

    Raises:
        DataError: anything the user must fix (not a zip, one class only, offline CIFAR...), in one sentence.
    """
    if max_unpack_bytes is not None:
        max_total_bytes = min(max_total_bytes, max_unpack_bytes)
    _check_options(val_fraction, max_per_class, seed)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    opts = _Options(val_fraction, max_per_class, seed)
    key = source.strip().lower()
    if key == "shapes":
        return load_shapes(opts, shapes_per_class, shapes_size)
    if key in ("cifar10", "cifar100"):
        # offline (as for model weights) means: read what is on disk, fetch nothing
        download = download and not _offline()
        return _load_cifar(key, Path(cifar_root) if cifar_root else work_dir / "cifar", download, opts)
    if key.startswith("hf:"):
        return _load_hf(source.strip()[3:].strip(), work_dir, opts, max_total_bytes)
    path = Path(source).expanduser()
    if path.is_dir():
        return load_folder(path, path.resolve().name, opts, skipped=[], notes=[])
    if path.is_file():
        if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            return _load_zip(path, work_dir, opts, max_total_bytes)
        raise DataError(
            f"'{path.name}' is a file but not a .zip: upload a .zip of class folders or give a folder path."
        )
    raise DataError(f"Unknown data source '{source}': use {ACCEPTED_SOURCES}.")


# --- CIFAR through torchvision ----------------------------------------------------------


def _load_cifar(key: str, root: Path, download: bool, opts: _Options) -> LoadedData:
    """Read CIFAR with torchvision's own classes; its official test split becomes val."""
    import torchvision.datasets as tvd

    cls, label, folder = {
        "cifar10": (tvd.CIFAR10, "CIFAR-10", "cifar-10-batches-py"),
        "cifar100": (tvd.CIFAR100, "CIFAR-100", "cifar-100-python"),
    }[key]
    try:
        root.mkdir(parents=True, exist_ok=True)
        train_set = cls(root=str(root), train=True, download=download)
        val_set = cls(root=str(root), train=False, download=download)
    except Exception as exc:  # network, tar and integrity errors all mean the same to the user
        if download:
            raise DataError(
                f"Could not download {label} (no network?). "
                f"Put the extracted '{folder}' folder in '{root}' and try again."
            ) from exc
        raise DataError(
            f"{label} was not found in '{root}': put the extracted '{folder}' folder there, or allow downloading."
        ) from exc
    classes = list(train_set.classes)
    notes = [f"official {label} split: the test set is used for validation"]
    train_cap, val_cap = opts.caps()
    train = _capped_array_split(classes, train_set.data, train_set.targets, train_cap, opts.rng(2, 0))
    val = _capped_array_split(classes, val_set.data, val_set.targets, val_cap, opts.rng(2, 1))
    if opts.max_per_class is not None:
        notes.append(opts.cap_note())
    report = DataReport(key, classes, _report_counts(classes, train, val), notes=notes)
    return LoadedData(key, classes, train, val, report)


def _capped_array_split(
    classes: list[str], data: np.ndarray, targets: list[int], cap: int | None, rng: np.random.Generator
) -> ImageDataset:
    targets = np.asarray(targets, dtype=np.int64)
    keep = []
    for label in range(len(classes)):
        members = np.flatnonzero(targets == label)
        keep.extend(members[_subset(len(members), cap, rng)])
    keep = np.sort(np.asarray(keep, dtype=np.int64))
    return ImageDataset(classes, targets[keep].tolist(), array=np.ascontiguousarray(data[keep]))


# --- Hugging Face (optional) ------------------------------------------------------------


def _load_hf(name: str, work_dir: Path, opts: _Options, max_total_bytes: int) -> LoadedData:
    """`hf:NAME`, `hf:NAME:CONFIG` or `hf:PATH` (a save_to_disk folder): see `hf.load_hf`."""
    from .hf import load_hf

    return load_hf(name, work_dir, opts, max_total_bytes)


# --- zip uploads ------------------------------------------------------------------------


def _load_zip(zip_path: Path, work_dir: Path, opts: _Options, max_total_bytes: int) -> LoadedData:
    uploads = work_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="upload-", dir=uploads))
    try:
        skipped, ignored = extract_zip(zip_path, dest, max_total_bytes)
        notes = [f"ignored {ignored} system or hidden file(s) (__MACOSX, .DS_Store, Thumbs.db, ...)"] if ignored else []
        return load_folder(dest, zip_path.name, opts, skipped=skipped, notes=notes)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # leave nothing half-extracted behind
        raise
