"""Shared types and helpers of the data package: what every reader returns and how it splits.

Holds the dataset types (`ImageDataset`, `LoadedData`, `DataReport`, `DataError`), the
conventions every reader shares (image extensions, hidden names, the per-class minimum),
the seeded splitting and capping helpers, image decoding to RGB, and `to_tensors`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cnncompare.errors import DataError
from cnncompare.settings import MIN_PER_CLASS

__all__ = [
    "IMAGE_EXTENSIONS",
    "IGNORED_NAMES",
    "MIN_PER_CLASS",
    "DataError",
    "DataReport",
    "ImageDataset",
    "LoadedData",
    "to_tensors",
    "decode_image",
    "decoded_bytes",
    "check_dataset_size",
]

# --- limits and conventions -------------------------------------------------------------

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})

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

    def summary(self, max_paths: int = 5, *, markdown: bool = False) -> str:
        """The report: counts per class and split, skipped files by reason, notes. Plain text for the CLI, or
        (`markdown`) a table for the app: the same content, names as the user wrote them (never server paths)."""
        by_reason: dict[str, list[str]] = defaultdict(list)
        for path, reason in self.skipped:
            by_reason[reason].append(path)
        skipped = []
        for reason, paths in by_reason.items():
            shown = ", ".join(f"`{p}`" if markdown else p for p in paths[:max_paths])
            more = f" and {len(paths) - max_paths} more" if len(paths) > max_paths else ""
            skipped.append(f"{reason} ({len(paths)}): {shown}{more}")
        splits = list(self.counts)
        if not markdown:
            lines = [f"Source: {self.source}", f"{len(self.classes)} classes:"]
            for name in self.classes:
                per_split = ", ".join(f"{split} {counts.get(name, 0)}" for split, counts in self.counts.items())
                lines.append(f"  {name}: {per_split}")
            totals = ", ".join(f"{split} {sum(c.values())}" for split, c in self.counts.items())
            lines.append(f"Total: {totals}")
            if self.skipped:
                lines.append(f"Skipped {len(self.skipped)} file(s):")
                lines += [f"  {line}" for line in skipped]
            lines.extend(f"Note: {note}" for note in self.notes)
            return "\n".join(lines)
        cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
        lines = [
            f"**{cell(self.source)}**: {len(self.classes)} classes",
            "",
            "| class | " + " | ".join(splits) + " |",
            "|---|" + "---:|" * len(splits),
        ]
        for name in self.classes:
            lines.append(f"| {cell(name)} | " + " | ".join(str(self.counts[s].get(name, 0)) for s in splits) + " |")
        lines.append("| **total** | " + " | ".join(f"**{sum(self.counts[s].values())}**" for s in splits) + " |")
        if self.skipped:
            lines += ["", f"**Skipped {len(self.skipped)} file(s)** (not used):"] + [f"- {line}" for line in skipped]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The report as JSON-ready plain data (skipped entries as lists)."""
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
        """The image at `index` as RGB; DataError if its file can no longer be read."""
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
    """One loaded dataset: its name, class names, train and val splits, and the report."""

    name: str
    classes: list[str]
    train: ImageDataset
    val: ImageDataset
    report: DataReport


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
        out[index] = decode_image(ds, index, size, mode)

    # PIL decodes and resizes without the GIL; numpy (not torch) copies inside the threads
    # so that torch's own thread pool is not oversubscribed.
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        list(pool.map(decode, range(len(ds))))
    return torch.from_numpy(out), labels


def decode_image(ds: ImageDataset, index: int, size: int, mode: InterpolationMode | str) -> np.ndarray:
    """One image decoded and resized to size x size: uint8 (3, size, size), the same bytes on every path."""
    if isinstance(mode, str):
        mode = _INTERPOLATIONS[mode]
    img = TF.resize(ds.image(index), [size, size], interpolation=mode, antialias=True)  # PIL in, PIL out
    return np.asarray(img).transpose(2, 0, 1)


def check_dataset_size(dataset: LoadedData, size: int, max_mpix: float) -> None:
    """Refuse a dataset whose images x pixels at the training size pass `max_mpix` megapixels (a server's limit).

    Raises:
        DataError: one sentence saying what to lower.
    """
    n = len(dataset.train) + len(dataset.val)
    mpix = n * size * size / 1e6
    if mpix > max_mpix:
        most = int(max_mpix * 1e6 / (size * size))
        raise DataError(
            f"{n:,} images at {size} px are {mpix:,.0f} megapixels, more than this server's limit of "
            f"{max_mpix:,.0f}: lower the input size or the images per class (at most {most:,} images "
            f"at {size} px)."
        )


def decoded_bytes(ds: ImageDataset, size: int) -> int:
    """Bytes of a split once decoded for training: at `size` for image files, as stored for in-memory arrays."""
    if ds.array is not None:
        return ds.array.nbytes
    return len(ds) * 3 * size * size


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


# --- shared file rules and decoding -----------------------------------------------------


def _is_ignored(parts: Iterable[str]) -> bool:
    return any(p in IGNORED_NAMES or p.startswith(".") for p in parts)


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
