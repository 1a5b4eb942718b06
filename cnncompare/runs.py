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
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import models
from .errors import CNNCompareError

METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr", "images_per_s",
                 "elapsed_s"]


def _versions() -> dict:
    import platform

    import timm
    import torchvision

    return dict(python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                timm=timm.__version__)


class RunStore:
    """Writes one run's files as the run goes."""

    def __init__(self, root: str | Path, name: str):
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
        path, i = base, 1
        while path.exists():
            i += 1
            path = base.with_name(f"{base.name}-{i}")
        path.mkdir(parents=True)
        self.path = path

    def start(self, cfg, data, result) -> None:
        config = dict(train=cfg.to_dict(), dataset=dict(name=data.name, classes=list(data.classes),
                                                       report=data.report.to_dict()),
                      device=result.device, versions=_versions(),
                      created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        (self.path / "config.json").write_text(json.dumps(config, indent=2, default=str))
        with (self.path / "metrics.csv").open("w", newline="") as f:
            csv.writer(f).writerow(METRIC_FIELDS)

    def log_epoch(self, row: dict) -> None:
        with (self.path / "metrics.csv").open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k) for k in METRIC_FIELDS])

    def finish(self, result, model: nn.Module) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(self.path / "weights.safetensors"))
        (self.path / "results.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))


@dataclass
class SavedRun:
    path: Path
    config: dict
    results: dict | None

    @property
    def name(self) -> str:
        return self.config["train"]["model"]

    @property
    def classes(self) -> list[str]:
        return self.config["dataset"]["classes"]

    @property
    def label(self) -> str:
        acc = self.results.get("val_top1") if self.results else None
        acc_txt = f"{acc:.1f}%" if acc is not None else "unfinished"
        return f"{self.path.name} ({self.name} on {self.config['dataset']['name']}, {acc_txt})"

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """Rebuild the architecture (no download), apply the same freezing, load the saved weights."""
        from safetensors.torch import load_file

        weights = self.path / "weights.safetensors"
        if not weights.is_file():
            raise CNNCompareError(f"Run {self.path.name} has no saved weights (it did not finish).")
        t = self.config["train"]
        spec = models.ModelSpec(t["model"], num_classes=len(self.classes), pretrained=False, head=t["head"])
        model = models.build(spec)
        models.freeze(model, t["freeze"], t["size"])  # same module types (FrozenBatchNorm2d) as when saved
        model.load_state_dict(load_file(str(weights)))
        model.cnncompare.spec = models.ModelSpec(**{**spec.to_dict(), "pretrained": t["pretrained"]})
        model.cnncompare.weights_source = f"run: {self.path.name}"
        return model.to(device).eval()


def load_run(path: str | Path) -> SavedRun:
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise CNNCompareError(f"{path} is not a cnncompare run directory (no readable config.json).") from err
    results_file = path / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else None
    return SavedRun(path, config, results)


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
