"""Weights files read safely and checked against a model's layout, in one sentence when they do not fit.

`read_weights` opens `.safetensors` directly and `.pth`/`.bin` through `torch.load(weights_only=True)`
(a pickle that holds code is refused, never run). `check_weights` compares the tensors with the
`Layout` the model expects (the caller builds that layout on the meta device: this module never
builds a model), maps torchvision's and other known layouts to timm's with timm's own filters,
and names the first tensor that does not fit and the catalog model the file looks made for.
"""

from __future__ import annotations

import json
import pickle
import pickletools
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsUnavailableError, first_line
from . import catalog
from .hub import weights_source_hint

__all__ = ["Layout", "read_weights", "check_weights", "is_optional", "unpacked_bytes", "file_bound"]

_WRAPPERS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema", "module")
OPTIONAL = ("num_batches_tracked",)  # BatchNorm's step counter: older files lack it, none of it is a weight
AUX = ("aux1.", "aux2.", "AuxLogits.")  # GoogLeNet's and Inception v3's auxiliary classifiers (not built here)
_FILTERS = ("checkpoint_filter_fn", "_filter_fn", "_filter_torchvision_pretrained")  # timm's own remappers


@dataclass(frozen=True)
class Layout:
    """What a model's weights file holds: every tensor's shape (the 1000-class ImageNet model), the classifier's
    module name, and the module that defines the model (whose filters remap other layouts to its own)."""

    name: str
    shapes: Mapping[str, tuple[int, ...]]
    classifier: str
    module: str
    meta_model: Callable[[], nn.Module]  # the model on the meta device, for the filters that need it

    @property
    def nbytes(self) -> int:
        """Bytes of every tensor at 4 bytes per value (fp32, as weights files store them)."""
        total = 0
        for shape in self.shapes.values():
            n = 1
            for d in shape:
                n *= d
            total += 4 * n
        return total

    def signature(self) -> frozenset:
        """(key, shape) pairs of its weights, optional ones left out: what `_looks_like` compares."""
        return frozenset((k, s) for k, s in self.shapes.items() if not is_optional(k))


def tensor_bound(layout: Layout) -> int:
    """The most tensors a weights file for this model may hold: its own, twice over (auxiliary classifiers, a
    checkpoint's extras), and room for another catalog model's file (so that one is told which model it fits).
    1.35 million tiny tensors in an 80 MB file took 2 GB to read."""
    return 2 * len(layout.shapes) + 4096


def tensor_count(path: str | Path, most: int | None = None) -> int:
    """How many tensors a weights file holds, from its header alone: a `.safetensors` header's entries, the tensors
    a `.pth` archive's pickle rebuilds (each is a call in `data.pkl`: views of one storage count each); 0 when it
    cannot be told (an old-style `.pth`: the reader then says what is wrong). With `most`, a header or pickle too
    large to hold only that many is refused before it is parsed.

    Raises:
        WeightsUnavailableError: a header or pickle far larger than `most` tensors need.
    """
    path = Path(path)
    bound = None if most is None else 512 * most + 2**20  # bytes a header of `most` entries could take
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                pkl = next((i for i in zf.infolist() if i.filename.endswith("data.pkl")), None)
                if pkl is None:
                    return 0
                _refuse_header(path.name, pkl.file_size, bound)
                ops = pickletools.genops(zf.read(pkl))
                return sum(1 for op, _, _ in ops if op.name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"))
        if path.suffix.lower() != ".safetensors":
            return 0
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return 0
            n = int.from_bytes(head, "little")
            _refuse_header(path.name, n, bound if bound is not None else 64 * 2**20)
            header = json.loads(f.read(n))
        return sum(1 for k in header if k != "__metadata__") if isinstance(header, dict) else 0
    except (OSError, ValueError, zipfile.BadZipFile):
        return 0


def _refuse_header(name: str, size: int, bound: int | None) -> None:
    if bound is not None and size > bound:
        raise WeightsUnavailableError(
            f"{name} has a header of {size / 2**20:,.1f} MB, far more than any model's weights need: it holds "
            "something else besides them."
        )


def file_bound(layout: Layout) -> int:
    """The most a weights file for this model may unpack to: its own weights with room for the auxiliary
    classifiers some files carry (GoogLeNet's, Inception v3's) and a file's own overhead."""
    return int(1.25 * layout.nbytes) + 64 * 2**20


def is_optional(key: str) -> bool:
    """A tensor a file may lack or carry beyond the model: BatchNorm's step counter, the auxiliary classifiers."""
    return key.endswith(OPTIONAL) or key.startswith(AUX)


def unpacked_bytes(path: str | Path) -> int:
    """The bytes reading a weights file puts in memory, known before reading it: a `.pth` is a zip archive whose
    members may be compressed (a 1 MB file can hold a 1 GB tensor of zeros), so its members' uncompressed sizes
    are summed from the archive's directory; any other file holds its tensors as they are."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return sum(info.file_size for info in zf.infolist())
        return path.stat().st_size
    except (OSError, zipfile.BadZipFile):
        return path.stat().st_size if path.is_file() else 0


def read_weights(
    path: str | Path, max_bytes: int | None = None, max_tensors: int | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read safely: `.safetensors`, or a `.pth`/`.bin` through
    `torch.load(weights_only=True)` (a pickle that holds code is refused, never run).

    Common checkpoint wrappers (`{"state_dict": ...}`, `{"model": ...}`) and DataParallel's
    `module.` prefix are removed; entries that are not tensors (an epoch number) are dropped.
    `max_bytes`: refuse, before reading, a file that would unpack to more (`unpacked_bytes`); `max_tensors`: one
    that holds more tensors (`tensor_count`, from its header).

    Raises:
        WeightsUnavailableError: an unreadable file, a pickle with code, no tensors, one over `max_bytes` (one
        sentence, by file name).
    """
    path = Path(path)
    name = path.name
    if max_bytes is not None and (size := unpacked_bytes(path)) > max_bytes:
        raise WeightsUnavailableError(
            f"{name} unpacks to {size / 2**20:,.0f} MB, more than the model's own weights could take "
            f"({max_bytes / 2**20:,.0f} MB at most): it holds something else besides them."
        )
    if max_tensors is not None and (count := tensor_count(path, max_tensors)) > max_tensors:
        raise WeightsUnavailableError(
            f"{name} holds {count:,} tensors, more than the model's own weights could be ({max_tensors:,} at most): "
            "it holds something else besides them."
        )
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err).lower():
            raise WeightsUnavailableError(
                f"{name} holds Python objects besides weights, and for safety only plain tensors are loaded: save "
                "the weights alone, with torch.save(model.state_dict(), 'model.pth') or as .safetensors."
            ) from None
        raise WeightsUnavailableError(
            f"Could not read {name} as a weights file ({type(err).__name__}: {first_line(err)[:120]}): "
            "give a .safetensors file or a .pth file saved with torch.save(model.state_dict(), ...)."
        ) from None
    for _ in range(3):  # {"state_dict": {...}}, {"model": {"module": ...}}
        if isinstance(sd, dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            inner = next((sd[k] for k in _WRAPPERS if isinstance(sd.get(k), dict)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, dict):
        raise WeightsUnavailableError(
            f"{name} does not hold a state dict of weights: save it with torch.save(model.state_dict(), ...)."
        )
    sd = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):  # saved from nn.DataParallel / DDP
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if not sd:
        raise WeightsUnavailableError(f"{name} holds no weight tensors: give a model's state dict.")
    return sd


def _to_timm_format(info: catalog.ArchInfo, sd: dict, layout: Layout) -> dict:
    """A file in another layout (torchvision's VGG classifier, DenseNet's old names, ConvNeXt's original) mapped
    to timm's keys by timm's own filter for that architecture, when that makes more keys fit."""
    expected = layout.shapes
    if info.backend != "timm" or set(sd) <= set(expected):
        return sd
    module = sys.modules.get(layout.module)
    best, best_fit = sd, len(set(sd) & set(expected))
    for attr in _FILTERS:
        fn = getattr(module, attr, None)
        if fn is None:
            continue
        try:
            out = fn(dict(sd))
        except TypeError:  # a filter that also takes the model
            try:
                out = fn(dict(sd), layout.meta_model())
            except Exception:
                continue
        except Exception:
            continue
        fit = len(set(out) & set(expected)) if isinstance(out, dict) else -1
        if fit > best_fit:
            best, best_fit = out, fit
    return best


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) or "a scalar"


def _looks_like(sd: dict, known: Mapping[str, Layout]) -> str | None:
    """The known model whose layout the file matches best (most keys with the same shape), if it is a close one.

    The file is also read through timm's one-argument remappers (VGG, DenseNet), so a torchvision-format
    file is recognised too.
    """
    from timm.models import densenet, vgg

    variants = [sd]
    for fn in (vgg._filter_fn, densenet._filter_torchvision_pretrained):
        try:
            variants.append(fn(dict(sd)))
        except Exception:
            continue
    haves = [{(k, tuple(v.shape)) for k, v in d.items() if not is_optional(k)} for d in variants]
    best, score = None, 0.0
    for n, layout in known.items():
        sig = layout.signature()
        s = max(len(have & sig) / max(len(have | sig), 1) for have in haves)
        if s > score:
            best, score = n, s
    return best if score >= 0.8 else None


def check_weights(
    name: str,
    sd: dict[str, torch.Tensor],
    layout: Layout,
    *,
    num_classes: int = 1000,
    file_name: str = "the file",
    known: Callable[[], Mapping[str, Layout]] | None = None,
) -> dict[str, torch.Tensor]:
    """Check a weights file's tensors against a catalog model's `layout`; return them ready to load into the
    model built with `num_classes` outputs (`known()`, when given, lists the layouts a misfit file is compared
    with, to say which model it looks made for).

    Both formats of the torchvision-trained models are taken: timm's and torchvision's (timm's own
    remapping, e.g. VGG's classifier.0 -> pre_logits.fc1). The classifier is the one part allowed
    to differ: fine-tuning (`num_classes` != 1000) replaces it, so a file of any class count starts
    a fine-tuning; predicting ImageNet classes (`num_classes` 1000) needs the file's 1000-class
    classifier. Auxiliary classifiers (GoogLeNet, Inception v3) are dropped.

    Raises:
        WeightsUnavailableError: missing or extra tensors, or a shape that differs, in one sentence that
        names the first one and, when it is recognisable, the model the file was made for.
    """
    info = catalog.get(name)
    expected, cls_name = layout.shapes, layout.classifier
    sd = _to_timm_format(info, sd, layout)
    cls_keys = {f"{cls_name}.weight", f"{cls_name}.bias"}
    fine_tune = num_classes != 1000
    head = {k: v for k, v in sd.items() if k in cls_keys}
    body = {k: v for k, v in sd.items() if k not in cls_keys and not k.startswith(AUX)}
    missing = [k for k in expected if k not in cls_keys and not is_optional(k) and k not in body]
    extra = [k for k in body if k not in expected and not is_optional(k)]
    differ = [k for k in body if k in expected and tuple(body[k].shape) != expected[k]]
    for k, v in head.items():  # the classifier's input side must fit; its class count may differ
        if len(v.shape) != len(expected[k]) or tuple(v.shape[1:]) != expected[k][1:]:
            differ.append(k)
    if not fine_tune:
        missing += [k for k in sorted(cls_keys) if k in expected and k not in head]
    what = f"The weights in {file_name} do not fit {info.name}"
    if missing or extra or differ:
        like = _looks_like(sd, known()) if known is not None else None
        like_txt = f" (they look like {like}'s)" if like and like != info.name else ""
        n_file = sum(not is_optional(k) for k in sd)
        n_exp = sum(not is_optional(k) for k in expected)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} of {info.name}'s are not in the file (first: {missing[0]})")
            if extra:
                parts.append(f"{len(extra)} of the file's are not in {info.name} (first: {extra[0]})")
            detail = f"the file has {n_file} weight tensors, {info.name} expects {n_exp}: " + " and ".join(parts)
        else:
            k = differ[0]
            more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
            detail = (
                f"layer shapes differ: {k} is {_shape(expected[k])} in {info.name}, "
                f"{_shape(tuple(sd[k].shape))} in the file{more}"
            )
        raise WeightsUnavailableError(f"{what}{like_txt}: {detail}. {_expected_format(info)}")
    rows = [v.shape[0] for k, v in head.items() if k.endswith(".weight")]
    if not fine_tune and rows and rows[0] != 1000:
        raise WeightsUnavailableError(
            f"{file_name} has a classifier of {rows[0]} classes, not ImageNet's 1000: it can start a fine-tuning "
            "(the classifier is replaced), but it cannot predict ImageNet classes."
        )
    out = {k: v for k, v in body.items() if k in expected}
    if not fine_tune:
        out.update(head)
    return out


def _expected_format(info: catalog.ArchInfo) -> str:
    if info.backend == "torchvision":
        return f"Give torchvision's {info.name} weights ({weights_source_hint(info.name)})."
    if info.tv_model:
        return f"Give {info.name}'s weights in timm's or torchvision's format ({weights_source_hint(info.name)})."
    return f"Give timm's {info.name} weights ({weights_source_hint(info.name)})."
