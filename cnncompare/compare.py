"""One dataset, one set of settings, several models one after another -> one results table.

A model that fails (too small an input size, out of memory, offline weights) gets its error
in its row; the others still run, and each finished run is already on disk.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterator

import torch

from . import models, training
from .errors import CNNCompareError
from .runs import RunStore


# Settings one entry may change for its own run (e.g. to compare optimizers on one model).
OVERRIDABLE = {"optimizer": training.OPTIMIZERS, "lr": None, "init": models.INITS, "head": models.HEADS}


@dataclasses.dataclass
class Entry:
    """A run in a comparison: a model, its own freeze policy (None: the shared setting) and
    optional per-run settings."""

    model: str
    freeze: str | None = None
    overrides: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Entry":
        """'resnet18', 'resnet18@stages:2' or 'resnet18@none optimizer=sgd lr=0.05'."""
        first, *rest = text.split() or [""]
        name, _, freeze = first.partition("@")
        overrides: dict = {}
        for token in rest:
            key, eq, value = token.partition("=")
            key = key.lower()
            if not eq or key not in OVERRIDABLE:
                raise CNNCompareError(f"'{token}' in '{text}' is not a per-run setting: after the model you may add "
                                      f"{', '.join(k + '=...' for k in OVERRIDABLE)}.")
            if key == "lr":
                try:
                    overrides[key] = float(value)
                except ValueError:
                    raise CNNCompareError(f"lr={value} in '{text}' is not a number.") from None
            elif value not in OVERRIDABLE[key]:
                raise CNNCompareError(f"{key}={value} in '{text}': choose one of {', '.join(OVERRIDABLE[key])}.")
            else:
                overrides[key] = value
        return cls(name.strip(), freeze.strip() or None, overrides)

    def label(self, default_freeze: str) -> str:
        return f"{self.model}@{self.freeze or default_freeze}" + "".join(f" {k}={v}" for k, v in self.overrides.items())

    def config(self, base: training.TrainConfig) -> training.TrainConfig:
        return dataclasses.replace(base, model=self.model, freeze=self.freeze or base.freeze, **self.overrides)


def run_all(entries: list[Entry], data, base: training.TrainConfig, *, out_dir: str | Path | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[training.Event]:
    """Events of every run in turn; each run ends with an "end" event carrying its RunResult."""
    should_stop = should_stop or (lambda: False)
    for entry in entries:
        cfg = entry.config(base)
        if should_stop():
            yield _failed(cfg, data, "not started: stopped by user")
            continue
        store = None
        try:
            cfg.validate()  # bad settings fail here, before a run directory is made
            store = RunStore(out_dir, entry.model) if out_dir else None
            yield from training.run(cfg, data, should_stop=should_stop, store=store)
        except CNNCompareError as err:
            yield _failed(cfg, data, str(err), store)
        except torch.OutOfMemoryError:
            yield _failed(cfg, data, f"out of memory at batch {cfg.batch_size}, {cfg.size} px: try a smaller batch "
                                     "or input size", store)
        except Exception as err:  # any other model-specific failure: report it, run the next model
            yield _failed(cfg, data, f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}", store)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _failed(cfg, data, message: str, store=None) -> training.Event:
    if store is not None and not any(store.path.iterdir()):
        store.path.rmdir()  # failed before it started (e.g. weights offline): leave no empty folder
        store = None
    result = training.RunResult(name=cfg.model, config=cfg.to_dict(), classes=list(data.classes), error=message,
                                run_dir=str(store.path) if store else None)
    return training.Event("end", cfg.model, message=f"{cfg.model}: failed: {message}", result=result)


def compare(entries: list[Entry], data, base: training.TrainConfig, *, out_dir=None, on_event=None,
            should_stop=None) -> list[training.RunResult]:
    results = []
    for ev in run_all(entries, data, base, out_dir=out_dir, should_stop=should_stop):
        if on_event:
            on_event(ev)
        if ev.kind == "end":
            results.append(ev.result)
    return results


TABLE_COLUMNS = ["model", "freeze", "val_top1", "val_top5", "best_epoch", "epochs", "train_time_s", "images_per_s",
                 "trainable_params", "params", "macs", "latency_ms", "feature_cache", "stopped", "error", "run_dir"]


def table_rows(results: list[training.RunResult]) -> list[dict]:
    """One flat row per model (for the CLI's --json, the app's table and the CSV download)."""
    rows = []
    for r in results:
        rows.append(dict(model=r.name, freeze=r.config.get("freeze"), val_top1=r.val_top1, val_top5=r.val_top5,
                         best_epoch=r.best_epoch, epochs=r.final_epoch, train_time_s=r.train_time_s,
                         images_per_s=r.images_per_s, trainable_params=r.trainable_params, params=r.params,
                         macs=r.macs, latency_ms=r.latency_ms, feature_cache=r.feature_cache, stopped=r.stopped,
                         error=r.error, run_dir=r.run_dir))
    return rows
