"""Fine-tune one model on one dataset, reporting events as it goes.

`run(...)` strings the parts of `cnncompare.loop` (`train_one_epoch`, `evaluate`,
`extract_features`) together as a generator of `Event`s (the UI streams it, and closing it stops
the run); `fine_tune(...)` drives it with a callback and returns the `RunResult`.

Speed on a GPU: the decoded images go to the device once when they fit a memory budget (else
they stay in pinned memory and are copied asynchronously); normalisation and augmentation run
on the device (`cnncompare.inputs`). A CUDA out-of-memory error before the first epoch ends
restarts the run with half the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from . import data, models, profiling, runtime
from .data.placement import StreamedData, device_budget, place_split
from .errors import CNNCompareError, first_line
from .inputs import Normalizer, model_inputs
from .loop import (
    WARMUP_STEPS,
    Diverged,
    Loop,
    RunState,
    Stop,
    cache_point,
    cached_head,
    can_cache_features,
    classifier_only,
    evaluate,
    extract_features,
    lr_factor,
    make_optimizer,
    resolve_batch_size,
    seed_everything,
    set_train_mode,
    steps_per_epoch,
    train_one_epoch,
)
from .serving import GATE, Turn
from .settings import OPTIMIZERS, SCHEDULES, ModelEntry, TrainSettings

__all__ = [
    "Event",
    "EventKind",
    "RunResult",
    "run",
    "fine_tune",
    "run_config",
    # the parts (cnncompare.loop), named here too: a run is made of them
    "train_one_epoch",
    "evaluate",
    "extract_features",
    "make_optimizer",
    "lr_factor",
    "can_cache_features",
    "cache_point",
    "classifier_only",
    "resolve_batch_size",
    "seed_everything",
    "set_train_mode",
    "model_inputs",
    "Normalizer",
    "Diverged",
    "OPTIMIZERS",
    "SCHEDULES",
    "WARMUP_STEPS",
]

EventKind = Literal["start", "info", "step", "pause", "epoch", "end"]


@dataclass
class Event:
    """Something a run reports: its start, progress, an epoch's metrics, or its end (with the result)."""

    kind: EventKind
    model: str
    epoch: int = 0  # 1-based; 0 before the first epoch
    epochs: int = 0
    step: int = 0  # within the epoch
    steps: int = 0  # per epoch
    loss: float | None = None
    train_acc: float | None = None
    val_loss: float | None = None
    val_top1: float | None = None
    lr: float | None = None
    images_per_s: float | None = None  # on "epoch" events: steady state, after the warm-up steps
    warmup_s: float | None = None  # on "epoch" events: seconds of the first steps (autotuning), timed apart
    elapsed_s: float = 0.0
    eta_s: float | None = None
    message: str = ""
    result: RunResult | None = None
    label: str = ""  # the run's label in its comparison ('resnet18@none lr=0.05'); the model name when alone

    @property
    def progress(self) -> float:
        """Fraction of this run done, 0..1."""
        if not self.epochs:
            return 0.0
        done = (self.epoch - 1 + (self.step / self.steps if self.steps else 1)) if self.epoch else 0
        return min(1.0, max(0.0, done / self.epochs))


@dataclass
class RunResult:
    """What a run produced. `error` means it failed; `warnings` that it trained but something beside failed."""

    name: str
    config: dict  # model entry + training settings, flat (as in the run's config.json)
    classes: list[str]
    label: str = ""
    val_top1: float | None = None  # percent
    val_top5: float | None = None  # percent, with 5 classes or more
    per_class_acc: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, columns: predicted
    val_pred: list[int] = field(default_factory=list)  # predicted class of each validation image, in split order
    val_conf: list[float] = field(default_factory=list)  # its softmax probability
    best_epoch: int | None = None
    final_epoch: int = 0
    train_time_s: float = 0.0  # training steps + feature extraction; evaluation excluded
    images_per_s: float | None = None  # steady state: training images per second after the warm-up steps
    warmup_s: float | None = None  # time of the first WARMUP_STEPS steps (autotuning, allocation)
    batch_size: int | None = None  # the batch actually used (auto, or lowered after running out of memory)
    peak_mem_mb: float | None = None  # MiB: CUDA max allocated, or the process's peak RSS on a CPU
    params: int | None = None
    trainable_params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    feature_cache: bool = False
    cached_at: str | None = None  # "pre-logits" (all but the classifier frozen) or "features" (see `cache_point`)
    data_on_device: bool = False
    stopped: str | None = None  # why it ended early: "stopped by user", "time budget"
    history: list[dict] = field(default_factory=list)
    device: str = ""
    weights_source: str = ""
    run_dir: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    shared_with: int | None = None  # computed once on a server and copied: how many visitors have it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        """A result as its results.json holds it (fields it lacks keep their defaults; unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def run_config(entry: ModelEntry, settings: TrainSettings) -> dict:
    """The flat dict a run records: model entry fields, then training settings.

    A weights file is recorded by its name only: a run folder, its downloads and its label never carry a
    path of the machine it ran on (such a run saves all its weights, so the file is not needed again).
    """
    config = {**entry.to_dict(), **settings.to_dict()}
    if config.get("weights_file"):
        config["weights_file"] = Path(config["weights_file"]).name
    return config


# --------------------------------------------------------------------------- one run


def run(
    entry: ModelEntry,
    settings: TrainSettings,
    dataset: data.LoadedData,
    *,
    label: str = "",
    should_stop: Callable[[], bool] | None = None,
    store=None,
) -> Iterator[Event]:
    """Fine-tune `entry.model` on `dataset`, yielding events; the last event has kind "end" and a result.

    Args:
        entry: the model, its weights and freeze policy.
        settings: the training settings.
        dataset: a `data.LoadedData` (train and val splits, classes, report).
        label: the run's name in its comparison (default: the model name); every event carries it.
        should_stop: polled every step; True ends the run at that step.
        store: a `runs.RunStore` that receives the config, each epoch's metrics, the results and weights.

    A stop (flag, time budget, or the consumer closing this generator) ends the run at the next
    step; the weights saved are those of the last finished epoch, so they always match the
    metrics saved with them. A CUDA out-of-memory error before the first epoch ends restarts the
    run with half the batch (down to 8), said in an "info" event.

    Raises:
        CNNCompareError: bad settings, an unknown model, input too small, weights unavailable.
    """
    models.check_entry(entry, settings.size)
    device = runtime.resolve_device(settings.device)
    dist = runtime.Dist.current(device.type)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    batch = resolve_batch_size(settings, device)
    if batch < dist.world:
        raise CNNCompareError(
            f"Batch {batch} cannot be shared by {dist.world} processes: use a batch of at least {dist.world}."
        )
    label = label or entry.model
    with runtime.cpu_threads(device):
        while True:
            attempt = _Attempt(entry, settings, dataset, label, batch, device, should_stop, store, dist)
            try:
                yield from attempt.events()
                return
            except torch.OutOfMemoryError:
                if attempt.finished_epochs or batch <= 8 or device.type != "cuda" or dist.world > 1:
                    raise
                attempt.discard()
                batch //= 2
                torch.cuda.empty_cache()
                yield Event(
                    "info",
                    entry.model,
                    label=label,
                    message=f"{label}: out of GPU memory; starting again with batch {batch}",
                )


class _Attempt:
    """One try at a run with one batch size (`run` retries with a smaller batch on out-of-memory)."""

    def __init__(self, entry, settings, dataset, label, batch, device, should_stop, store, dist):
        self.entry, self.settings, self.dataset, self.label = entry, settings, dataset, label
        self.batch, self.device, self.dist = batch, device, dist
        self.store = store if dist.main else None  # under torchrun, rank 0 writes the run
        self.should_stop = should_stop or (lambda: False)
        self.finished_epochs = 0
        self.store_started = False

    def discard(self) -> None:
        """Forget a failed attempt's files (none finished an epoch), so the retry starts clean."""
        if self.store is not None and self.store_started:
            self.store.reset()

    def event(self, kind: EventKind, **kw) -> Event:
        return Event(kind, self.entry.model, label=self.label, **kw)

    def events(self) -> Iterator[Event]:
        entry, s, device = self.entry, self.settings, self.device
        seed_everything(s.seed)
        classes = list(self.dataset.classes)
        model = models.build_frozen(entry, len(classes), s.size)
        params, trainable = models.count_params(model)
        if trainable == 0:
            raise CNNCompareError(f"Nothing left to train in {entry.model} with freeze={entry.freeze}.")
        config = {**run_config(entry, s), "batch_size": self.batch}
        result = RunResult(
            name=entry.model,
            config=config,
            classes=classes,
            label=self.label,
            params=params,
            trainable_params=trainable,
            device=runtime.device_label(device),
            batch_size=self.batch,
            weights_source=model.cnncompare.weights_source,
        )
        if self.store is not None:
            self.store.start(config, self.dataset, result)
            self.store_started = True
            result.run_dir = str(self.store.path)
        state = RunState(started=time.perf_counter())
        model_ref = [model]  # what to save if we are closed mid-run

        def check_stop() -> None:
            if self.should_stop():
                raise Stop("stopped by user")
            if s.time_budget_s and time.perf_counter() - state.started > s.time_budget_s:
                raise Stop("time budget")

        try:
            yield self.event(
                "start",
                epochs=s.epochs,
                message=f"{self.label}: {trainable:,} of {params:,} parameters train "
                f"({model.cnncompare.weights_source}) on {device}, batch {self.batch}",
            )
            yield from self._train(model, model_ref, result, state, check_stop)
        except Stop as why:
            result.stopped = str(why)
            _restore(model_ref[0], state, result)
        except Diverged as err:
            result.error = str(err)
            result.stopped = "diverged"
            _restore(model_ref[0], state, result)
        except GeneratorExit:  # the consumer closed us (UI cancel, tab closed): save what finished
            result.stopped = "stopped by user"
            _restore(model_ref[0], state, result)
            _finish(result, model_ref[0], s, device, state, self.store, profile=self.dist.main)
            raise
        _finish(result, model_ref[0], s, device, state, self.store, profile=self.dist.main)
        yield self.event(
            "end",
            epoch=result.final_epoch,
            epochs=s.epochs,
            elapsed_s=time.perf_counter() - state.started,
            val_top1=result.val_top1,
            message=_summary(result),
            result=result,
        )

    def _train(self, model, model_ref, result, state, check_stop) -> Iterator[Event]:
        s, device = self.settings, self.device
        model, loop, train, val = yield from self._setup(model, model_ref, result)
        f_train, f_val = yield from self._cached_features(loop, train, val, result, state, check_stop)
        loop.dist = self.dist
        loop.train_module = self.dist.wrap(cached_head(model, loop.cached_at) if loop.cached_at else model, device)
        criterion = nn.CrossEntropyLoss(label_smoothing=s.label_smoothing)
        optimizer = make_optimizer(s, (p for p in model.parameters() if p.requires_grad), device)
        steps = steps_per_epoch(len(train), self.batch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(s, k, steps))
        scaler = torch.amp.GradScaler("cuda", enabled=loop.precision.needs_scaler)
        loop_start = time.perf_counter()
        for epoch in range(1, s.epochs + 1):
            for p in train_one_epoch(loop, train, f_train, optimizer, scheduler, scaler, criterion, state, check_stop):
                if "paused" in p:  # interactive work first: this run waits at a step boundary, and says so
                    yield self.event(
                        "pause",
                        epoch=epoch,
                        epochs=s.epochs,
                        step=p["step"],
                        steps=p["steps"],
                        elapsed_s=time.perf_counter() - state.started,
                        message=f"{self.label}: paused for {p['paused']} request(s) of other visitors; "
                        "it resumes by itself",
                    )
                    continue
                now = time.perf_counter()
                done = (epoch - 1) * p["steps"] + p["step"]
                rate = (state.images + p["seen"]) / max(1e-9, state.train_time + p["epoch_time"])
                where = dict(epoch=epoch, epochs=s.epochs, step=p["step"], steps=p["steps"], loss=p["loss"], lr=p["lr"])
                if not p.get("done"):
                    yield self.event(
                        "step",
                        **where,
                        images_per_s=rate,
                        elapsed_s=now - state.started,
                        eta_s=(now - loop_start) / done * (s.epochs * p["steps"] - done),
                    )
                    continue
                yield self._epoch_done(model, loop, val, f_val, criterion, p, where, result, state, loop_start)

    def _setup(self, model, model_ref, result):
        """Generator returning (model on its device, the loop, the train and validation splits placed)."""
        s, device = self.settings, self.device
        if device.type == "cuda":
            runtime.configure_cuda()
        precision = runtime.precision_for(device, training=True)
        dcfg = models.data_config(model, s.size)
        interp = dcfg.get("interpolation", "bilinear")
        budget = device_budget(device)
        train = place_split(self.dataset.train, s.size, interp, device, budget)
        used = data.decoded_bytes(self.dataset.train, s.size) if train.on_device else 0
        val = place_split(self.dataset.val, s.size, interp, device, budget - used)
        result.data_on_device = device.type == "cuda" and train.on_device
        if isinstance(train, StreamedData):
            yield self.event(
                "info",
                epochs=s.epochs,
                message=f"{self.label}: the images are too many to decode into "
                "memory at once: they are read from their files batch by batch",
            )
        model = model.to(device=device, memory_format=precision.memory_format)
        model_ref[0] = model
        runtime.reset_peak_memory(device)
        gen = torch.Generator().manual_seed(s.seed)
        loop = Loop(
            model,
            Normalizer(dcfg["mean"], dcfg["std"]).to(device),
            precision,
            self.batch,
            s.size,
            s.augment,
            gen,
            dcfg.get("interpolation", "bilinear"),
            turn=Turn(GATE, on_pause=lambda paused: runtime.cpu_job_paused(device, paused)),
        )
        return model, loop, train, val

    def _cached_features(self, loop, train, val, result, state, check_stop):
        """Generator returning the stored features of both splits (None, None where nothing can be cached)."""
        s = self.settings
        cached_at = cache_point(loop.model, s)
        result.feature_cache, result.cached_at = cached_at is not None, cached_at
        loop.cached_at = cached_at
        if not cached_at:
            return None, None
        what = (
            "everything before the classifier is frozen: it runs once per image, in inference mode "
            "(dropout off), and each epoch trains the classifier on the stored outputs"
            if cached_at == "pre-logits"
            else "backbone frozen and no augmentation: computing its features once"
        )
        yield self.event(
            "info", epochs=s.epochs, elapsed_s=time.perf_counter() - state.started, message=f"{self.label}: {what}"
        )
        t0 = time.perf_counter()
        f_train = extract_features(loop, train, check_stop, cached_at)
        f_val = extract_features(loop, val, check_stop, cached_at)
        runtime.sync(self.device)
        state.train_time += time.perf_counter() - t0  # honest totals: extraction is training time
        state.warmup_time = state.train_time  # extraction is not steady-state head training
        return f_train, f_val

    def _epoch_done(self, model, loop, val, f_val, criterion, p, where, result, state, loop_start) -> Event:
        """An epoch's end: evaluate, record its row (and the best epoch), keep its weights, say so."""
        s, epoch, classes = self.settings, where["epoch"], result.classes
        val_m = evaluate(loop, val, f_val, criterion, len(classes))
        ips = state.steady_images_per_s()
        row = dict(
            epoch=epoch,
            train_loss=p["loss"],
            train_acc=p["acc"],
            val_loss=val_m["loss"],
            val_top1=val_m["top1"],
            val_top5=val_m["top5"],
            lr=p["lr"],
            images_per_s=ips,
            elapsed_s=time.perf_counter() - state.started,
        )
        best = max((h["val_top1"] for h in result.history), default=-1.0)
        result.history.append(row)
        result.final_epoch = self.finished_epochs = epoch
        if val_m["top1"] > best:
            result.best_epoch = epoch
        _fill_metrics(result, val_m, classes)
        if epoch < s.epochs:  # weights of the last finished epoch, restored if a stop comes mid-epoch
            state.snapshot = _changing_state(model)
        if self.store is not None:
            self.store.log_epoch(row)
        now = time.perf_counter()
        return self.event(
            "epoch",
            **where,
            train_acc=p["acc"],
            val_loss=val_m["loss"],
            val_top1=val_m["top1"],
            images_per_s=ips,
            warmup_s=state.warmup_time or None,
            elapsed_s=now - state.started,
            eta_s=(now - loop_start) / epoch * (s.epochs - epoch),
        )


def _changing_state(model: nn.Module) -> dict:
    """A copy of what training can change: the trained parameters and the buffers (BatchNorm statistics).

    Frozen weights never change, so copying them every epoch (VGG16's 134 M) would cost seconds for nothing.
    """
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k in trained or k in buffers}


def _restore(model: nn.Module, state: RunState, result: RunResult) -> None:
    """After a mid-epoch stop, go back to the weights the saved metrics describe."""
    if state.snapshot is not None and result.final_epoch:
        model.load_state_dict(state.snapshot, strict=False)


def _fill_metrics(result: RunResult, val: dict, classes: list[str]) -> None:
    conf = val["confusion"]
    result.val_top1, result.val_top5 = val["top1"], val["top5"]
    result.confusion = conf.tolist()
    result.val_pred, result.val_conf = val["pred"], val["prob"]
    totals = conf.sum(1).clamp(min=1)
    result.per_class_acc = {c: 100 * conf[i, i].item() / totals[i].item() for i, c in enumerate(classes)}


def _finish(
    result: RunResult, model: nn.Module, settings: TrainSettings, device, state: RunState, store, profile: bool = True
) -> None:
    result.train_time_s = state.train_time
    result.images_per_s = state.steady_images_per_s()
    result.warmup_s = state.warmup_time or None
    result.peak_mem_mb = runtime.peak_memory_mb(device)
    if not profile:
        return
    try:
        result.macs = profiling.count_macs(model, settings.size)
        # measured alone, in a moment nobody else asks for anything (up to 10 s; then it asks for the cores)
        with GATE.quiet(polite_s=10.0):
            lat, _, _, _ = profiling.measure_latency(model, settings.size, device, batch=1, budget_s=0.3)
        result.latency_ms = lat.p50
    except Exception as err:  # a profile is a nice-to-have: the run trained, so it is a warning
        result.warnings.append(f"profiling failed: {first_line(err)}")
    if store is not None:
        store.finish(result, model if result.final_epoch else None)


def _summary(r: RunResult) -> str:
    if r.error:
        return f"{r.label or r.name}: {r.error}"
    acc = f"val top-1 {r.val_top1:.1f}%" if r.val_top1 is not None else "no finished epoch"
    stop = f" ({r.stopped})" if r.stopped else ""
    cache = f", {r.cached_at} cache" if r.cached_at else ", feature cache" if r.feature_cache else ""
    return f"{r.label or r.name}: {acc} after {r.final_epoch} epoch(s), {r.train_time_s:.1f} s training{cache}{stop}"


def fine_tune(
    entry: ModelEntry,
    settings: TrainSettings,
    dataset,
    *,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    store=None,
    label: str = "",
) -> RunResult:
    """Run `run(...)` to its end, passing each event to `on_event`; returns the RunResult.

    Raises:
        CNNCompareError: as `run`.
    """
    result = None
    for event in run(entry, settings, dataset, label=label, should_stop=should_stop, store=store):
        if on_event:
            on_event(event)
        if event.kind == "end":
            result = event.result
    return result
