"""Folder layouts: class folders, train/val(/test) split folders, a wrapping top folder.

Finds the layout under a folder, checks every image file (skipping and reporting the ones
that cannot be used), picks seeded capped subsets, splits when there are no split folders,
and builds the `DataReport` for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import (
    IMAGE_EXTENSIONS,
    MIN_PER_CLASS,
    DataError,
    DataReport,
    ImageDataset,
    LoadedData,
    _is_ignored,
    _Options,
    _report_counts,
    _split_indices,
    _workers,
)

__all__ = ["MIN_CLASSES", "MAX_PIXELS", "TRAIN_DIRS", "VAL_DIRS", "TEST_DIRS", "load_folder"]

MIN_CLASSES = 2
MAX_PIXELS = 40_000_000  # per image; larger ones are skipped (memory and decode time)
TRAIN_DIRS = frozenset({"train", "training"})
VAL_DIRS = frozenset({"val", "validation", "valid"})
TEST_DIRS = frozenset({"test", "testing"})  # used as validation only when there is no val/


def _children(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible sub-folders and files of `folder`, sorted by name."""
    dirs, files = [], []
    for entry in sorted(folder.iterdir()):
        if _is_ignored([entry.name]):
            continue
        (dirs if entry.is_dir() else files).append(entry)
    return dirs, files


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _walk(folder: Path) -> tuple[list[Path], list[Path], int]:
    """All visible files below `folder`: (image-named files, other files, ignored count)."""
    images, others, ignored = [], [], 0
    for current, dirnames, filenames in os.walk(folder):
        kept = [d for d in dirnames if not _is_ignored([d])]
        ignored += len(dirnames) - len(kept)
        dirnames[:] = sorted(kept)  # prune hidden folders and keep the walk deterministic
        for filename in sorted(filenames):
            if _is_ignored([filename]):
                ignored += 1
                continue
            path = Path(current) / filename
            (images if _is_image_name(path) else others).append(path)
    return images, others, ignored


def _unwrap(root: Path) -> tuple[Path, list[str]]:
    """Step into single wrapping folders (a zip of mydata/cats/...) while that is unambiguous."""
    notes = []
    while True:
        dirs, files = _children(root)
        only = dirs[0] if len(dirs) == 1 else None
        if only is None or any(_is_image_name(f) for f in files) or _split_kind(only.name) or not _children(only)[0]:
            return root, notes
        notes.append(f"used the single top folder '{only.name}/' as the dataset root")
        root = only


def _split_kind(name: str) -> str | None:
    lower = name.lower()
    if lower in TRAIN_DIRS:
        return "train"
    if lower in VAL_DIRS:
        return "val"
    if lower in TEST_DIRS:
        return "test"
    return None


@dataclass
class _Layout:
    train: Path
    val: Path | None  # None: split train/ ourselves
    notes: list[str]


def _find_layout(root: Path, source: str) -> _Layout:
    dirs, _ = _children(root)
    kinds = {d: _split_kind(d.name) for d in dirs}
    by_kind = {kind: d for d, kind in kinds.items() if kind}
    if not by_kind:
        return _Layout(root, None, [])
    if "train" not in by_kind:
        found = next(iter(by_kind.values())).name
        raise DataError(
            f"{source} has a '{found}/' folder but no 'train/' folder: "
            "put training images in train/<class>/ or drop the split folders."
        )
    notes = []
    val = by_kind.get("val") or by_kind.get("test")
    if val is not None:
        notes.append(f"used '{by_kind['train'].name}/' for training and '{val.name}/' for validation")
    if "val" in by_kind and "test" in by_kind:
        notes.append(f"ignored '{by_kind['test'].name}/' because '{by_kind['val'].name}/' is used for validation")
    others = [d.name for d, kind in kinds.items() if not kind]
    if others:
        notes.append(f"ignored folder(s) next to train/: {', '.join(others)}")
    return _Layout(by_kind["train"], val, notes)


def load_folder(
    folder: Path, source: str, opts: _Options, skipped: list[tuple[str, str]], notes: list[str]
) -> LoadedData:
    """Load class folders under `folder`; `skipped`/`notes` may already hold zip findings."""
    base = folder
    root, unwrap_notes = _unwrap(folder)
    layout = _find_layout(root, f"'{source}'")
    notes = notes + unwrap_notes + layout.notes
    rel = lambda p: p.relative_to(base).as_posix()  # noqa: E731  paths as the user sees them
    train_files, classes = _class_files(layout.train, skipped, notes, rel)
    _check_class_count(classes, source)
    if layout.val is not None:
        val_files, val_classes = _class_files(layout.val, skipped, notes, rel)
        extra = [c for c in val_classes if c not in train_files]
        if extra:
            raise DataError(
                f"Class '{extra[0]}' is in '{layout.val.name}/' but not in '{layout.train.name}/': "
                "use the same class folders in both."
            )

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        check = lambda paths: list(pool.map(_check_image, paths))  # noqa: E731
        if layout.val is None:
            train, val = _pick_and_split(classes, train_files, opts, check, skipped, rel)
            notes.append(
                f"no train/val folders: split {opts.val_fraction:.0%} of each class for validation (seed {opts.seed})"
            )
        else:
            train_cap, val_cap = opts.caps()
            train = _pick_split(classes, train_files, train_cap, opts.rng(3, 0), check, skipped, rel, "train")
            val = _pick_split(classes, val_files, val_cap, opts.rng(3, 1), check, skipped, rel, "val")
    if opts.max_per_class is not None:
        notes.append(opts.cap_note())
    report = DataReport(source, classes, _report_counts(classes, train, val), sorted(skipped), notes)
    name = source[:-4] if source.lower().endswith(".zip") else source
    return LoadedData(name, classes, train, val, report)


def _class_files(split_dir: Path, skipped: list, notes: list, rel: Callable) -> tuple[dict[str, list[Path]], list[str]]:
    """Image-named files per class folder of one split; stray files go to `skipped`."""
    dirs, files = _children(split_dir)
    for f in files:
        skipped.append((rel(f), "not inside a class folder" if _is_image_name(f) else "not an image"))
    by_class, ignored, empty = {}, 0, []
    for d in dirs:
        images, others, n_ignored = _walk(d)
        if not images and not others:  # an empty folder (zips keep them) is no class: say so and go on
            empty.append(f"{d.name}/")
            ignored += n_ignored
            continue
        by_class[d.name] = images
        skipped.extend((rel(o), "not an image") for o in others)
        ignored += n_ignored
    if ignored:
        notes.append(f"ignored {ignored} hidden or system file(s) in '{split_dir.name}/'")
    if empty:
        notes.append(f"ignored {len(empty)} folder(s) without files, not classes: {', '.join(sorted(empty))}")
    return by_class, list(by_class)


def _check_class_count(classes: list[str], source: str) -> None:
    if not classes:
        raise DataError(
            f"No class folders found in '{source}': put the images in one sub-folder per class (e.g. cats/, dogs/)."
        )
    if len(classes) < MIN_CLASSES:
        raise DataError(
            f"Only one class ('{classes[0]}') found in '{source}': at least {MIN_CLASSES} class folders are needed."
        )


def _pick_valid(
    paths: list[Path], cap: int | None, rng: np.random.Generator, check: Callable, skipped: list, rel: Callable
) -> list[Path]:
    """Validate files (a seeded random order when capped) until `cap` usable ones are found.

    With a cap only as many files are decoded as needed, so large uploads stay quick.
    """
    order = [paths[i] for i in rng.permutation(len(paths))] if cap is not None else paths
    good: list[Path] = []
    pos = 0
    while pos < len(order) and (cap is None or len(good) < cap):
        batch = order[pos : pos + (len(order) if cap is None else cap - len(good))]
        pos += len(batch)
        for path, reason in zip(batch, check(batch)):
            if reason is None:
                good.append(path)
            else:
                skipped.append((rel(path), reason))
    return sorted(good)


def _too_few(name: str, have: int, need: int, where: str, n_skipped: int) -> DataError:
    skipped = f" ({n_skipped} of its files were skipped, see the report)" if n_skipped else ""
    return DataError(
        f"Class '{name}' has only {have} usable image(s){where}{skipped}; "
        f"it needs at least {need}, so add images or remove that folder."
    )


def _pick_and_split(classes, files, opts: _Options, check, skipped, rel) -> tuple[ImageDataset, ImageDataset]:
    train_paths, train_labels, val_paths, val_labels = [], [], [], []
    for label, name in enumerate(classes):
        before = len(skipped)
        good = _pick_valid(files[name], opts.max_per_class, opts.rng(4, label), check, skipped, rel)
        if len(good) < 2 * MIN_PER_CLASS:
            raise _too_few(name, len(good), 2 * MIN_PER_CLASS, "", len(skipped) - before)
        tr, va = _split_indices(len(good), opts.val_fraction, opts.rng(5, label))
        train_paths += [good[i] for i in tr]
        val_paths += [good[i] for i in va]
        train_labels += [label] * len(tr)
        val_labels += [label] * len(va)
    return ImageDataset(classes, train_labels, paths=train_paths), ImageDataset(classes, val_labels, paths=val_paths)


def _pick_split(classes, files, cap, rng, check, skipped, rel, split: str) -> ImageDataset:
    paths, labels = [], []
    for label, name in enumerate(classes):
        before = len(skipped)
        good = _pick_valid(files.get(name, []), cap, rng, check, skipped, rel)
        if len(good) < MIN_PER_CLASS:
            raise _too_few(name, len(good), MIN_PER_CLASS, f" in {split}", len(skipped) - before)
        paths += good
        labels += [label] * len(good)
    return ImageDataset(classes, labels, paths=paths)


# --- image checks -----------------------------------------------------------------------


def _check_image(path: Path) -> str | None:
    """Why an image file cannot be used, or None if it decodes fully."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                return f"too large (over {MAX_PIXELS // 1_000_000} megapixels)"
            img.verify()
        with Image.open(path) as img:
            img.load()  # truncated JPEGs pass verify(); only decoding finds them
    except Image.DecompressionBombError:
        return f"too large (over {MAX_PIXELS // 1_000_000} megapixels)"
    except UnidentifiedImageError:
        return "not an image"
    except (PermissionError, FileNotFoundError, IsADirectoryError):
        return "unreadable"
    except Exception:  # PIL plugins raise many types (OSError, SyntaxError, struct.error...) on bad data
        return "corrupt or truncated image"
    return None
