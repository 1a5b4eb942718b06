"""One dataset, one set of settings, several models one after another -> one results table.

A `Plan` holds the runs (each a model with its own freeze policy and optional per-run
settings, under a unique label), the shared settings, the limits of the server it runs on
(`Limits`: runs, epochs, time per run, model size), and the policy for missing pretrained
weights. `run_plan` yields every run's events (each carrying its run's label);
a model that fails (too small an input size, out of memory, offline weights) gets its error
in its row while the others still run, and each finished run is already on disk. `export`
writes the comparison's CSV, JSON and a zip of its run folders. The app and the CLI both
call these, so they label, fall back and export the same way.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from . import memory, models, runtime, training
from .data import placement
from .env import Env
from .errors import CNNCompareError, first_line
from .fileio import atomic_path, is_partial
from .models import catalog
from .runs import RunStore, run_label
from .runs import json_safe as _json_safe
from .settings import FreezePolicy, ModelEntry, TrainSettings, coerce, settings_of

__all__ = [
    "Entry",
    "Limits",
    "Plan",
    "PlannedRun",
    "MissingWeights",
    "run_plan",
    "run_comparison",
    "table_rows",
    "freeze_sweep_rows",
    "export",
    "TABLE_COLUMNS",
    "OVERRIDABLE",
]

MissingWeights = Literal["random", "fail"]

# Settings one run may change for itself ('resnet18@none optimizer=sgd lr=0.05'): every training
# setting and every model setting except the model and its freeze policy (written with @).
OVERRIDABLE = {s.name: s for s in settings_of(TrainSettings)} | {
    s.name: s for s in settings_of(ModelEntry) if s.name not in ("model", "freeze")
}


@dataclasses.dataclass
class Entry:
    """One line of a comparison: a model, its own freeze policy (None: the plan's) and per-run settings."""

    model: str
    freeze: str | None = None
    overrides: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Entry:
        """'resnet18', 'resnet18@stages:2' or 'resnet18@none optimizer=sgd lr=0.05'.

        Raises:
            CNNCompareError: an unknown per-run setting or a bad value, in one sentence.
        """
        first, *rest = text.split() or [""]
        name, _, freeze = first.partition("@")
        if not name.strip():
            raise CNNCompareError(f"'{text[:80]}' names no model: write model@freeze, e.g. resnet18@head.")
        freeze = str(FreezePolicy.parse(freeze)) if freeze.strip() else ""
        overrides: dict = {}
        for token in rest:
            key, eq, value = token.partition("=")
            key = key.lower().replace("-", "_")
            if not eq or key not in OVERRIDABLE:
                raise CNNCompareError(
                    f"'{token[:40]}' in '{text[:80]}' is not a per-run setting: after the model you may add "
                    f"key=value for {', '.join(OVERRIDABLE)}."
                )
            overrides[key] = coerce(OVERRIDABLE[key], value)
        return cls(name.strip(), freeze.strip() or None, overrides)

    def label(self, default_freeze: str) -> str:
        """'resnet18@head', or 'resnet18@none optimizer=sgd lr=0.05' with its own settings (`runs.run_label`)."""
        return run_label(self.model, self.freeze or default_freeze, self.overrides)

    def resolve(self, model_defaults: ModelEntry, settings: TrainSettings) -> tuple[ModelEntry, TrainSettings]:
        """This entry's own ModelEntry and TrainSettings: the plan's, with its changes applied."""
        model_fields = {s.name for s in settings_of(ModelEntry)}
        m = {k: v for k, v in self.overrides.items() if k in model_fields}
        t = {k: v for k, v in self.overrides.items() if k not in model_fields}
        entry = dataclasses.replace(model_defaults, model=self.model, freeze=self.freeze or model_defaults.freeze, **m)
        return entry, dataclasses.replace(settings, **t)


@dataclasses.dataclass
class PlannedRun:
    """A run of a plan: its unique label, model entry, settings and freeze policy (parsed once, with the plan)."""

    label: str
    entry: ModelEntry
    settings: TrainSettings

    @property
    def policy(self) -> FreezePolicy:
        return self.entry.policy


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a shared server allows one comparison; None (or 0) is no limit, as on the command line.

    The app builds them from the environment (`Limits.of(Env.read())`), and the plan applies them:
    too many runs or epochs, or a model over the size cap, is refused when the plan is checked; each
    run's time budget becomes at most `max_run_s`.
    """

    max_runs: int | None = None
    max_epochs: int | None = None
    max_run_s: float | None = None
    max_params_m: float | None = None  # models beyond the catalog; the catalog is always allowed
    max_run_mb: float | None = None  # memory of one run on a CPU (`memory.check`)
    max_decoded_bytes: int | None = None  # decoded images beyond this stream from disk (not held in memory)

    @classmethod
    def of(cls, env: Env) -> Limits:
        """A shared server's limits, from the environment."""
        return cls(
            env.max_runs or None,
            env.max_epochs or None,
            env.max_run_s or None,
            env.max_model_params_m or None,
            env.max_run_mb or None,
            env.max_decoded_bytes,
        )

    @classmethod
    def local(cls, env: Env) -> Limits:
        """The command line's: the owner's machine, so only what keeps a run from being killed (its memory)."""
        return cls(max_run_mb=env.max_run_mb or None, max_decoded_bytes=env.max_decoded_bytes)

    def budget(self, asked: float | None) -> float | None:
        """A run's time budget under the server's: the smaller of the two."""
        if not self.max_run_s or self.max_run_s <= 0:
            return asked
        return self.max_run_s if asked is None else min(float(asked), self.max_run_s)


@dataclasses.dataclass
class Plan:
    """A comparison: runs, shared settings, the missing-weights policy and the server's limits."""

    entries: list[Entry]
    model_defaults: ModelEntry = dataclasses.field(default_factory=ModelEntry)
    settings: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    missing_weights: MissingWeights = "random"
    limits: Limits = dataclasses.field(default_factory=Limits)
    # model name -> a weights file used when that model starts from pretrained weights (a visitor's own
    # upload): kept out of the entries, so labels and run folders never show a server path
    weights_files: dict[str, str] = dataclasses.field(default_factory=dict)

    @staticmethod
    def items(text: str | list[str]) -> list[str]:
        """One string per run, from 'resnet18@head, vgg11@stages:2' or one per line (or a list of such strings)."""
        lines = text if isinstance(text, (list, tuple)) else [text or ""]
        return [s.strip() for line in lines for chunk in str(line).splitlines() for s in chunk.split(",") if s.strip()]

    @classmethod
    def parse(cls, text: str | list[str], **kw) -> Plan:
        """The plan of `items(text)`, checked; raises CNNCompareError (no model, too many runs, an unknown model or
        freeze policy)."""
        items = cls.items(text)
        if not items:
            raise CNNCompareError("Enter at least one model, e.g. resnet18@head (model@freeze policy).")
        plan = cls([Entry.parse(item) for item in items], **kw)
        plan.check()
        return plan

    def check(self) -> None:
        """Validate names, freeze policies, settings and the server's limits before anything runs.

        Raises:
            CNNCompareError: the first problem, in one sentence.
        """
        lim = self.limits
        if lim.max_runs and len(self.entries) > lim.max_runs:
            raise CNNCompareError(f"At most {lim.max_runs} runs at a time (got {len(self.entries)}).")
        if self.missing_weights not in ("random", "fail"):
            raise CNNCompareError(f"Missing-weights policy must be random or fail, got {self.missing_weights!r}.")
        runtime.resolve_device(self.settings.device)  # a device this machine has (the value's grammar: settings)
        for e in self.entries:
            catalog.get(e.model)  # unknown names fail now, with suggestions
        for run in self.runs():
            if lim.max_epochs and run.settings.epochs > lim.max_epochs:
                raise CNNCompareError(
                    f"{run.label}: at most {lim.max_epochs} epochs per run on this server (got {run.settings.epochs})."
                )
        if lim.max_params_m:
            for name in dict.fromkeys(e.model for e in self.entries):
                models.check_allowed(name, lim.max_params_m)

    def check_memory(self, n_train: int, n_val: int, n_classes: int) -> list[memory.RunMemory]:
        """Every CPU run's memory against the limit, before anything runs (`memory.check`).

        Raises:
            memory.TooBig: the first run that cannot fit, with the largest batch and input size that would.
        """
        out = []
        for run in self.runs():
            try:
                need = memory.check_run(run, self.limits, n_train, n_val, n_classes)
            except memory.TooBig:
                raise
            except CNNCompareError:  # a model that cannot take the input size: that run fails in its own row
                continue
            if need is not None:
                out.append(need)
        return out

    def runs(self) -> list[PlannedRun]:
        """Each entry resolved, with a label that is unique in the plan ('#2' added to repeats): resolved once, and
        again only when a field of the plan was changed since (the app adds a visitor's weights files, say)."""
        key = repr((self.entries, self.model_defaults, self.settings, self.limits, sorted(self.weights_files.items())))
        memo = self.__dict__.get("_resolved")
        if memo is None or memo[0] != key:
            memo = self.__dict__["_resolved"] = (key, tuple(self._resolve()))
        return list(memo[1])

    def _resolve(self) -> list[PlannedRun]:
        out, seen = [], set()
        for e in self.entries:
            label = base = e.label(self.model_defaults.freeze)
            n = 2
            while label in seen:
                label, n = f"{base} #{n}", n + 1
            seen.add(label)
            entry, settings = e.resolve(self.model_defaults, self.settings)
            if entry.pretrained and not entry.weights_file and entry.model in self.weights_files:
                entry = dataclasses.replace(entry, weights_file=self.weights_files[entry.model])
            budget = self.limits.budget(settings.time_budget_s)
            if budget != settings.time_budget_s:
                settings = dataclasses.replace(settings, time_budget_s=budget)
            out.append(PlannedRun(label, entry, settings))
        return out


def _random_frozen(run: PlannedRun) -> str | None:
    """A run that freezes layers it starts from random weights (the CLI's defaults do): say what it will learn."""
    if run.entry.pretrained or run.policy.kind == "none" or (run.policy.kind == "layers" and run.policy.k == 0):
        return None
    return (
        f"starts from random weights and keeps {run.policy} frozen: those layers stay random, so only the rest "
        "learns, from random features (start from ImageNet weights, --pretrained, or freeze nothing, @none)"
    )


def _weights_fallback(run: PlannedRun, policy: MissingWeights) -> tuple[PlannedRun, str | None]:
    """Apply the missing-weights policy: (the run to do, the reason when it starts from random weights)."""
    e = run.entry
    if not e.pretrained or e.weights_file or models.pretrained_available(e.model):
        return run, None
    if policy == "fail":
        raise CNNCompareError(
            f"No pretrained ImageNet weights for {e.model} here (offline or not downloadable); "
            "give a weights file, allow random weights, or turn pretrained off."
        )
    frozen = _random_frozen(dataclasses.replace(run, entry=dataclasses.replace(e, pretrained=False)))
    what = "a frozen backbone is only a weak, random feature extractor" if frozen else "it trains from scratch"
    reason = f"no pretrained ImageNet weights for {e.model} here (offline): started from random weights, so {what}"
    return dataclasses.replace(run, entry=dataclasses.replace(e, pretrained=False)), reason


def run_plan(
    plan: Plan,
    dataset,
    *,
    out_dir: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    owner: str | None = None,
    share: Any = None,  # a server.sharing.Share (the server's layer; the engine only calls it)
) -> Iterator[training.Event]:
    """Events of every run in turn, each labelled; each run ends with an "end" event carrying its RunResult.

    Decoded images are shared by the runs and released when the comparison ends. `owner` is recorded in each
    run folder (who made it, on a shared server). With `share`, a run identical to one this server finished or
    is running is copied or followed instead of computed again (`server.sharing.SharedRuns`).
    """
    should_stop = should_stop or (lambda: False)

    def compute(labels: list[str]) -> Iterator[training.Event]:
        try:
            for run in plan.runs():
                if run.label in labels:
                    yield from one_run(run, plan, dataset, out_dir, should_stop, owner)
        finally:
            placement.release_data()

    return run_shared(
        plan, compute, out_dir=out_dir, should_stop=should_stop, owner=owner, share=share, classes=dataset.classes
    )


def run_shared(
    plan: Plan,
    compute: Callable[[list[str]], Iterator[training.Event]],
    *,
    out_dir: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    owner: str | None = None,
    share: Any = None,
    claims: dict[str, str] | None = None,
    classes=(),
) -> Iterator[training.Event]:
    """`run_plan` where the runs this comparison computes come from `compute(labels)` (the events of those runs, in
    the plan's order: in this process, or from a worker: `executor`), and the others are followed or copied.

    `claims` (label -> 'mine' | 'own' | 'live' | 'done', `sharing.Share.claim_all`): made when the comparison was
    admitted; without them, every run is claimed here. A compute stream that ends early (its worker killed, over
    its memory) fails the run it was in with its sentence, and the runs after it as not started."""
    should_stop = should_stop or (lambda: False)
    runs = plan.runs()
    keys = {run.label: share.key(run) if share is not None else None for run in runs}
    if claims is None:
        claims = {
            r.label: "own" if keys[r.label] is None else share.registry.claim(keys[r.label], share.token) for r in runs
        }
    mine = [r.label for r in runs if claims.get(r.label) in ("mine", "own")]
    stream = compute(mine) if mine else iter(())
    ended: list[str] = []  # why the stream ended early, once it has
    try:
        for run in runs:
            key = keys[run.label]
            if run.label not in mine:
                yield from share.registry.follow(key, run.label, out_dir, owner, should_stop)
                continue
            events = _until_end(stream, run, classes, ended)
            yield from (_published(events, share, key) if key is not None else events)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _until_end(
    stream: Iterator[training.Event], run: PlannedRun, classes, ended: list[str]
) -> Iterator[training.Event]:
    """The events of `run` from a stream of several runs' events: up to its "end"."""
    if not ended:
        try:
            for ev in stream:
                yield ev
                if ev.kind == "end" and ev.label == run.label:
                    return
            ended.append("not started: the comparison ended before it")
        except CNNCompareError as err:  # the worker ended (`executor.JobEnded`), or its data could not be read
            yield _failed(run, classes, str(err))
            ended.append(f"not started: {err}")
            return
    yield _failed(run, classes, ended[0])


def _published(events: Iterator[training.Event], share: Any, key: str | None) -> Iterator[training.Event]:
    """A computed run's events, passed on to the visitors who follow the same run (when it is shared)."""
    result = None
    try:
        for ev in events:
            share.registry.publish(key, ev)
            if ev.kind == "end":
                result = ev.result
            yield ev
    finally:
        share.registry.finish(key, result)


def one_run(run: PlannedRun, plan: Plan, dataset, out_dir, should_stop, owner=None) -> Iterator[training.Event]:
    """The events of one planned run on a loaded dataset, ending with its "end" (failed with one sentence when it
    cannot run: the engine's rules, out of memory, a model-specific error)."""
    classes = dataset.classes
    if should_stop():
        yield _failed(run, classes, "not started: stopped by user")
        return
    store = None
    try:
        run, reason = _weights_fallback(run, plan.missing_weights)
        note = reason or _random_frozen(run)
        if note:
            yield training.Event("info", run.entry.model, label=run.label, message=f"{run.label}: {note}")
        models.check_entry(run.entry, run.settings.size)
        memory.check_run(run, plan.limits, len(dataset.train), len(dataset.val), len(dataset.classes))
        store = RunStore(out_dir, run.entry.model, owner) if out_dir and runtime.is_main_process() else None
        for ev in training.run(run.entry, run.settings, dataset, label=run.label, should_stop=should_stop, store=store):
            if ev.kind == "end" and note:
                ev.result.warnings.insert(0, note)
                if reason:
                    ev.result.config["pretrained_asked"] = True
            yield ev
    except CNNCompareError as err:
        yield _failed(run, classes, str(err), store)
    except torch.OutOfMemoryError:
        yield _failed(
            run, classes, f"out of memory at {run.settings.size} px: try a smaller batch or input size", store
        )
    except Exception as err:  # any other model-specific failure: report it, run the next model
        yield _failed(run, classes, f"{type(err).__name__}: {first_line(err)[:200]}", store)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _failed(run: PlannedRun, classes, message: str, store=None) -> training.Event:
    if store is not None and not any(store.path.iterdir()):
        store.path.rmdir()  # failed before it started (e.g. weights offline): leave no empty folder
        store = None
    result = training.RunResult(
        name=run.entry.model,
        config=training.run_config(run.entry, run.settings),
        classes=list(classes),
        label=run.label,
        error=message,
        run_dir=str(store.path) if store else None,
    )
    return training.Event(
        "end", run.entry.model, label=run.label, message=f"{run.label}: failed: {message}", result=result
    )


def run_comparison(plan: Plan, dataset, *, out_dir=None, on_event=None, should_stop=None) -> list[training.RunResult]:
    """Run a whole plan, one run after another.

    Args:
        plan: the runs and shared settings (`Plan.parse("resnet18@head, vgg11@stages:2", ...)`).
        dataset: a `LoadedData` (`load_dataset(...)`).
        out_dir: where run folders go (None: nothing written).
        on_event: called with every `training.Event` (each carries its run's label).
        should_stop: polled every step; True stops the current run and skips the rest.

    Returns:
        One RunResult per run, in plan order; a run that failed has `error` set, the others still ran.
    """
    results = []
    for ev in run_plan(plan, dataset, out_dir=out_dir, should_stop=should_stop):
        if on_event:
            on_event(ev)
        if ev.kind == "end":
            results.append(ev.result)
    return results


# --------------------------------------------------------------------------- tables and export

TABLE_COLUMNS = [
    "run",
    "model",
    "freeze",
    "val_top1",
    "val_top5",
    "best_epoch",
    "epochs",
    "train_time_s",
    "images_per_s",
    "warmup_s",
    "batch_size",
    "trainable_params",
    "params",
    "macs",
    "latency_ms",
    "feature_cache",
    "weights",
    "stopped",
    "error",
    "warnings",
    "run_dir",
]


_NOT_COMPARED = ("freeze", "batch_size")  # what may differ between the runs of a sweep (batch: after OOM)


def freeze_sweep_rows(results: list[training.RunResult]) -> list[dict] | None:
    """Points of `plots.freeze_sweep` when the runs are a freeze-depth sweep, else None.

    A sweep is one model trained under at least three freeze policies with every other setting
    the same; a run that failed or finished no epoch is left out.
    """
    done = [r for r in results if not r.error and r.val_top1 is not None]
    if len(done) < 3:
        return None
    same = [{k: v for k, v in r.config.items() if k not in _NOT_COMPARED} for r in done]
    if any(c != same[0] for c in same) or len({r.config.get("freeze") for r in done}) != len(done):
        return None
    return [
        dict(
            label=r.label,
            freeze=r.config.get("freeze"),
            val_acc=r.val_top1 / 100,
            train_s=r.train_time_s,
            trainable=r.trainable_params,
        )
        for r in done
    ]


def table_rows(results: list[training.RunResult]) -> list[dict]:
    """One flat row per run (the CLI's --json, the app's table, the CSV); run_dir is the folder's name only."""
    rows = []
    for r in results:
        rows.append(
            dict(
                run=r.label or r.name,
                model=r.name,
                freeze=r.config.get("freeze"),
                val_top1=r.val_top1,
                val_top5=r.val_top5,
                best_epoch=r.best_epoch,
                epochs=r.final_epoch,
                train_time_s=r.train_time_s,
                images_per_s=r.images_per_s,
                warmup_s=r.warmup_s,
                batch_size=r.batch_size,
                trainable_params=r.trainable_params,
                params=r.params,
                macs=r.macs,
                latency_ms=r.latency_ms,
                feature_cache=r.feature_cache,
                weights=r.weights_source,
                stopped=r.stopped,
                error=r.error,
                warnings="; ".join(r.warnings),
                run_dir=Path(r.run_dir).name if r.run_dir else None,
            )
        )
    return rows


SETTING_COLUMNS = [s.name for s in settings_of(ModelEntry) if s.name not in ("model", "freeze")] + [
    s.name for s in settings_of(TrainSettings)
]
# a setting the results table also reports as it happened (the batch used, the epochs done, the cache used) is
# written once each, under its own name: `batch_size` the batch used, `batch_size_asked` the setting
ASKED = {k: f"{k}_asked" for k in SETTING_COLUMNS if k in TABLE_COLUMNS}


def _settings_row(r: training.RunResult) -> dict:
    row = {ASKED.get(k, k): r.config.get(k) for k in SETTING_COLUMNS}
    if r.config.get("pretrained_asked") and not r.config.get("pretrained"):
        row["pretrained"] = "requested, not available"  # the run started from random weights: said, not hidden
    return row


def _result_json(r: training.RunResult) -> dict:
    d = r.to_dict()
    d["run_dir"] = Path(r.run_dir).name if r.run_dir else None
    return _json_safe(d)


def export(
    results: list[training.RunResult], out_dir: str | Path, *, stamp: str | None = None, include_weights: bool = True
) -> list[Path]:
    """Write results.csv, results.json and a zip of the run folders under `out_dir`; returns the three paths.

    The CSV has one row per run with every metric and setting; no absolute server paths are
    written anywhere. The zip is written to a temporary name and renamed, so it is whole or absent.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = stamp or dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rows = [{**row, **_settings_row(r)} for r, row in zip(results, table_rows(results))]
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS + [ASKED.get(k, k) for k in SETTING_COLUMNS])
        writer.writeheader()
        writer.writerows(_json_safe(rows))
    json_path = out / "results.json"
    json_path.write_text(json.dumps([_result_json(r) for r in results], indent=2, default=str, allow_nan=False))
    zip_path = out / f"cnncompare-runs-{stamp}.zip"
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        zf.write(csv_path, "results.csv", compress_type=zipfile.ZIP_DEFLATED)
        zf.write(json_path, "results.json", compress_type=zipfile.ZIP_DEFLATED)
        for r in results:
            if not r.run_dir or not Path(r.run_dir).is_dir():
                continue
            run_dir = Path(r.run_dir)
            for f in sorted(run_dir.rglob("*")):
                if not f.is_file() or is_partial(f) or (f.suffix == ".safetensors" and not include_weights):
                    continue
                # weights are incompressible floats: store them, deflate the text files
                method = zipfile.ZIP_STORED if f.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
                zf.write(f, f"{run_dir.name}/{f.relative_to(run_dir).as_posix()}", compress_type=method)
    return [csv_path, json_path, zip_path]
