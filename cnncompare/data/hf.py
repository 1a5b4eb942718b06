"""Hugging Face image-classification datasets: the `hf:` sources.

Accepted forms (after the `hf:` prefix):

    NAME             a dataset on the Hugging Face Hub (`hf:beans`, `hf:user/name`), downloaded into
                     work_dir/hf-cache; offline, only a dataset already in that cache loads
    NAME:CONFIG      one configuration of a Hub dataset that has several (`hf:user/name:small`)
    PATH             a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`
                     (`hf:/data/flowers`, `hf:./flowers`): read with `datasets.load_from_disk`, no
                     network at all (tests, classrooms)

A path that exists wins over a name. The image column is the first `datasets.Image` feature
(one named "image" or "img" first), the labels the first `ClassLabel` (one named "label" or
"labels" first); the class names are `ClassLabel.names`, in their order (classes without any
image are left out, with a note). The split named "train" (else the first) trains; the first of
"validation", "valid", "val", "test" validates; without one, each class is split as a folder
without train/val folders is (the same seeded, stratified split). Rows whose label is -1 (no
label, as in some test splits) are skipped.

Only the rows that will be used (after the per-class cap) are written, as their stored encoded
bytes (no decoding), into a fresh folder under work_dir; writing stops with a DataError once they
pass `max_total_bytes` (a server's budget), and a Hub dataset whose download is larger than that is
refused before downloading. Each image is then checked like a folder's (undecodable, over
`folders.MAX_PIXELS`: skipped and listed in the report).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import first_line
from .base import DataError, DataReport, LoadedData, _Options, _report_counts, _subset, _workers
from .folders import _check_image, _pick_and_split, _pick_split

__all__ = ["VAL_SPLITS", "parse_source", "load_hf"]

VAL_SPLITS = ("validation", "valid", "val", "test")
_IMAGE_NAMES = ("image", "img")
_LABEL_NAMES = ("label", "labels")
_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_BATCH = 64


def parse_source(text: str) -> tuple[str, str | None, Path | None]:
    """'NAME', 'NAME:CONFIG' or a saved folder's path -> (name as shown, config, local folder or None)."""
    text = text.strip()
    path = Path(text).expanduser()
    if text and (path.exists() or text.startswith((".", "/", "~"))):
        return path.name or text, None, path
    name, _, config = text.partition(":")
    return name.strip(), (config.strip() or None), None


def load_hf(text: str, work_dir: Path, opts: _Options, max_total_bytes: int) -> LoadedData:
    """Load an `hf:` source (the text after 'hf:'), check it and split it; DataError for anything to fix."""
    if not text.strip():
        raise DataError("Give a dataset name after 'hf:', e.g. 'hf:beans', or the folder of a saved dataset.")
    import importlib.util

    if importlib.util.find_spec("datasets") is None:
        raise DataError(
            "Hugging Face datasets need the optional 'datasets' package: run `pip install 'cnncompare[hf]'` (or "
            "`pip install datasets`) and try again."
        )
    name, config, local = parse_source(text)
    source = f"hf:{name}" + (f":{config}" if config else "")
    splits = _open_local(local, source) if local is not None else _open_hub(name, config, work_dir, max_total_bytes)
    return _load_splits(splits, source, work_dir, opts, max_total_bytes)


# --- opening --------------------------------------------------------------------------


def _open_local(path: Path, source: str) -> dict:
    import datasets

    if not path.is_dir():
        raise DataError(f"'{source}' is not a folder: give a folder written by save_to_disk, or a Hub dataset name.")
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # FileNotFoundError for a plain folder, arrow errors for a damaged one
        raise DataError(
            f"'{source}' is not a dataset saved with save_to_disk ({type(exc).__name__}: "
            f"{first_line(exc)[:120]}): save it again with dataset.save_to_disk(folder)."
        ) from None
    return _as_splits(loaded, source)


def _as_splits(loaded, source: str) -> dict:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        splits = dict(loaded)
    elif isinstance(loaded, datasets.Dataset):
        splits = {"train": loaded}
    else:
        raise DataError(f"'{source}' is a streamed dataset, which cannot be split here: download it first.")
    if not splits:
        raise DataError(f"'{source}' has no splits: it holds no data.")
    return splits


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """datasets' own offline mode for one call (it reads a module constant), so no request is tried."""
    import datasets.config as cfg

    before = cfg.HF_HUB_OFFLINE
    cfg.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        cfg.HF_HUB_OFFLINE = before


def _open_hub(name: str, config: str | None, work_dir: Path, max_total_bytes: int) -> dict:
    import datasets

    from ..models import weights_downloadable

    source = f"hf:{name}" + (f":{config}" if config else "")
    online = weights_downloadable()  # downloads on and the Hub reachable (one quick connection attempt)
    try:
        with _hub_offline(not online):
            builder = datasets.load_dataset_builder(name, config, cache_dir=str(work_dir / "hf-cache"))
            size = builder.info.download_size or builder.info.dataset_size
            if size and size > max_total_bytes:
                raise DataError(
                    f"'{source}' is {size / 1e6:,.0f} MB to download, more than this server's limit of "
                    f"{max_total_bytes / 1e6:,.0f} MB: pick a smaller dataset."
                )
            builder.download_and_prepare()
            loaded = builder.as_dataset()
    except DataError:
        raise
    except Exception as exc:  # unknown name, gated, no network, not in the cache: one sentence each
        where = "check the name and the network" if online else "offline, only datasets already downloaded load"
        raise DataError(
            f"Could not load Hugging Face dataset '{source}' ({type(exc).__name__}: "
            f"{' '.join(first_line(exc).split())[:160]}): {where}."
        ) from None
    return _as_splits(loaded, source)


# --- columns, labels and rows ----------------------------------------------------------


def _columns(features, source: str) -> tuple[str, str]:
    import datasets

    def pick(kind, preferred):
        found = [k for k, f in features.items() if isinstance(f, kind)]
        return next((k for k in found if k.lower() in preferred), found[0] if found else None)

    image_col, label_col = pick(datasets.Image, _IMAGE_NAMES), pick(datasets.ClassLabel, _LABEL_NAMES)
    columns = ", ".join(list(features)[:8]) or "none"
    if image_col is None:
        raise DataError(
            f"'{source}' has no image column (a datasets Image feature; its columns: {columns}): "
            "pick an image-classification dataset."
        )
    if label_col is None:
        raise DataError(
            f"'{source}' has images but no class-label column (a ClassLabel feature; its columns: {columns}): "
            "pick an image-classification dataset, or cast its label column to ClassLabel before saving it."
        )
    return image_col, label_col


def _labels(split, label_col: str) -> np.ndarray:
    # the label column alone, as one numpy array (no image is read)
    return np.asarray(split.select_columns([label_col]).with_format("numpy")[:][label_col], dtype=np.int64)


def _rows_by_class(labels: np.ndarray, classes: list[int], cap: int | None, opts: _Options, salt: int) -> dict:
    """Row numbers per class (a seeded random subset of `cap` when capped), in row order."""
    out = {}
    for c in classes:
        rows = np.flatnonzero(labels == c)
        out[c] = rows[_subset(len(rows), cap, opts.rng(6, salt, c))]
    return out


def _extension(value: dict, data: bytes) -> str:
    suffix = Path(value.get("path") or "").suffix.lower()
    if suffix in (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"):
        return suffix
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            return _FORMATS.get(img.format, ".img")
    except Exception:
        return ".img"  # not an image: the check lists it as such


def _image_bytes(value, feature) -> bytes | None:
    """The stored, encoded bytes of one image (read from its file when only a local path is stored)."""
    if not isinstance(value, dict):
        return None
    if value.get("bytes"):
        return value["bytes"]
    path = value.get("path")
    if path and Path(path).is_file():
        return Path(path).read_bytes()
    try:  # a path inside an archive or remote: let datasets decode it, then store it as PNG
        buf = io.BytesIO()
        feature.decode_example(value).save(buf, format="PNG")
        return buf.getvalue()
    except Exception:
        return None


class _Writer:
    """Writes chosen rows' images into folders, counting bytes against the budget."""

    def __init__(self, root: Path, source: str, max_total_bytes: int):
        self.root, self.source, self.max = root, source, max_total_bytes
        self.total = 0
        self.skipped: list[tuple[str, str]] = []

    def write(self, split, split_name: str, image_col: str, rows: dict[int, np.ndarray], names: list[str]) -> dict:
        import datasets

        feature = datasets.Image()
        raw = split.select_columns([image_col]).cast_column(image_col, datasets.Image(decode=False))
        order = np.sort(np.concatenate([r for r in rows.values()] or [np.empty(0, np.int64)]))
        label_of = {int(r): c for c, rs in rows.items() for r in rs}
        files: dict[str, list[Path]] = {names[c]: [] for c in rows}
        for start in range(0, len(order), _BATCH):
            chunk = [int(r) for r in order[start : start + _BATCH]]
            for row, value in zip(chunk, raw.select(chunk)[image_col]):
                data = _image_bytes(value, feature)
                if data is None:
                    self.skipped.append((f"{split_name} row {row}", "no readable image data"))
                    continue
                self.total += len(data)
                if self.total > self.max:
                    raise DataError(
                        f"'{self.source}' holds more than this server's limit of {self.max / 1e6:,.0f} MB of "
                        "images: lower the images per class, or pick a smaller dataset."
                    )
                c = label_of[row]
                folder = self.root / split_name / str(c)
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{row:08d}{_extension(value, data)}"
                path.write_bytes(data)
                files[names[c]].append(path)
        return files


# --- the splits ----------------------------------------------------------------------


def _load_splits(splits: dict, source: str, work_dir: Path, opts: _Options, max_total_bytes: int) -> LoadedData:
    train_name = "train" if "train" in splits else next(iter(splits))
    train = splits[train_name]
    image_col, label_col = _columns(train.features, source)
    names = [str(n) for n in train.features[label_col].names]
    notes = [f"images from column '{image_col}', classes from '{label_col}' ({len(names)} class names)"]
    val_name = next((s for s in VAL_SPLITS if s in splits and s != train_name), None)
    val = splits[val_name] if val_name else None
    if val is not None and (image_col not in val.features or label_col not in val.features):
        notes.append(f"ignored split '{val_name}': it lacks column '{image_col}' or '{label_col}'")
        val = val_name = None

    train_labels = _labels(train, label_col)
    val_labels = _labels(val, label_col) if val is not None else None
    unlabelled = int(((train_labels < 0) | (train_labels >= len(names))).sum())
    if val_labels is not None:
        val_ok = (val_labels >= 0) & (val_labels < len(names))
        unlabelled += int((~val_ok).sum())
        if not val_ok.any():
            notes.append(f"ignored split '{val_name}': none of its rows has a label")
            val = val_labels = val_name = None
    if unlabelled:
        notes.append(f"skipped {unlabelled} row(s) without a class label (-1)")
    present = [c for c in range(len(names)) if (train_labels == c).any()]
    empty = [names[c] for c in range(len(names)) if c not in present]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        notes.append(f"left out {len(empty)} class(es) without training images: {shown}")
    if len(present) < 2:
        only = f" ('{names[present[0]]}')" if present else ""
        raise DataError(f"'{source}' has images of {len(present)} class{only}: at least 2 classes are needed.")
    classes = [names[c] for c in present]

    out = Path(tempfile.mkdtemp(prefix="hf-", dir=work_dir))
    try:
        writer = _Writer(out, source, max_total_bytes)
        if val is None:
            rows = _rows_by_class(train_labels, present, opts.max_per_class, opts, 0)
            files = writer.write(train, "train", image_col, rows, names)
        else:
            train_cap, val_cap = opts.caps()
            files = writer.write(
                train, "train", image_col, _rows_by_class(train_labels, present, train_cap, opts, 0), names
            )
            val_files = writer.write(
                val, "val", image_col, _rows_by_class(val_labels, present, val_cap, opts, 1), names
            )
        skipped = writer.skipped
        rel = lambda p: f"{p.parent.parent.name} row {int(p.stem)}"  # noqa: E731  rows as the user knows them
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            check = lambda paths: list(pool.map(_check_image, paths))  # noqa: E731
            if val is None:
                train_ds, val_ds = _pick_and_split(classes, files, opts, check, skipped, rel)
                split_note = f"split {opts.val_fraction:.0%} of each class for validation (seed {opts.seed})"
                notes.append(f"no validation split: {split_note}")
            else:
                train_cap, val_cap = opts.caps()
                train_ds = _pick_split(classes, files, train_cap, opts.rng(3, 0), check, skipped, rel, "train")
                val_ds = _pick_split(classes, val_files, val_cap, opts.rng(3, 1), check, skipped, rel, "val")
                notes.append(f"used split '{train_name}' for training and '{val_name}' for validation")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # nothing half-written stays behind
        raise
    if opts.max_per_class is not None:
        notes.append(opts.cap_note())
    report = DataReport(source, classes, _report_counts(classes, train_ds, val_ds), sorted(skipped), notes)
    return LoadedData(source, classes, train_ds, val_ds, report)
