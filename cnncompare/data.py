"""Datasets: generate, read, validate and split images before any training starts.

`load_dataset(source, work_dir=...)` accepts
  * "shapes"            - a synthetic, offline, seeded set of drawn shapes and patterns;
  * "cifar10"/"cifar100" - read through torchvision (downloaded when the network allows);
  * "hf:<name>"         - a Hugging Face dataset (needs the optional `datasets` package);
  * a folder or a .zip  - one sub-folder per class, optionally inside train/ and val/.

Every problem with the user's input is raised as `DataError` with one sentence that says
what is wrong and what to do. Files that are merely unusable (not an image, corrupt,
too large, unsafe zip member) are skipped and listed in the `DataReport` instead.

Zip policy: an upload is never touched in place. Its members are streamed into a new
folder under `work_dir`. Members with unsafe paths (absolute, drive letters, backslashes,
"..") and symbolic links are skipped and reported; the whole zip is refused when it looks
like a zip bomb (too many members, too many bytes in total, or a member that expands more
than `MAX_RATIO` times).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.utils.data
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cnncompare.errors import DataError

# --- limits and conventions -------------------------------------------------------------

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MIN_CLASSES = 2
MIN_PER_CLASS = 2  # usable images per class in each split (train and val)
MAX_PIXELS = 40_000_000  # per image; larger ones are skipped (memory and decode time)
MAX_MEMBERS = 50_000  # zip entries
MAX_TOTAL_BYTES = 2 * 1024**3  # uncompressed size of a zip's members, all together
MAX_RATIO = 100  # uncompressed/compressed size of one zip member
RATIO_MIN_BYTES = 1024**2  # tiny members may compress very well without being bombs
TRAIN_DIRS = frozenset({"train", "training"})
VAL_DIRS = frozenset({"val", "validation", "valid"})
TEST_DIRS = frozenset({"test", "testing"})  # used as validation only when there is no val/
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
SHAPE_CLASSES = (
    "circle",
    "ring",
    "square",
    "triangle",
    "cross",
    "star",
    "horizontal-stripes",
    "vertical-stripes",
)
ACCEPTED_SOURCES = "'shapes', 'cifar10', 'cifar100', 'hf:<dataset name>', or a path to a folder or .zip file"

_CHUNK = 1024**2
_INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


# --- public data types ------------------------------------------------------------------


@dataclass
class DataReport:
    """What was loaded, what was skipped and why: shown to the user before training."""

    source: str
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> number of images
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    notes: list[str] = field(default_factory=list)

    def summary(self, max_paths: int = 5) -> str:
        lines = [f"Source: {self.source}", f"{len(self.classes)} classes:"]
        for name in self.classes:
            per_split = ", ".join(f"{split} {counts.get(name, 0)}" for split, counts in self.counts.items())
            lines.append(f"  {name}: {per_split}")
        totals = ", ".join(f"{split} {sum(c.values())}" for split, c in self.counts.items())
        lines.append(f"Total: {totals}")
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} file(s):")
            by_reason: dict[str, list[str]] = defaultdict(list)
            for path, reason in self.skipped:
                by_reason[reason].append(path)
            for reason, paths in by_reason.items():
                shown = ", ".join(paths[:max_paths])
                more = f" and {len(paths) - max_paths} more" if len(paths) > max_paths else ""
                lines.append(f"  {reason} ({len(paths)}): {shown}{more}")
        lines.extend(f"Note: {note}" for note in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        result = asdict(self)
        result["skipped"] = [list(item) for item in self.skipped]
        return result


@dataclass(eq=False, repr=False)
class ImageDataset(torch.utils.data.Dataset):
    """One split, untransformed: yields (RGB PIL image, label).

    Backed either by image files (`paths`) or by an in-memory uint8 array (N, H, W, 3).
    """

    classes: list[str]
    labels: list[int]
    paths: list[Path] | None = None
    array: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.paths is None) == (self.array is None):
            raise ValueError("ImageDataset needs exactly one of `paths` or `array`")
        backing = self.paths if self.paths is not None else self.array
        if len(backing) != len(self.labels):
            raise ValueError("ImageDataset: images and labels differ in length")
        arr = self.array
        if arr is not None and (arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3):
            raise ValueError("ImageDataset: `array` must be uint8 with shape (N, H, W, 3)")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        backing = "files" if self.paths is not None else "in memory"
        return f"ImageDataset({len(self)} images, {len(self.classes)} classes, {backing})"

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.image(index), self.labels[index]

    def image(self, index: int) -> Image.Image:
        if self.array is not None:
            return Image.fromarray(self.array[index])
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                return _to_rgb(img)
        except (OSError, ValueError) as exc:
            raise DataError(
                f"Could not read image '{path.name}' ({exc}); it may have been moved or deleted "
                "since loading, so load the data again."
            ) from exc


@dataclass
class LoadedData:
    name: str
    classes: list[str]
    train: ImageDataset
    val: ImageDataset
    report: DataReport


# --- entry points -----------------------------------------------------------------------


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
) -> LoadedData:
    """Load, validate and split a dataset; raise DataError for anything the user must fix.

    `max_per_class` caps the images per class over both splits (a seeded random subset);
    for data that comes already split the cap is shared as `val_fraction` says. The words
    'shapes', 'cifar10' and 'cifar100' win over folders of that name: write './shapes'.
    `max_total_bytes` lowers the zip size limit (tests use it).
    """
    _check_options(val_fraction, max_per_class, seed)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    opts = _Options(val_fraction, max_per_class, seed)
    key = source.strip().lower()
    if key == "shapes":
        return _load_shapes(opts, shapes_per_class, shapes_size)
    if key in ("cifar10", "cifar100"):
        # CNNCOMPARE_OFFLINE=1 (as for model weights) means: read what is on disk, fetch nothing
        download = download and os.environ.get("CNNCOMPARE_OFFLINE", "").lower() not in ("1", "true", "yes")
        return _load_cifar(key, Path(cifar_root) if cifar_root else work_dir / "cifar", download, opts)
    if key.startswith("hf:"):
        return _load_hf(source.strip()[3:].strip(), work_dir, opts)
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_folder(path, path.resolve().name, opts, skipped=[], notes=[])
    if path.is_file():
        if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            return _load_zip(path, work_dir, opts, max_total_bytes)
        raise DataError(
            f"'{path.name}' is a file but not a .zip: upload a .zip of class folders or give a folder path."
        )
    raise DataError(f"Unknown data source '{source}': use {ACCEPTED_SOURCES}.")


def to_tensors(ds: ImageDataset, size: int, interpolation: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image once and resize it to size x size.

    Returns uint8 images (N, 3, size, size) and int64 labels (N,), so a trainer pays for
    decoding once per run instead of once per epoch.
    """
    if size < 1:
        raise DataError(f"The image size must be a positive number of pixels (got {size}).")
    if interpolation not in _INTERPOLATIONS:
        raise DataError(f"Unknown interpolation '{interpolation}': use one of {', '.join(_INTERPOLATIONS)}.")
    mode = _INTERPOLATIONS[interpolation]
    labels = torch.tensor(ds.labels, dtype=torch.int64)
    if ds.array is not None:
        images = torch.from_numpy(ds.array).permute(0, 3, 1, 2)
        if images.shape[-2:] == (size, size):
            return images.contiguous(), labels
        # Resize in chunks: one batched call is fast, but the whole set at once may not fit.
        chunks = [
            TF.resize(images[i : i + 256], [size, size], interpolation=mode, antialias=True)
            for i in range(0, len(images), 256)
        ]
        out = torch.cat(chunks) if chunks else torch.empty((0, 3, size, size), dtype=torch.uint8)
        return out.contiguous(), labels

    out = np.empty((len(ds), 3, size, size), dtype=np.uint8)

    def decode(index: int) -> None:
        img = TF.resize(ds.image(index), [size, size], interpolation=mode, antialias=True)  # PIL in, PIL out
        out[index] = np.asarray(img).transpose(2, 0, 1)

    # PIL decodes and resizes without the GIL; numpy (not torch) copies inside the threads
    # so that torch's own thread pool is not oversubscribed.
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        list(pool.map(decode, range(len(ds))))
    return torch.from_numpy(out), labels


# --- options and splitting --------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    val_fraction: float
    max_per_class: int | None
    seed: int

    def caps(self) -> tuple[int | None, int | None]:
        """Per-class caps for (train, val) when the data comes already split."""
        if self.max_per_class is None:
            return None, None
        n_val = _val_count(self.max_per_class, self.val_fraction)
        return self.max_per_class - n_val, n_val

    def cap_note(self) -> str:
        train_cap, val_cap = self.caps()
        return (
            f"capped at {self.max_per_class} images per class "
            f"(at most {train_cap} train + {val_cap} val, seed {self.seed})"
        )

    def rng(self, *salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *salt])


def _check_options(val_fraction: float, max_per_class: int | None, seed: int) -> None:
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"The seed must be a whole number of 0 or more (got {seed!r}).")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"The validation fraction must be between 0 and 1 (got {val_fraction}); 0.2 is a good default.")
    if max_per_class is not None and max_per_class < 2 * MIN_PER_CLASS:
        raise DataError(
            f"The cap on images per class must be at least {2 * MIN_PER_CLASS} (got {max_per_class}) "
            f"so each split keeps {MIN_PER_CLASS}."
        )


def _val_count(n: int, val_fraction: float) -> int:
    """How many of a class's n images go to validation; both splits keep MIN_PER_CLASS."""
    return min(max(MIN_PER_CLASS, round(n * val_fraction)), n - MIN_PER_CLASS)


def _split_indices(n: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_val = _val_count(n, val_fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _subset(n: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    if cap is None or n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def _counts(classes: list[str], labels: Iterable[int]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for label in labels:
        counts[classes[label]] += 1
    return counts


def _report_counts(classes: list[str], train: ImageDataset, val: ImageDataset) -> dict[str, dict[str, int]]:
    return {"train": _counts(classes, train.labels), "val": _counts(classes, val.labels)}


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# --- shapes: synthetic, offline ---------------------------------------------------------


def _load_shapes(opts: _Options, per_class: int, size: int) -> LoadedData:
    if per_class < 2 * MIN_PER_CLASS:
        raise DataError(f"Shapes needs at least {2 * MIN_PER_CLASS} images per class (got {per_class}).")
    if size < 16:
        raise DataError(f"Shapes images must be at least 16 pixels wide (got {size}).")
    capped = opts.max_per_class is not None and opts.max_per_class < per_class
    if capped:
        per_class = opts.max_per_class
    notes = [f"generated {per_class} images per class at {size}x{size} pixels (seed {opts.seed})"]
    if capped:
        notes.append(f"capped at {per_class} images per class")
    images, labels = generate_shapes(per_class, size, opts.seed)
    classes = list(SHAPE_CLASSES)
    train_idx, val_idx = [], []
    for label in range(len(classes)):
        members = np.flatnonzero(labels == label)
        tr, va = _split_indices(len(members), opts.val_fraction, opts.rng(1, label))
        train_idx.extend(members[tr])
        val_idx.extend(members[va])
    notes.append(f"split {opts.val_fraction:.0%} of each class for validation (seed {opts.seed})")
    train = ImageDataset(classes, labels[train_idx].tolist(), array=images[train_idx])
    val = ImageDataset(classes, labels[val_idx].tolist(), array=images[val_idx])
    report = DataReport(f"shapes (seed {opts.seed})", classes, _report_counts(classes, train, val), notes=notes)
    return LoadedData("shapes", classes, train, val, report)


def generate_shapes(per_class: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw `per_class` images of each SHAPE_CLASSES entry: uint8 (N, size, size, 3), labels (N,).

    Foreground and background colours, position, scale and rotation are random and a few
    distractor lines and blobs plus pixel noise are added, so neither colour nor location
    gives the class away: a linear model on raw pixels cannot solve it, a small CNN can.
    """
    rng = np.random.default_rng(seed)
    n = per_class * len(SHAPE_CLASSES)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(len(SHAPE_CLASSES)), per_class)
    for i, label in enumerate(labels):
        images[i] = _draw_one(SHAPE_CLASSES[label], size, rng)
    return images, labels


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _contrasting_colours(rng: np.random.Generator) -> tuple[tuple, tuple]:
    while True:  # resample until the shape is clearly visible on its background
        fg, bg = _colour(rng), _colour(rng)
        if sum(abs(a - b) for a, b in zip(fg, bg)) >= 180:
            return fg, bg


def _rotate(points: np.ndarray, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    c, s = np.cos(angle), np.sin(angle)
    x = points[:, 0] * c - points[:, 1] * s + cx
    y = points[:, 0] * s + points[:, 1] * c + cy
    return list(zip(x.tolist(), y.tolist()))


def _star(r: float) -> np.ndarray:
    angles = np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(r: float) -> np.ndarray:
    w = 0.32 * r
    return np.array(
        [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    )


def _regular(r: float, sides: int) -> np.ndarray:
    angles = np.arange(sides) * 2 * np.pi / sides
    return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)


def _stripes(
    draw: ImageDraw.ImageDraw, r: float, angle: float, cx: float, cy: float, fg: tuple, rng: np.random.Generator
) -> None:
    period = float(rng.uniform(0.22, 0.4) * r)
    y = -r + float(rng.uniform(0, period))
    while y < r:  # horizontal bars in a 2r x 2r patch, then rotated as a whole
        bar = np.array([(-r, y), (r, y), (r, min(y + period / 2, r)), (-r, min(y + period / 2, r))])
        draw.polygon(_rotate(bar, angle, cx, cy), fill=fg)
        y += period


def _draw_one(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    fg, bg = _contrasting_colours(rng)
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 3))):  # small blobs behind the shape
        br = float(rng.uniform(0.03, 0.07) * size)
        bx, by = rng.uniform(0, size, 2)
        draw.ellipse((bx - br, by - br, bx + br, by + br), fill=_colour(rng))
    r = float(rng.uniform(0.18, 0.34) * size)
    cx, cy = (float(v) for v in rng.uniform(r, size - r, 2))
    angle = float(rng.uniform(0, 2 * np.pi))
    box = (cx - r, cy - r, cx + r, cy + r)
    if name == "circle":
        draw.ellipse(box, fill=fg)
    elif name == "ring":
        draw.ellipse(box, outline=fg, width=max(2, round(0.28 * r)))
    elif name == "square":
        draw.polygon(_rotate(_regular(r, 4), angle, cx, cy), fill=fg)
    elif name == "triangle":
        draw.polygon(_rotate(_regular(r, 3), angle, cx, cy), fill=fg)
    elif name == "cross":
        draw.polygon(_rotate(_cross(r), angle, cx, cy), fill=fg)
    elif name == "star":
        draw.polygon(_rotate(_star(r), angle, cx, cy), fill=fg)
    else:  # stripes: a small tilt keeps them horizontal/vertical but not pixel-aligned
        tilt = float(rng.uniform(-0.25, 0.25)) + (np.pi / 2 if name == "vertical-stripes" else 0.0)
        _stripes(draw, r, tilt, cx, cy, fg, rng)
    for _ in range(int(rng.integers(0, 3))):  # distractor lines across everything
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        draw.line((x0, y0, x1, y1), fill=_colour(rng), width=1)
    pixels = np.asarray(img, dtype=np.int16)
    noise = rng.integers(-12, 13, pixels.shape, dtype=np.int16)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


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


def _load_hf(name: str, work_dir: Path, opts: _Options) -> LoadedData:
    """Export a Hugging Face image-classification dataset to class folders, then load those.

    Not exercised by the tests here (the `datasets` package is optional and needs network).
    """
    if not name:
        raise DataError("Give a dataset name after 'hf:', e.g. 'hf:beans'.")
    if importlib.util.find_spec("datasets") is None:
        raise DataError(
            "Hugging Face datasets need the optional 'datasets' package: run `pip install datasets` and try again."
        )
    import datasets

    try:
        dd = datasets.load_dataset(name, cache_dir=str(work_dir / "hf-cache"))
    except Exception as exc:  # network, unknown name, gated dataset, ...
        raise DataError(
            f"Could not load Hugging Face dataset '{name}' ({exc}); check the name and the network."
        ) from exc
    features = next(iter(dd.values())).features
    image_col = next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    label_col = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    if image_col is None or label_col is None:
        raise DataError(
            f"Hugging Face dataset '{name}' has no image column with class labels; "
            "pick an image-classification dataset."
        )
    names = features[label_col].names
    out = Path(tempfile.mkdtemp(prefix="hf-", dir=work_dir))
    splits = {"train": "train" if "train" in dd else next(iter(dd))}
    val_split = next((s for s in ("validation", "valid", "val", "test") if s in dd and s != splits["train"]), None)
    if val_split:
        splits["val"] = val_split
    for ours, theirs in splits.items():
        for i, row in enumerate(dd[theirs]):
            folder = out / ours / _safe_name(names[row[label_col]])
            folder.mkdir(parents=True, exist_ok=True)
            _to_rgb(row[image_col]).save(folder / f"{i:06d}.png")
    return _load_folder(out, f"hf:{name}", opts, skipped=[], notes=[])


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", str(name)).strip("._") or "class"


# --- zip uploads ------------------------------------------------------------------------


def _load_zip(zip_path: Path, work_dir: Path, opts: _Options, max_total_bytes: int) -> LoadedData:
    uploads = work_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="upload-", dir=uploads))
    try:
        skipped, ignored = _extract_zip(zip_path, dest, max_total_bytes)
        notes = [f"ignored {ignored} system or hidden file(s) (__MACOSX, .DS_Store, Thumbs.db, ...)"] if ignored else []
        return _load_folder(dest, zip_path.name, opts, skipped=skipped, notes=notes)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # leave nothing half-extracted behind
        raise


def _extract_zip(zip_path: Path, dest: Path, max_total_bytes: int) -> tuple[list[tuple[str, str]], int]:
    """Stream the image members of a zip into `dest`; return (skipped members, ignored count)."""
    name = zip_path.name
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"'{name}' is not a valid zip file: create it again (e.g. 'Compress' or `zip -r`) and re-upload."
        ) from exc
    except OSError as exc:
        raise DataError(f"Could not read '{name}' ({exc.strerror or exc}); check the file and try again.") from exc
    with zf:
        members = [info for info in _zip_members(zf, name) if not info.is_dir()]
        if not members:
            raise DataError(f"'{name}' is empty: put one folder of images per class in the zip.")
        _refuse_bombs(members, name, max_total_bytes)
        skipped: list[tuple[str, str]] = []
        ignored = 0
        budget = max_total_bytes
        for info in members:
            parts = _member_parts(info.filename)
            if parts is not None and _is_ignored(parts):
                ignored += 1
                continue
            reason = _unsafe_reason(info, parts)
            if reason is None and Path(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
                reason = "not an image"
            if reason is None:
                reason, written = _extract_member(zf, info, dest.joinpath(*parts), dest, budget, name)
                budget -= written
            if reason is not None:
                skipped.append((info.filename, reason))
    return skipped, ignored


def _zip_members(zf: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    if len(members) > MAX_MEMBERS:
        raise DataError(
            f"'{name}' has {len(members):,} entries, more than the limit of {MAX_MEMBERS:,}: upload fewer files."
        )
    return members


def _refuse_bombs(members: list[zipfile.ZipInfo], name: str, max_total_bytes: int) -> None:
    """Refuse zips whose headers already announce too much data (checked again while streaming)."""
    total = sum(info.file_size for info in members)
    if total > max_total_bytes:
        raise DataError(
            f"'{name}' expands to {total / 1e6:,.0f} MB, more than the limit of "
            f"{max_total_bytes / 1e6:,.0f} MB: upload a smaller zip."
        )
    for info in members:
        if _too_compressed(info.file_size, info.compress_size):
            ratio = info.file_size / max(info.compress_size, 1)
            raise DataError(
                f"'{name}' looks like a zip bomb ('{info.filename}' expands {ratio:,.0f} times): it was refused."
            )


def _too_compressed(size: int, compressed: int) -> bool:
    return size > RATIO_MIN_BYTES and size > MAX_RATIO * max(compressed, 1)


def _member_parts(filename: str) -> list[str] | None:
    """Path components of a zip member, or None if the name is unsafe to join to a folder."""
    if "\\" in filename or "\x00" in filename or filename.startswith("/") or re.match(r"^[A-Za-z]:", filename):
        return None
    parts = [p for p in filename.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


def _unsafe_reason(info: zipfile.ZipInfo, parts: list[str] | None) -> str | None:
    if parts is None:
        return "unsafe path (absolute or outside the upload)"
    mode = info.external_attr >> 16  # Unix mode bits; the file type is often left out (0)
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # devices, fifos, ...
        return "not a regular file"
    if info.flag_bits & 0x1:
        return "encrypted"
    return None


def _extract_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, dest: Path, budget: int, name: str
) -> tuple[str | None, int]:
    """Copy one member with a byte cap; return (skip reason or None, bytes written)."""
    if not target.resolve().is_relative_to(dest.resolve()):  # belt and braces after _member_parts
        return "unsafe path (absolute or outside the upload)", 0
    written = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "xb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                # Headers can lie: count what actually comes out of the decompressor.
                if written > budget or written > info.file_size or _too_compressed(written, info.compress_size):
                    raise DataError(
                        f"'{name}' looks like a zip bomb ('{info.filename}' expands beyond its declared size "
                        "or the limits): it was refused."
                    )
                out.write(chunk)
    except DataError:
        raise
    except FileExistsError:
        return "duplicate entry in the zip", 0
    except NotImplementedError:
        target.unlink(missing_ok=True)
        return "unsupported compression method", 0
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error):  # CRC error, truncated zip, ...
        target.unlink(missing_ok=True)
        return "corrupt entry in the zip", 0
    except OSError:  # e.g. a name too long for the disk, or a file where a folder should be
        target.unlink(missing_ok=True)
        return "could not be extracted", 0
    return None, written


# --- folders of class folders -----------------------------------------------------------


def _is_ignored(parts: Iterable[str]) -> bool:
    return any(p in IGNORED_NAMES or p.startswith(".") for p in parts)


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


def _load_folder(
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
    by_class, ignored = {}, 0
    for d in dirs:
        images, others, n_ignored = _walk(d)
        by_class[d.name] = images
        skipped.extend((rel(o), "not an image") for o in others)
        ignored += n_ignored
    if ignored:
        notes.append(f"ignored {ignored} hidden or system file(s) in '{split_dir.name}/'")
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


def _to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy that respects EXIF rotation, transparency (on white) and 16-bit greys."""
    img = ImageOps.exif_transpose(img)  # always a decoded copy, so the file may be closed
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if arr.max(initial=0) > 255:
            arr = arr * (255.0 / 65535.0)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
