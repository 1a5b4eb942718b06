"""The images behind a confusion matrix: which validation images a run put in a cell, and where runs disagree.

After a comparison, `prepare(results, dataset)` takes each finished run's prediction for every
validation image (the same split, in the same order, as its confusion matrix was counted on)
and keeps the few images a gallery can show. Then:

- `cell(data, run, true, predicted)`: the validation images that run put in that cell, in
  validation order (their count is the matrix's number);
- `disagreements(data)`: the images on which the runs' predicted classes differ;
- `items(data, indices, runs_root=...)`: those images with every run's predicted class,
  confidence and a Grad-CAM heat map (`inference.grad_cam`) of the run's saved model.

Where the predictions come from: a run's `RunResult.val_pred`/`val_conf` when training recorded
them (exact, free); otherwise the run's saved model is reloaded and run over the validation split
with the training's own input pipeline (uint8 images decoded as training decoded them,
`inputs.model_inputs`, eval mode), and the counts are checked against the run's confusion
matrix: a mismatch is said in `notes`, never hidden.

Cost is capped: at most `per_cell` images are kept per cell and for the disagreements, at most
`MAX_KEEP_BYTES` of them, and heat maps are computed only while their multiply-adds stay under
`HEAT_MAP_MACS` (the rest are shown without one, said in the note). `save`/`load` keep a
gallery in one `.npz` (no pickle) so a later request, another process or a refreshed page can
show it; runs are named there by folder name only and found again under the folder given to
`load`, so a gallery never reaches beyond its owner's folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import CNNCompareError
from .fileio import atomic_path
from .serving import kept

__all__ = [
    "RunPredictions",
    "GalleryData",
    "GalleryItem",
    "prepare",
    "cell",
    "disagreements",
    "items",
    "save",
    "load",
    "MAX_ITEMS",
]

MAX_ITEMS = 12  # images shown for one selection
MAX_KEEP_BYTES = 48 * 2**20  # decoded images a gallery keeps (memory and disk)
HEAT_MAP_MACS = 40e9  # multiply-adds of the heat maps of one request (forward + backward counted 3x): seconds on a CPU
DISPLAY_PX = 144  # each tile's side in the gallery


@dataclass
class RunPredictions:
    """One run's answer for every validation image."""

    label: str
    model: str
    run_dir: str | None  # the run's folder (None: nothing saved, no heat maps)
    size: int
    interpolation: str
    pred: np.ndarray  # (N,) predicted class index
    conf: np.ndarray  # (N,) probability of the predicted class
    macs: int | None = None


@dataclass
class GalleryData:
    """The validation labels, each run's predictions, and the images kept for display (by validation index)."""

    classes: list[str]
    true: np.ndarray  # (N,)
    runs: list[RunPredictions]
    kept: np.ndarray  # (K,) validation indices whose images are kept, sorted
    images: dict[tuple[int, str], np.ndarray]  # (input size, interpolation) -> uint8 (K, 3, H, W) as training held them
    notes: list[str] = field(default_factory=list)

    def run(self, label: str) -> RunPredictions:
        for r in self.runs:
            if r.label == label:
                return r
        raise CNNCompareError(f"No run called '{str(label)[:80]}' in this comparison: pick one of the list.")

    def class_index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            raise CNNCompareError(
                f"No class called '{str(name)[:80]}' in this dataset: pick one of the list."
            ) from None


@dataclass
class GalleryItem:
    """One validation image with every run's answer: a composite (the image, then one heat map per run)."""

    index: int  # position in the validation split
    true: str
    answers: list[tuple[str, str, float]]  # (run label, predicted class, confidence 0..1), in run order
    image: Image.Image
    heat_maps: bool  # whether the tiles after the first are heat maps
    caption: str  # short: what fits under a tile
    text: str  # everything, in words


# --------------------------------------------------------------------------- preparing


def _split_tensors(ds, size: int, interpolation: str) -> torch.Tensor:
    """The split's uint8 images exactly as training holds them (`data.placement.cached_tensors`, uncached):
    in-memory arrays at their stored size, image files decoded and resized to `size`."""
    from .data import base

    if getattr(ds, "array", None) is not None:
        return torch.from_numpy(ds.array).permute(0, 3, 1, 2)
    x, _ = base.to_tensors(ds, size, interpolation)
    return x


def _inputs(model, x_uint8: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    from . import models, runtime
    from .inputs import Normalizer, model_inputs

    cfg = models.data_config(model, size)
    norm = Normalizer(cfg["mean"], cfg["std"])
    fmt = runtime.precision_for("cpu").memory_format
    return model_inputs(x_uint8, norm, size, interpolation).contiguous(memory_format=fmt)


@torch.no_grad()
def _predict_split(run_dir: str, x: torch.Tensor, size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    from . import runs

    model = runs.load_run(run_dir).load_model("cpu").eval()
    preds, confs = [], []
    for i in range(0, len(x), 128):
        probs = model(_inputs(model, x[i : i + 128], size, interpolation)).float().softmax(1)
        c, p = probs.max(1)
        preds.append(p)
        confs.append(c)
    return torch.cat(preds).numpy(), torch.cat(confs).numpy()


def _confusion(true: np.ndarray, pred: np.ndarray, n: int) -> list[list[int]]:
    return np.bincount(true * n + pred, minlength=n * n).reshape(n, n).tolist()


@kept(256)
def _input_of(name: str, size: int | None) -> tuple[int, str]:
    """(input size, interpolation) a model's runs were fed with: built once on the meta device per (model, size),
    not once per visitor who opens the gallery of a shared run."""
    from . import models

    arch = models.build(name, device="meta")
    size = size or arch.cnncompare.info.default_size
    return size, models.data_config(arch, size).get("interpolation", "bilinear")


def prepare(results, dataset, *, per_cell: int = MAX_ITEMS, max_bytes: int = MAX_KEEP_BYTES) -> GalleryData:
    """Each finished run's prediction for every validation image, and the images worth keeping.

    Args:
        results: the comparison's `training.RunResult`s (failed runs and runs without an epoch are left out).
        dataset: the `LoadedData` the comparison trained on (its `val` split is the matrices' split).
        per_cell: images kept per matrix cell of each run, and for the disagreements.
        max_bytes: at most this many bytes of decoded images are kept (fewer per cell when needed).

    Raises:
        CNNCompareError: no run finished an epoch, or the dataset is not the one the runs were trained on.
    """
    classes = list(dataset.classes)
    true = np.asarray(dataset.val.labels, dtype=np.int64)
    n, k = len(true), len(classes)
    done = [r for r in results if not r.error and r.final_epoch and r.confusion]
    if not done:
        raise CNNCompareError("No run of this comparison finished an epoch: there are no predictions to show.")
    notes: list[str] = []
    tensors: dict[tuple[int, str], torch.Tensor] = {}
    out: list[RunPredictions] = []
    for r in done:
        if list(r.classes) != classes or int(np.sum(r.confusion)) != n:
            raise CNNCompareError(
                f"{r.label or r.name} was not trained on this dataset's validation split: load the same dataset."
            )
        size, interp = _input_of(r.name, int(r.config.get("size") or 0) or None)
        pred, conf = getattr(r, "val_pred", None), getattr(r, "val_conf", None)
        if pred is not None and len(pred) == n:
            pred = np.asarray(pred, dtype=np.int64)
            conf = np.asarray(conf if conf is not None and len(conf) == n else np.full(n, np.nan), dtype=np.float32)
        elif r.run_dir and (Path(r.run_dir) / "weights.safetensors").is_file():
            key = (size, interp)
            if key not in tensors:
                tensors[key] = _split_tensors(dataset.val, size, interp)
            pred, conf = _predict_split(r.run_dir, tensors[key], size, interp)
            if _confusion(true, pred, k) != [list(map(int, row)) for row in r.confusion]:
                wrong = int(np.abs(np.asarray(_confusion(true, pred, k)) - np.asarray(r.confusion)).sum() // 2)
                notes.append(
                    f"{r.label}: predicting again from the saved weights moved {wrong} image(s) to other cells "
                    "than the matrix shows (non-deterministic arithmetic); the gallery shows the new predictions."
                )
        else:
            notes.append(f"{r.label}: no saved weights and no recorded predictions, so it is left out here.")
            continue
        out.append(
            RunPredictions(r.label or r.name, r.name, r.run_dir, size, interp, pred, conf.astype(np.float32), r.macs)
        )
    if not out:
        raise CNNCompareError("No run of this comparison kept its weights or predictions: nothing to show.")
    sizes = sorted({(p.size, p.interpolation) for p in out})
    per_image = sum(3 * s * s for s, _ in sizes)
    kept = _keep(true, out, k, per_cell)
    while len(kept) * per_image > max_bytes and per_cell > 1:
        per_cell = max(1, per_cell // 2)
        kept = _keep(true, out, k, per_cell)
    if len(kept) * per_image > max_bytes:
        kept = kept[: max(1, max_bytes // per_image)]
    if per_cell < MAX_ITEMS:
        notes.append(f"the images are large, so at most {per_cell} per cell are kept for the gallery")
    images = {}
    for s, interp in sizes:
        x = tensors.get((s, interp))
        if x is None and getattr(dataset.val, "array", None) is None:  # image files: decode only those kept
            from .data import base

            x = torch.from_numpy(np.stack([base.decode_image(dataset.val, int(i), s, interp) for i in kept]))
        else:
            x = x if x is not None else _split_tensors(dataset.val, s, interp)
            x = x[torch.as_tensor(kept, dtype=torch.long)]
        images[(s, interp)] = x.contiguous().numpy()
    return GalleryData(classes, true, out, kept, images, notes)


def _keep(true: np.ndarray, runs_: list[RunPredictions], k: int, per_cell: int) -> np.ndarray:
    keep: set[int] = set()
    for r in runs_:
        for t in range(k):
            for p in range(k):
                keep.update(np.flatnonzero((true == t) & (r.pred == p))[:per_cell].tolist())
    keep.update(_disagree(runs_)[:per_cell].tolist())
    return np.asarray(sorted(keep), dtype=np.int64)


def _disagree(runs_: list[RunPredictions]) -> np.ndarray:
    if len(runs_) < 2:
        return np.asarray([], dtype=np.int64)
    preds = np.stack([r.pred for r in runs_])
    return np.flatnonzero((preds != preds[0]).any(0))


# --------------------------------------------------------------------------- selecting


def cell(data: GalleryData, run: str, true: str, predicted: str) -> list[int]:
    """Every validation index whose true class is `true` and which `run` predicted as `predicted`, in order."""
    r = data.run(run)
    t, p = data.class_index(true), data.class_index(predicted)
    return np.flatnonzero((data.true == t) & (r.pred == p)).tolist()


def disagreements(data: GalleryData, true: str | None = None) -> list[int]:
    """Validation indices where the runs' predicted classes differ (optionally only of class `true`), in order."""
    idx = _disagree(data.runs)
    if true:
        idx = idx[data.true[idx] == data.class_index(true)]
    return idx.tolist()


# --------------------------------------------------------------------------- showing


def _short(text: str, n: int = 14) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def items(
    data: GalleryData,
    indices: list[int],
    *,
    runs_root: str | Path | None = None,
    limit: int = MAX_ITEMS,
    heat_maps: bool = True,
    macs_budget: float = HEAT_MAP_MACS,
) -> tuple[list[GalleryItem], list[str]]:
    """The first `limit` of `indices` (validation indices) as gallery items, and notes on what was left out.

    Each item's image is the validation image followed by one Grad-CAM heat map per run (for the class
    that run predicted), at DISPLAY_PX per tile. Heat maps need the run's saved weights (under
    `runs_root` when the gallery was loaded from disk) and stop once `macs_budget` is spent.
    """
    from . import inference, runs

    notes: list[str] = []
    pos = {int(i): j for j, i in enumerate(data.kept.tolist())}
    shown = [int(i) for i in indices if int(i) in pos]
    if len(shown) < len(indices) and len(shown) < limit:
        notes.append(f"{len(indices) - len(shown)} of these images were not kept for the gallery (memory limit)")
    shown = shown[:limit]
    loaded: dict[str, object] = {}
    spent = 0.0
    stopped_at: int | None = None
    out = []
    for n_item, i in enumerate(shown):
        j = pos[i]
        first = data.runs[0]
        base = data.images[(first.size, first.interpolation)][j]
        tiles = [_tile(base)]
        answers = []
        n_maps = 0
        with_maps = heat_maps and stopped_at is None
        for r in data.runs:
            label, conf = data.classes[int(r.pred[i])], float(r.conf[i])
            answers.append((r.label, label, conf))
            if not with_maps:
                continue
            cost = 3.0 * (r.macs or 0)
            if spent + cost > macs_budget and n_item > 0:
                stopped_at, with_maps = n_item, False
                continue
            pixels = data.images[(r.size, r.interpolation)][j]
            model = _model(loaded, r, runs_root, runs, notes)
            if model is None:
                tiles.append(_tile(pixels))
                continue
            x = _inputs(model, torch.from_numpy(pixels[None]), r.size, r.interpolation)
            try:
                cam = inference.grad_cam(model, x, int(r.pred[i]))
            except inference.NoSpatialMap:
                tiles.append(_tile(pixels))
                continue
            spent += cost
            n_maps += 1
            img = Image.fromarray(pixels.transpose(1, 2, 0)).resize(cam.shape[::-1], Image.BILINEAR)
            tiles.append(_tile(np.asarray(inference.overlay(img, cam, fit="squash")).transpose(2, 0, 1)))
        if len(tiles) < 1 + len(data.runs):  # heat maps stopped part-way: no half-filled rows
            tiles, n_maps = tiles[:1], 0
        true = data.classes[int(data.true[i])]
        out.append(
            GalleryItem(
                index=i,
                true=true,
                answers=answers,
                image=_strip(tiles),
                heat_maps=n_maps > 0,
                caption=_caption(i, true, answers),
                text=f"Validation image #{i}, true class {true}: "
                + "; ".join(f"{lab} predicts {p} ({c:.0%})" for lab, p, c in answers)
                + ".",
            )
        )
    if stopped_at is not None:
        notes.append(f"heat maps for the first {stopped_at} image(s) only, to keep the wait short")
    return out, notes


def _caption(i: int, true: str, answers: list[tuple[str, str, float]]) -> str:
    marks = " ".join(("✓" if p == true else "✗") + _short(p, 10) for _, p, _ in answers)
    return f"#{i} {_short(true, 10)}: {marks}"


def _model(cache: dict, r: RunPredictions, runs_root, runs_mod, notes: list[str]):
    if r.label in cache:
        return cache[r.label]
    model = None
    folder = _run_folder(r, runs_root)
    if folder is not None:
        try:
            model = runs_mod.load_run(folder).load_model("cpu").eval()
        except CNNCompareError:
            model = None
    if model is None:
        notes.append(f"{r.label}: its saved run is gone (deleted or expired), so it has no heat maps")
    cache[r.label] = model
    return model


def _run_folder(r: RunPredictions, runs_root) -> Path | None:
    if not r.run_dir:
        return None
    path = Path(r.run_dir)
    if runs_root is not None:  # loaded from disk: only a folder name, looked up in its owner's folder
        if path.name != r.run_dir or path.name in ("", ".", ".."):
            return None
        path = Path(runs_root) / path.name
    return path if (path / "weights.safetensors").is_file() else None


def _tile(chw: np.ndarray) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)))
    return img.resize((DISPLAY_PX, DISPLAY_PX), Image.NEAREST if img.width < DISPLAY_PX // 2 else Image.BILINEAR)


def _strip(tiles: list[Image.Image], gap: int = 4) -> Image.Image:
    out = Image.new("RGB", (len(tiles) * DISPLAY_PX + (len(tiles) - 1) * gap, DISPLAY_PX), (255, 255, 255))
    for n, t in enumerate(tiles):
        out.paste(t, (n * (DISPLAY_PX + gap), 0))
    return out


# --------------------------------------------------------------------------- on disk


def save(data: GalleryData, path: str | Path) -> Path:
    """Write a gallery to one `.npz` (arrays and a JSON header; no pickle). Runs keep their folder name only."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = dict(
        classes=data.classes,
        notes=data.notes,
        runs=[
            dict(
                label=r.label,
                model=r.model,
                run_dir=Path(r.run_dir).name if r.run_dir else None,
                size=r.size,
                interpolation=r.interpolation,
                macs=r.macs,
            )
            for r in data.runs
        ],
        images=[[s, interp] for s, interp in sorted(data.images)],
    )
    arrays = dict(header=np.asarray(json.dumps(header)), true=data.true, kept=data.kept)
    for n, r in enumerate(data.runs):
        arrays[f"pred_{n}"], arrays[f"conf_{n}"] = r.pred, r.conf
    for n, x in enumerate(data.images[key] for key in sorted(data.images)):
        arrays[f"images_{n}"] = x
    with atomic_path(path, suffix=".npz") as tmp:  # numpy adds .npz to a name without it
        np.savez(tmp, **arrays)
    return path


def load(path: str | Path) -> GalleryData:
    """Read a gallery written by `save` (pass the owner's folder as `items(..., runs_root=)` for heat maps).

    Raises:
        CNNCompareError: no gallery there, or an unreadable one.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            runs_ = [
                RunPredictions(
                    h["label"],
                    h["model"],
                    h["run_dir"],
                    int(h["size"]),
                    h["interpolation"],
                    z[f"pred_{n}"],
                    z[f"conf_{n}"],
                    h.get("macs"),
                )
                for n, h in enumerate(header["runs"])
            ]
            images = {(int(s), str(i)): z[f"images_{n}"] for n, (s, i) in enumerate(header["images"])}
            return GalleryData(header["classes"], z["true"], runs_, z["kept"], images, header.get("notes", []))
    except (OSError, ValueError, KeyError) as err:
        raise CNNCompareError("No comparison to show yet: run one on the Fine-tune tab first.") from err
