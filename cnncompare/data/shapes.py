"""The generated "shapes" dataset: seeded, offline drawings of shapes and stripe patterns."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .base import (
    MIN_PER_CLASS,
    DataError,
    DataReport,
    ImageDataset,
    LoadedData,
    _Options,
    _report_counts,
    _split_indices,
)

__all__ = ["SHAPE_CLASSES", "generate_shapes", "load_shapes"]

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


def load_shapes(opts: _Options, per_class: int, size: int) -> LoadedData:
    """Generate `per_class` shapes per class at size x size and split each class by `opts`."""
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
