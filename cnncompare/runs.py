"""A fine-tuning run on disk, one directory each:

    config.json     everything needed to repeat it (+ dataset report, library versions, device)
    metrics.csv     one row per finished epoch, written as each epoch ends
    results.json    the RunResult, written when the run ends (stopped runs too)
    weights.safetensors  the trained weights

A run that crashed keeps its config and finished epochs; a comparison's finished models
keep everything, whatever happens to the next one.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import models
from .errors import CNNCompareError, first_line
from .fileio import atomic_path
from .loop import seed_everything
from .runfolder import RunFolder
from .serving import kept
from .settings import ModelEntry, TrainSettings, build

__all__ = [
    "RunStore",
    "SavedRun",
    "run_label",
    "setting_text",
    "load_run",
    "list_runs",
    "saved_bytes",
    "json_safe",
    "METRIC_FIELDS",
]

METRIC_FIELDS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_top1",
    "val_top5",
    "lr",
    "images_per_s",
    "elapsed_s",
]


def setting_text(value) -> str:
    """A setting's value as a label writes it: booleans in lower case, floats short (0.001, 1e-05)."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_label(model: str, freeze: str, changes: dict | None = None) -> str:
    """The one label of a run, used by the app's table, curves, Predict list and the downloads, and by the CLI:
    the model, its freeze policy and every setting the run changes for itself, in the order written
    ('resnet18@none optimizer=adam lr=0.001'). A comparison adds ' #2' to a true repeat (`compare.Plan.runs`)."""
    return f"{model}@{freeze}" + "".join(f" {k}={setting_text(v)}" for k, v in (changes or {}).items())


def _versions() -> dict:
    import platform

    import timm
    import torchvision

    from . import __version__

    return dict(
        cnncompare=__version__,
        python=platform.python_version(),
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        timm=timm.__version__,
    )


class RunStore:
    """Writes one run's files as the run goes (`owner`: who made it, recorded in its config.json)."""

    def __init__(self, root: str | Path, name: str, owner: str | None = None):
        self.train_config: dict | None = None
        self.owner = owner
        self.folder = RunFolder.create(root, name)
        self.path = self.folder.path

    def start(self, train_config: dict, dataset, result) -> None:
        """Write config.json (model entry + training settings, dataset, versions) and an empty metrics.csv."""
        config = dict(
            train=train_config,
            label=result.label,
            dataset=dict(name=dataset.name, classes=list(dataset.classes), report=dataset.report.to_dict()),
            device=result.device,
            versions=_versions(),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        if self.owner:
            config["owner"] = self.owner
        self.train_config = train_config
        self.folder.write_json("config.json", config)
        with (self.path / "metrics.csv").open("w", newline="") as f:
            csv.writer(f).writerow(METRIC_FIELDS)

    def reset(self) -> None:
        """Empty the folder again (a run that restarts with a smaller batch after running out of memory)."""
        for f in self.path.iterdir():
            if f.is_file():
                f.unlink()

    def log_epoch(self, row: dict) -> None:
        with (self.path / "metrics.csv").open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k) for k in METRIC_FIELDS])

    def finish(self, result, model: nn.Module | None) -> None:
        """Save the results, and the weights unless no epoch finished (`model` None).

        When the frozen part can be rebuilt exactly (ImageNet weights from the backend's cache, or
        random weights from the run's seed; not a weights file that may go away), only the trained
        parameters and the buffers are saved, after checking that a rebuild gives every tensor of
        the trained model back bit for bit; otherwise all weights are saved. A VGG16 head run then
        stores 0.1 MB instead of 528 MB.
        """
        from safetensors.torch import save_file

        if model is not None:
            state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
            saved, kind = self._trained_only(model, state, len(result.classes)), "trained-only"
            if saved is None:
                saved, kind = state, "full"
            with atomic_path(self.path / "weights.safetensors") as tmp:
                save_file(saved, str(tmp), metadata={"cnncompare": kind})
        self.folder.write_json("results.json", json_safe(result.to_dict()))

    def _trained_only(self, model: nn.Module, state: dict, num_classes: int) -> dict | None:
        """The trained parameters and all buffers, if a rebuild restores the rest exactly; else None."""
        cfg = self.train_config or {}
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        if not frozen or cfg.get("weights_file"):
            return None
        part = {k: v for k, v in state.items() if k not in frozen}
        try:
            rebuilt = _rebuild(build(ModelEntry, cfg), build(TrainSettings, cfg), num_classes, part)
        except Exception:  # weights no longer to be had, an odd model: keep everything
            return None
        again = rebuilt.state_dict()
        if again.keys() != state.keys() or any(not torch.equal(again[k].cpu(), state[k]) for k in state):
            return None
        return part


def _rebuild(entry: ModelEntry, settings: TrainSettings, num_classes: int, part: dict) -> nn.Module:
    """The model a run trained, from its entry and seed (frozen part) and its saved trained tensors."""
    seed_everything(settings.seed)  # the same draws as the run: random frozen layers come back the same
    model = models.build_frozen(entry, num_classes, settings.size)
    missing, unexpected = model.load_state_dict(part, strict=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if unexpected or not set(missing) <= frozen:
        raise CNNCompareError("the saved tensors do not match the model")
    return model


def json_safe(obj):
    """NaN and infinities become null, recursively: JSON written here never carries a bare NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


@dataclass
class SavedRun:
    path: Path
    config: dict
    results: dict | None

    @property
    def entry(self) -> ModelEntry:
        """The model entry the run trained (fields missing from an older config.json take their defaults)."""
        return build(ModelEntry, self.config["train"])

    @property
    def settings(self) -> TrainSettings:
        """The training settings the run used."""
        return build(TrainSettings, self.config["train"])

    @property
    def name(self) -> str:
        return self.config["train"]["model"]

    @property
    def classes(self) -> list[str]:
        return self.config["dataset"]["classes"]

    @property
    def run_label(self) -> str:
        """The run's label in its comparison ('resnet18@none optimizer=adam lr=0.001', `run_label`); runs saved
        before labels were recorded get model@freeze."""
        label = self.config.get("label")
        if isinstance(label, str) and label.strip():
            return label.strip()
        return run_label(self.name, str(self.config["train"].get("freeze") or "head"))

    @property
    def time_text(self) -> str:
        """When the run started, from its folder name ('20261125-162505-resnet18' -> 'Nov 25 16:25:05')."""
        m = re.match(r"(\d{8})-(\d{6})", self.path.name)
        if not m:
            return self.path.name
        try:
            return dt.datetime.strptime("".join(m.groups()), "%Y%m%d%H%M%S").strftime("%b %d %H:%M:%S")
        except ValueError:
            return self.path.name

    @property
    def label(self) -> str:
        """What a list of runs shows: 'resnet18@none optimizer=adam · shapes 87.5 % · Nov 25 16:25:05'."""
        acc = self.results.get("val_top1") if self.results else None
        acc_txt = f"{acc:.1f} %" if acc is not None else "unfinished"
        return f"{self.run_label} · {self.config['dataset']['name']} {acc_txt} · {self.time_text}"

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """Rebuild the architecture (no download), apply the same freezing, load the saved weights."""
        from safetensors.torch import load_file

        weights = self.path / "weights.safetensors"
        if not weights.is_file():
            raise CNNCompareError(f"Run {self.path.name} has no saved weights (it did not finish).")
        from safetensors import safe_open

        entry, size = self.entry, self.settings.size
        with safe_open(str(weights), "pt") as f:
            kind = (f.metadata() or {}).get("cnncompare", "full")
        if kind == "trained-only":  # the frozen part comes back from its weights source and the run's seed
            try:
                model = _rebuild(entry, self.settings, len(self.classes), load_file(str(weights)))
            except CNNCompareError as err:
                raise CNNCompareError(
                    f"Run {self.path.name} saved only its trained layers, and the rest cannot be "
                    f"rebuilt here: {first_line(err)}"
                ) from None
        else:
            # same architecture, input handling (GoogLeNet's transform_input when pretrained) and module types
            # (FrozenBatchNorm2d) as trained, without downloading or initialising anything: the weights are the run's
            arch = dataclasses.replace(entry, weights_file=None, init="default")
            model = models.build_frozen(arch, len(self.classes), size, load_weights=False)
            model.load_state_dict(load_file(str(weights)))
        model.cnncompare.weights_source = f"run: {self.path.name}"
        return model.to(device).eval()


def load_run(path: str | Path) -> SavedRun:
    """Open a run folder (as written by a fine-tuning run) to read it or rebuild its model.

    Args:
        path: the run's folder.

    Returns:
        A SavedRun: `.config`, `.results`, `.entry`, `.settings`, `.classes`, `.load_model()`.

    Raises:
        CNNCompareError: not a run folder, or a damaged one (one sentence naming the folder).
    """
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise CNNCompareError(f"{path} is not a cnncompare run directory (no readable config.json).") from err
    results_file = path / "results.json"
    try:
        results = json.loads(results_file.read_text()) if results_file.is_file() else None
    except (OSError, ValueError):
        results = None  # unreadable results: the run still lists, as unfinished
    run = SavedRun(path, config, results)
    try:  # a damaged or foreign folder fails here, with one sentence, instead of later for every visitor
        if not isinstance(config.get("train"), dict) or "model" not in config["train"]:
            raise CNNCompareError("its config.json names no model")
        if not isinstance(config.get("dataset"), dict) or not isinstance(config["dataset"].get("classes"), list):
            raise CNNCompareError("its config.json lists no classes")
        run.entry, run.settings  # noqa: B018 - parse both: bad values raise here
    except (CNNCompareError, TypeError, AttributeError) as err:
        raise CNNCompareError(f"{path.name} is not a readable cnncompare run: {first_line(err)}.") from None
    return run


def list_runs(root: str | Path) -> list[SavedRun]:
    """Runs under `root`, newest first; unreadable directories are skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in sorted((p for p in root.iterdir() if (p / "config.json").is_file()), reverse=True):
        try:
            out.append(load_run(d))
        except CNNCompareError:
            continue
    return out


# --------------------------------------------------------------------------- disk


def saved_bytes(entry: ModelEntry, n_classes: int, size: int) -> int:
    """About the bytes a run's folder will keep: its weights (only the trained part and the buffers when the frozen
    part can be rebuilt: random from the seed, or downloaded ImageNet weights; all of them otherwise). Counted on
    the meta device, once per kind of run (what it keeps depends only on whether a weights file is given)."""
    kind = dataclasses.replace(entry, weights_file="given" if entry.weights_file else None)
    return _saved_bytes(kind, n_classes, size)


@kept(512, key=lambda entry, n_classes, size: (repr(entry), n_classes, size))
def _saved_bytes(entry: ModelEntry, n_classes: int, size: int) -> int:
    shapes = dataclasses.replace(entry, weights_file=None, pretrained=False)  # the same tensors, nothing read
    model = models.build_frozen(shapes, n_classes, size, device="meta")
    params = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for b in model.buffers())
    rebuildable = trained < params and not entry.weights_file
    return 4 * ((trained if rebuildable else params) + buffers) + 64 * 1024
