"""Take a fine-tuned run home: standalone weights in the backend's own format, and ONNX.

`export_run(run_dir, out_dir)` writes, into `out_dir`:

    model.safetensors  every tensor of the trained model under the backend's own key names:
                       `timm.create_model(architecture, num_classes=N)` (or torchvision's
                       `alexnet` / `googlenet`) loads it with `strict=True`
    config.json        architecture, backend, classes in order, input size, mean/std,
                       interpolation, how images were resized, the head, GoogLeNet's transform_input;
                       for a timm model also timm's Hub layout (`hubcard`): `timm.create_model(
                       "local-dir:FOLDER", pretrained=True)` loads it, class names and preprocessing included
    README.md          a model card: Hub front matter, what the model is and how it was trained, and
                       the lines that load and run it (timm, PyTorch, ONNX Runtime)
    model.onnx         opset 18, dynamic batch axis; checked against PyTorch at export time with
                       onnxruntime when that is installed

A head-only run stores only its trained layers (runs.py rebuilds the rest from its seed or
weights source); the export writes the whole model, so nothing of cnncompare is needed to use it.
What cnncompare changes in a model is undone here:

* frozen BatchNorm (`FrozenBatchNorm2d`, `FrozenBatchNormAct2d`) keeps `weight`, `bias`,
  `running_mean`, `running_var` under the same names as BatchNorm; only BatchNorm's step
  counter `num_batches_tracked` is missing, and is written as 0 (it is read only when
  BatchNorm trains with `momentum=None`);
* VGG's fc6 as `layers.DenseConv2d` has the weight names and shapes of the `Conv2d` it replaces;
* an "mlp" head: on VGG it is timm's own fc6/fc7/fc8 layout, and on AlexNet torchvision's own
  classifier once `classifier.7` is renamed `classifier.6` (their dropouts sit elsewhere, which
  does not change outputs in eval mode), so both load into the backend's plain class. On every
  other model the head is a 4096-4096 classifier the backend does not have: config.json's
  `head` says where it goes and README.md has the line that installs it before loading.

Every export is checked before anything is written: the backend's model, built the way
README.md says and loaded strictly, must give the outputs of the run's own model on a random
batch. The exporter is torch.export-based (`torch.onnx.export(dynamo=True)`, needs `onnx` and
`onnxscript`): the TorchScript one refuses AlexNet's and VGG's adaptive pooling at sizes that are
not a multiple of 7. Opset 18 is the exporter's own (no version conversion) and runs on
onnxruntime 1.14 and later.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import __version__, hubcard, models, runs
from .errors import CNNCompareError, first_line
from .fileio import atomic_path, write_atomic
from .models import catalog

__all__ = [
    "FORMATS",
    "OPSET",
    "ONNX_TOLERANCE",
    "ExportResult",
    "parse_formats",
    "export_run",
    "backend_model",
    "load_export",
]

FORMATS = ("safetensors", "onnx")
OPSET = 18
ONNX_TOLERANCE = 1e-4  # max abs difference of the logits, scaled up for logits above 1 in size
TORCH_TOLERANCE = 1e-4  # the backend's model against the run's own (frozen BatchNorm rounds differently)
MLP_HIDDEN = 4096
_EXTERNAL_DATA_BYTES = 1_500_000_000  # ONNX's protobuf stops at 2 GB: larger weights go to model.onnx.data
_INPUT, _OUTPUT = "input", "logits"


@dataclass
class ExportResult:
    """What `export_run` wrote and measured."""

    out_dir: Path
    files: list[Path]  # everything written, in out_dir
    architecture: str  # the backend's name, e.g. "resnet18.a1_in1k" (timm) or "alexnet" (torchvision)
    backend: str  # "timm" or "torchvision"
    onnx: str  # one sentence: written and checked, written unchecked, or why not
    onnx_written: bool = False
    onnx_max_abs_diff: float | None = None  # onnxruntime against PyTorch, on random batches of 2 and 1
    torch_max_abs_diff: float = 0.0  # the backend's own model against the run's, on a random batch of 2
    opset: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["files"] = [p.name for p in self.files]
        return d

    def summary(self) -> str:
        """A few lines for the CLI: the folder, the files and the ONNX sentence."""
        lines = [f"Exported {self.architecture} ({self.backend}) to {self.out_dir}:"]
        lines += [f"  {p.name}" for p in self.files]
        lines.append(self.onnx)
        lines += self.notes
        return "\n".join(lines)


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """'safetensors,onnx' (or a list of names) -> a checked tuple in FORMATS' order.

    Raises:
        CNNCompareError: an unknown or no format (one sentence naming the accepted ones).
    """
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names = {str(f).strip().lower() for f in items if str(f).strip()}
    unknown = sorted(names - set(FORMATS))
    if unknown or not names:
        what = f"Unknown export format '{unknown[0]}'" if unknown else "No export format given"
        raise CNNCompareError(f"{what}: choose from {', '.join(FORMATS)} (e.g. --format safetensors,onnx).")
    return tuple(f for f in FORMATS if f in names)


# --------------------------------------------------------------------------- the backend's own model


def mlp_head(in_features: int, num_classes: int, hidden: int = MLP_HIDDEN) -> nn.Sequential:
    """cnncompare's "mlp" head in plain torch (the layout of `models.MLPHead`: same keys 1, 4 and 7)."""
    return nn.Sequential(
        nn.Flatten(1),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )


def backend_model(config: dict) -> nn.Module:
    """The untrained model an export's config.json describes, built with timm or torchvision only
    (what README.md's lines do), in eval mode."""
    n = len(config["classes"])
    arch = config["architecture"]
    if config["backend"] == "timm":
        import timm

        model = timm.create_model(arch, num_classes=n)
    elif arch == "alexnet":
        import torchvision

        model = torchvision.models.alexnet(num_classes=n)
    elif arch == "googlenet":
        import torchvision

        model = torchvision.models.googlenet(
            num_classes=n, aux_logits=False, init_weights=False, transform_input=bool(config["transform_input"])
        )
    else:
        raise CNNCompareError(f"Unknown architecture '{arch}' in config.json: it was not written by cnncompare.")
    head = config.get("head") or {}
    if head.get("module"):  # an mlp head the backend's class does not have
        model.set_submodule(head["module"], mlp_head(head["in_features"], n, head["hidden"]), strict=True)
    return model.eval()


def load_export(folder: str | Path) -> tuple[nn.Module, dict]:
    """(model with the exported weights loaded strictly, config) from an export folder; needs no cnncompare run."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        model = backend_model(config)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CNNCompareError(f"{folder} is not a cnncompare export (no readable config.json: {err}).") from None
    if not config.get("weights"):
        raise CNNCompareError(f"{folder} holds no safetensors weights (it was exported as ONNX only).")
    model.load_state_dict(load_file(str(folder / config["weights"])), strict=True)
    return model, config


def _head_config(info: catalog.ArchInfo, model: nn.Module, head: str) -> tuple[dict, dict[str, str]]:
    """(config.json's `head`, key renames) for the run's head."""
    if head != "mlp":
        return {"kind": head}, {}
    if info.family.startswith("VGG"):
        return {"kind": "mlp", "note": "timm's own VGG classifier (fc6, fc7, fc8), trained anew"}, {}
    if info.backend == "torchvision" and info.backend_name == "alexnet":
        renames = {"classifier.7.weight": "classifier.6.weight", "classifier.7.bias": "classifier.6.bias"}
        return {"kind": "mlp", "note": "torchvision's own AlexNet classifier (fc6, fc7, fc8), trained anew"}, renames
    cls_name = models.classifier_name(model)
    mlp = model.get_submodule(cls_name)
    in_features, hidden = mlp[1].in_features, mlp[1].out_features
    return {
        "kind": "mlp",
        "module": cls_name,
        "in_features": in_features,
        "hidden": hidden,
        "note": f"a {hidden}-{hidden} classifier in place of '{cls_name}': install it before loading (README.md)",
    }, {}


def _backend_state(model: nn.Module, target: nn.Module, renames: dict[str, str], label: str) -> dict:
    """The run's tensors under the backend's key names, loaded strictly into `target` (which then holds them)."""
    sd = {renames.get(k, k): v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    for k, v in target.state_dict().items():
        if k not in sd and k.endswith("num_batches_tracked"):  # frozen BatchNorm has no step counter
            sd[k] = torch.zeros_like(v)
    try:
        target.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:240]
        raise CNNCompareError(f"The weights of {label} do not load into the backend's own model: {detail}.") from None
    return sd


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _tolerance(base: float, ref: torch.Tensor) -> float:
    return base * max(1.0, float(ref.abs().max()))


# --------------------------------------------------------------------------- writing


def _save_safetensors(path: Path, sd: dict, metadata: dict) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    return path


def _have(module: str) -> bool:
    """Whether an optional package is installed (without importing it)."""
    return importlib.util.find_spec(module) is not None


def _onnx_missing() -> list[str]:
    return [m for m in ("onnx", "onnxscript") if not _have(m)]


def _export_onnx(target: nn.Module, size: int, out_dir: Path, arch: str) -> tuple[str, list[Path], float | None]:
    """Write model.onnx (checked with onnxruntime when it is there); returns (sentence, files, max abs diff)."""
    missing = _onnx_missing()
    if missing:
        return (
            f"model.onnx was not written: the ONNX exporter needs the optional package(s) {' and '.join(missing)} "
            "(pip install 'cnncompare[onnx]').",
            [],
            None,
        )
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, size, size, generator=gen)
    big = models.model_bytes(target) > _EXTERNAL_DATA_BYTES
    tmp_dir = Path(tempfile.mkdtemp(prefix=".onnx-", dir=out_dir))
    try:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    target,
                    (example,),
                    dynamo=True,
                    input_names=[_INPUT],
                    output_names=[_OUTPUT],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    opset_version=OPSET,
                    verbose=False,
                )
                program.save(str(tmp_dir / "model.onnx"), external_data=big)
        except Exception as err:  # the exporter's many error types all mean "this model does not export"
            reason = " ".join(first_line(err).split())[:200]
            return (
                f"{arch} does not export to ONNX ({type(err).__name__}: {reason}); "
                "the safetensors weights were written and load in PyTorch.",
                [],
                None,
            )
        diff = None
        if _have("onnxruntime"):
            diff, tol = _check_onnx(target, tmp_dir / "model.onnx", size)
            if diff > tol:
                return (
                    f"model.onnx was not written: onnxruntime's outputs differ from PyTorch's by {diff:.2g} "
                    f"(more than {tol:.0e}); use the safetensors weights.",
                    [],
                    diff,
                )
            sentence = (
                f"model.onnx (opset {OPSET}, dynamic batch) gives PyTorch's outputs within {diff:.1e} "
                "on random batches in onnxruntime."
            )
        else:
            sentence = (
                f"model.onnx (opset {OPSET}, dynamic batch) was written but not checked: onnxruntime is not "
                "installed (pip install onnxruntime)."
            )
        files = []
        for f in sorted(tmp_dir.iterdir()):  # model.onnx, and model.onnx.data for weights over 1.5 GB
            os.replace(f, out_dir / f.name)
            files.append(out_dir / f.name)
        return sentence, files, diff
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _check_onnx(target: nn.Module, path: Path, size: int) -> tuple[float, float]:
    """(max abs diff, tolerance) of onnxruntime against PyTorch on a random batch of 2 and one of 1."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(1)
    diff, tol = 0.0, ONNX_TOLERANCE
    for batch in (2, 1):  # a batch size other than the example's shows the axis is dynamic
        x = torch.randn(batch, 3, size, size, generator=gen)
        with torch.no_grad():
            ref = target(x)
        out = torch.from_numpy(session.run(None, {_INPUT: x.numpy()})[0])
        if out.shape != ref.shape:
            return float("inf"), tol
        diff, tol = max(diff, _max_diff(out, ref)), max(tol, _tolerance(ONNX_TOLERANCE, ref))
    return diff, tol


# --------------------------------------------------------------------------- export


def export_run(run_dir: str | Path, out_dir: str | Path, formats: str | Iterable[str] = FORMATS) -> ExportResult:
    """Export a saved run as standalone weights (safetensors, the backend's key names) and/or ONNX.

    config.json and README.md are always written. Every file is written under a temporary name and
    renamed when complete, so a crash never leaves half a file under its real name.

    Args:
        run_dir: a run folder (as written by a fine-tuning run with a store).
        out_dir: where the files go (created; files of an earlier export there are replaced).
        formats: "safetensors", "onnx", or both (a list or "safetensors,onnx").

    Returns:
        An ExportResult: the files, the ONNX sentence, the measured differences.

    Raises:
        CNNCompareError: not a run, a run without weights, weights that do not load into the backend's
            model (one sentence each). A model that does not export to ONNX is not an error: the
            result's `onnx` sentence says why.
    """
    formats = parse_formats(formats)
    saved = runs.load_run(run_dir)
    if Path(out_dir).resolve() == saved.path.resolve():
        raise CNNCompareError("Export into another folder than the run's own: its config.json would be replaced.")
    _check_out_dir(Path(out_dir))
    model = saved.load_model("cpu")
    entry, classes, size = saved.entry, list(saved.classes), saved.settings.size
    info = catalog.get(entry.model)
    label = saved.run_label
    head, renames = _head_config(info, model, entry.head)
    config = _config(saved, model, info, head, formats)
    target = backend_model(config)
    sd = _backend_state(model, target, renames, label)
    torch_diff = _checked_against_backend(model, target, size, info, label)
    config.update(hubcard.hub_fields(target, config))  # timm's Hub layout beside cnncompare's own fields

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_earlier_export(out_dir)  # nothing of another model is left beside the new files
    files: list[Path] = []
    if "safetensors" in formats:
        meta = dict(format="pt", architecture=info.backend_name, backend=info.backend, num_classes=len(classes))
        files.append(_save_safetensors(out_dir / "model.safetensors", sd, meta))
    result = ExportResult(out_dir, files, info.backend_name, info.backend, "", torch_max_abs_diff=torch_diff)
    onnx_sentence = None
    if "onnx" in formats:
        onnx_sentence, onnx_files, result.onnx_max_abs_diff = _export_onnx(target, size, out_dir, info.backend_name)
        files += onnx_files
        if onnx_files:
            result.onnx_written, result.opset = True, OPSET
            config["onnx"] = dict(
                file="model.onnx",
                opset=OPSET,
                input=_INPUT,
                output=_OUTPUT,
                dynamic_batch=True,
                max_abs_diff=result.onnx_max_abs_diff,
                checked=result.onnx_max_abs_diff is not None,
            )
        result.onnx = onnx_sentence
    else:
        result.onnx = "ONNX was not asked for."
    config["onnx_status"] = result.onnx
    if head.get("note"):
        result.notes.append(f"Head: {head['note']}.")
    files.append(write_atomic(out_dir / "config.json", json.dumps(runs.json_safe(config), indent=2)))
    files.append(write_atomic(out_dir / "README.md", hubcard.model_card(config, onnx_sentence)))
    for f in files:  # readable by whoever gets the folder (a temporary file is made private)
        f.chmod(0o644)
    return result


EXPORT_FILES = ("model.safetensors", "model.onnx", "model.onnx.data", "config.json", "README.md")


def _check_out_dir(out_dir: Path) -> None:
    """An export goes into a new or empty folder, or over an earlier export (whose files it replaces)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise CNNCompareError(f"{out_dir} is a file: export into a new or empty folder.")
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_FILES)
    if others and not _is_export(out_dir):
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise CNNCompareError(
            f"{out_dir} already holds other files ({shown}): export into a new or empty folder, or an earlier export's."
        )
    if any((out_dir / n).exists() for n in EXPORT_FILES) and not _is_export(out_dir):
        raise CNNCompareError(
            f"{out_dir} holds a config.json or model that cnncompare did not write: export elsewhere."
        )


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("format") == "cnncompare-export"
    except (OSError, ValueError, AttributeError):
        return False


def _clear_earlier_export(out_dir: Path) -> None:
    if _is_export(out_dir):
        for name in EXPORT_FILES:
            (out_dir / name).unlink(missing_ok=True)


def _checked_against_backend(model, target, size: int, info, label: str) -> float:
    """The largest difference between the run's model and the backend's with the exported weights, on two random
    images; past the tolerance nothing is exported."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=gen)
    with torch.no_grad():
        ours, theirs = model(x), target(x)
    torch_diff = _max_diff(ours, theirs)
    if torch_diff > _tolerance(TORCH_TOLERANCE, ours):
        raise CNNCompareError(
            f"{info.backend}'s {info.backend_name} with the exported weights gives outputs that differ from "
            f"{label}'s by {torch_diff:.2g}: nothing was exported."
        )
    return torch_diff


def _config(saved, model, info, head: dict, formats) -> dict:
    """config.json: what a user needs to rebuild and feed the model without cnncompare."""
    entry, classes, size = saved.entry, list(saved.classes), saved.settings.size
    dcfg = models.data_config(model, size)
    config = dict(
        format="cnncompare-export",
        format_version=1,
        cnncompare_version=__version__,
        architecture=info.backend_name,
        backend=info.backend,
        model=info.name,
        num_classes=len(classes),
        classes=classes,
        input_size=[3, size, size],
        mean=[float(v) for v in dcfg["mean"]],
        std=[float(v) for v in dcfg["std"]],
        interpolation=str(dcfg.get("interpolation", "bilinear")),
        resize="whole image to input_size, no crop (as the run trained)",
        head=head,
        weights="model.safetensors" if "safetensors" in formats else None,
        onnx=None,
        run=dict(
            folder=saved.path.name,
            label=saved.run_label,
            dataset=saved.config["dataset"].get("name"),
            val_top1=(saved.results or {}).get("val_top1"),
            freeze=entry.freeze,
            pretrained=entry.pretrained,
            val_top5=(saved.results or {}).get("val_top5"),
            epochs=(saved.results or {}).get("final_epoch"),
        ),
    )
    if info.backend_name == "googlenet":
        config["transform_input"] = bool(getattr(model, "transform_input", False))
    return config
