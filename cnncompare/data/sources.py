"""Where data comes from: `load_dataset` picks the reader for a source string.

Handles the sources that are not plain folders itself (CIFAR-10/100 through torchvision,
zip uploads extracted safely) and hands generated shapes, folders and Hugging Face `hf:`
datasets (`hf.py`) to their modules. Whether downloads are allowed is
decided in one place, `_offline()`.

Everything a source leaves on disk goes under one persistent data folder (`work_dir`; the CLI and
the app pass `Env.data_dir`): CIFAR is downloaded once into `cifar/`, and a zip is unpacked once
into `uploads/<its content hash>/`, reused while it is there (`prune_unpacked` removes old ones).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from ..env import Env
from ..errors import CNNCompareError
from ..settings import DataSettings, TrainSettings, check
from .base import (
    IMAGE_EXTENSIONS,
    DataError,
    DataReport,
    ImageDataset,
    LoadedData,
    _is_ignored,
    _Options,
    _report_counts,
    _subset,
    _val_count,
    check_dataset_size,
)
from .cifar import CIFAR, archive_kind, download_cifar, read_cifar, unpack_archive, unpacked_bytes
from .folders import load_folder
from .shapes import SHAPE_CLASSES, load_shapes
from .zipsafe import MAX_TOTAL_BYTES, check_zip, extract_zip

__all__ = [
    "ACCEPTED_SOURCES",
    "load_dataset",
    "open_source",
    "planned_size",
    "unpack_bytes",
    "source_identity",
    "file_digest",
    "prune_unpacked",
]

UNPACKED = ".cnncompare-unpacked.json"  # written last into an unpacked zip's folder: the unpacking finished

ACCEPTED_SOURCES = "'shapes', 'cifar10', 'cifar100', 'hf:<dataset name>', or a path to a folder or .zip file"


def _offline() -> bool:
    """True when nothing may be downloaded (CNNCOMPARE_OFFLINE=1 or HF_HUB_OFFLINE=1, as for model weights)."""
    return Env.read().offline


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
    try:  # the settings' own rules (the CLI's and the page's), said as a data error
        checked = DataSettings(source, max_per_class, val_fraction)
        seed = check(TrainSettings, "seed", seed)
    except CNNCompareError as err:
        raise DataError(str(err)) from None
    source, max_per_class, val_fraction = checked.source, checked.max_per_class, checked.val_fraction
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    opts = _Options(val_fraction, max_per_class, seed)
    key = source.strip().lower()
    if key == "shapes":
        return load_shapes(opts, shapes_per_class, shapes_size)
    if key in ("cifar10", "cifar100"):
        # offline (as for model weights) means: read what is on disk, fetch nothing
        download = download and not _offline()
        root = Path(cifar_root) if cifar_root else work_dir / "cifar"
        return _load_cifar(key, root.resolve(), download, opts)
    if key.startswith("hf:"):
        return _load_hf(source.strip()[3:].strip(), work_dir, opts, max_total_bytes)
    path = Path(source).expanduser()
    if path.is_dir():
        return load_folder(path, path.resolve().name, opts, skipped=[], notes=[])
    if path.is_file():
        if archive_kind(path):
            return _load_cifar_archive(path, archive_kind(path), work_dir, opts)
        if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            return _load_zip(path, work_dir, opts, max_total_bytes)
        raise DataError(
            f"'{path.name}' is a file but not a .zip: upload a .zip of class folders or give a folder path."
        )
    raise DataError(f"Unknown data source '{source}': use {ACCEPTED_SOURCES}.")


def open_source(
    settings: DataSettings,
    env: Env,
    *,
    seed: int = 0,
    size: int | None = None,
    server: bool = False,
    work_dir: str | Path | None = None,
) -> LoadedData:
    """The one loader of the CLI and the app: `load_dataset` with the dataset's settings; downloads and unpacked
    zips in the persistent data folder (`env.data_dir`), nothing downloaded when offline, and on a shared server
    (`server`) its limits: what a zip may unpack to (CNNCOMPARE_MAX_UNPACK_MB) and the dataset's pixels at the
    training `size` (CNNCOMPARE_MAX_DATASET_MPIX). `work_dir`: where an upload is unpacked (a visitor's own folder
    on a server); CIFAR by name is always read from the data folder.

    Raises:
        DataError: anything the user must fix, in one sentence; an offline CIFAR names a folder that exists.
    """
    unpack = int(env.max_unpack_mb * 2**20) if server and env.max_unpack_mb > 0 else None
    ds = load_dataset(
        settings.source,
        work_dir=work_dir or env.data_dir,
        cifar_root=env.data_dir / "cifar",
        val_fraction=settings.val_fraction,
        max_per_class=settings.max_per_class,
        seed=seed,
        download=not env.offline,
        max_unpack_bytes=unpack,
    )
    if server and size is not None and env.max_dataset_mpix > 0:
        check_dataset_size(ds, size, env.max_dataset_mpix)
    return ds


_KNOWN_SIZES = {  # classes, training and validation images per class (CIFAR: its official split)
    "shapes": (len(SHAPE_CLASSES), None, None),
    "cifar10": (10, 5000, 1000),
    "cifar100": (100, 500, 100),
}


def source_identity(source: str, max_per_class: int | None, seed: int, val_fraction: float = 0.2) -> str:
    """What makes two loads of a source give the same data: the source (a file by the hash of its bytes), the
    cap, the seed and the split. Two runs on equal identities train on the same images (`sharing`)."""
    key = source.strip().lower()
    path = Path(source).expanduser()
    if key in ("shapes", "cifar10", "cifar100") or key.startswith("hf:"):
        base = key
    elif path.is_file():
        base = "file:" + file_digest(path)
    else:
        base = "folder:" + str(path.resolve()) + "@" + _folder_stamp(path)  # the same path, as it is now
    return f"{base}|cap={max_per_class}|seed={seed}|val={val_fraction}"


def _folder_stamp(path: Path) -> str:
    """What a folder holds now, cheaply: its files' count, bytes and newest change (a picture added or deleted is
    another dataset, so a run on it is never taken for one on the folder as it was)."""
    n = size = newest = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            n, size, newest = n + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return f"{n}:{size}:{newest}"


def planned_size(
    source: str, max_per_class: int | None = None, *, val_fraction: float = 0.2, shapes_per_class: int = 200
) -> tuple[int, int, int] | None:
    """(training images, validation images, classes) a source will give, known without decoding anything: exact
    for shapes and CIFAR, counted from the listing of a zip or a folder (an upper bound: unreadable files are
    skipped later); None when it cannot be known before loading (a Hugging Face dataset)."""
    key = source.strip().lower()
    opts = _Options(val_fraction, max_per_class, 0)
    if key in _KNOWN_SIZES:
        classes, train_per, val_per = _KNOWN_SIZES[key]
        if train_per is None:  # shapes: one pool per class, split here
            n = min(shapes_per_class, max_per_class or shapes_per_class)
            val = _val_count(n, val_fraction)
            return classes * (n - val), classes * val, classes
        train_cap, val_cap = opts.caps()
        return classes * min(train_per, train_cap or train_per), classes * min(val_per, val_cap or val_per), classes
    path = Path(source).expanduser()
    if path.is_file() and archive_kind(path):  # CIFAR's own archive, uploaded: its official split
        classes, train_per, val_per = _KNOWN_SIZES[archive_kind(path)]
        train_cap, val_cap = opts.caps()
        return classes * min(train_per, train_cap or train_per), classes * min(val_per, val_cap or val_per), classes
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [Path(i.filename) for i in zf.infolist() if not i.is_dir()]
    elif path.is_dir():
        names = [p.relative_to(path) for p in path.rglob("*") if p.is_file()]
    else:
        return None
    per_class: dict[str, int] = {}
    for name in names:
        if name.suffix.lower() in IMAGE_EXTENSIONS and len(name.parts) >= 2 and not _is_ignored(name.parts):
            per_class[name.parts[-2]] = per_class.get(name.parts[-2], 0) + 1
    if not per_class:
        return None
    counts = [min(n, max_per_class) if max_per_class else n for n in per_class.values()]
    val = sum(max(0, _val_count(n, val_fraction)) for n in counts)
    return sum(counts) - val, val, len(per_class)


def unpack_bytes(source: str) -> int:
    """The most that loading `source` may write to disk (an upload's unpacked copy), read from its listing before
    anything is written: a zip's members' sizes, a CIFAR archive's files at their bounds; 0 for the rest.

    Raises:
        DataError: a zip that cannot be read, in one sentence.
    """
    path = Path(source).expanduser()
    if not path.is_file():
        return 0
    if archive_kind(path):
        return unpacked_bytes(CIFAR[archive_kind(path)])
    if zipfile.is_zipfile(path):
        check_zip(path, MAX_TOTAL_BYTES)
        with zipfile.ZipFile(path) as zf:
            return sum(i.file_size for i in zf.infolist() if not i.is_dir())
    return 0


# --- CIFAR ------------------------------------------------------------------------------


def _load_cifar(key: str, root: Path, download: bool, opts: _Options) -> LoadedData:
    """CIFAR from `root` (downloaded there once, when allowed); its official test split becomes val."""
    spec = CIFAR[key]
    root.mkdir(parents=True, exist_ok=True)
    folder = root / spec.folder
    if not folder.is_dir():
        if not download:
            raise DataError(
                f"{spec.label} was not found in '{root}': put the extracted '{spec.folder}' folder there, upload "
                f"{spec.archive} (its own archive) as your dataset, or allow downloading."
            )
        try:
            download_cifar(spec, root)
        except Exception as exc:  # network, tar and integrity errors all mean the same to the user
            raise DataError(
                f"Could not download {spec.label} (no network?). Put the extracted '{spec.folder}' folder in "
                f"'{root}', or upload {spec.archive} as your dataset, and try again."
            ) from exc
    return _cifar_data(spec, folder, opts, spec.key)


def _cifar_data(spec, folder: Path, opts: _Options, source: str) -> LoadedData:
    classes, (x_train, y_train), (x_val, y_val) = read_cifar(spec, folder)
    notes = [f"official {spec.label} split: the test set is used for validation"]
    train_cap, val_cap = opts.caps()
    train = _capped_array_split(classes, x_train, y_train, train_cap, opts.rng(2, 0))
    val = _capped_array_split(classes, x_val, y_val, val_cap, opts.rng(2, 1))
    if opts.max_per_class is not None:
        notes.append(opts.cap_note())
    report = DataReport(source, classes, _report_counts(classes, train, val), notes=notes)
    return LoadedData(spec.key, classes, train, val, report)


def _load_cifar_archive(path: Path, key: str, work_dir: Path, opts: _Options) -> LoadedData:
    """CIFAR's own archive, uploaded: its files (only those) unpacked once per content into `uploads/`."""
    spec = CIFAR[key]
    dest = work_dir / "uploads" / file_digest(path)
    dest.mkdir(parents=True, exist_ok=True)
    folder = dest / spec.folder
    if not folder.is_dir():
        folder = unpack_archive(path, spec, dest)
    return _cifar_data(spec, folder, opts, path.name)


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


def file_digest(path: str | Path, chunk: int = 2**20) -> str:
    """The first 16 hex digits of a file's sha256: what names its unpacked copy (and identifies its content)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def _load_zip(zip_path: Path, work_dir: Path, opts: _Options, max_total_bytes: int) -> LoadedData:
    """Unpack a zip once into `uploads/<content hash>/` (reused by the next run on the same zip) and load it."""
    uploads = work_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    dest = uploads / file_digest(zip_path)
    manifest = dest / UNPACKED
    if manifest.is_file():
        check_zip(zip_path, max_total_bytes)  # unpacked under another limit: today's must still hold
        found = json.loads(manifest.read_text())
        skipped, ignored = [tuple(x) for x in found["skipped"]], int(found["ignored"])
        os.utime(dest)  # in use: pruning leaves it
    else:
        tmp = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=uploads))
        try:
            skipped, ignored = extract_zip(zip_path, tmp, max_total_bytes)
            (tmp / UNPACKED).write_text(json.dumps({"skipped": skipped, "ignored": ignored}))
            try:
                tmp.rename(dest)
            except OSError:  # unpacked meanwhile by another run on the same zip: use that copy
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # leave nothing half-extracted behind
            raise
    notes = [f"ignored {ignored} system or hidden file(s) (__MACOSX, .DS_Store, Thumbs.db, ...)"] if ignored else []
    return load_folder(dest, zip_path.name, opts, skipped=list(skipped), notes=notes)


def prune_unpacked(work_dir: str | Path, *, max_age_s: float | None = None, max_bytes: float | None = None) -> int:
    """Remove unpacked zips under `work_dir/uploads` unused for `max_age_s`, then the least recently used until the
    rest fit `max_bytes` (one used in the last hour is kept: a run may be reading it). Returns how many."""
    uploads = Path(work_dir) / "uploads"
    if not uploads.is_dir():
        return 0
    now = time.time()
    folders = sorted((d for d in uploads.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    sizes = {d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in folders}
    total, removed = sum(sizes.values()), 0
    for d in folders:
        age = now - d.stat().st_mtime
        if age < 3600:
            continue
        old = max_age_s is not None and age > max_age_s
        if old or (max_bytes is not None and total > max_bytes) or d.name.startswith(".unpacking-"):
            shutil.rmtree(d, ignore_errors=True)
            total -= sizes[d]
            removed += 1
    return removed
