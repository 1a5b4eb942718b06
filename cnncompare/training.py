"""Fine-tune one model on one dataset: a plain loop in the spirit of torchvision's
references/classification/train.py, reporting events as it goes.

The parts have their field's names: `train_one_epoch`, `evaluate`, `extract_features`;
`run(...)` strings them together as a generator of `Event`s (the UI streams it, and closing
it stops the run); `fine_tune(...)` drives it with a callback and returns the `RunResult`.

Speed on a GPU: the decoded images go to the device once when they fit a memory budget (else
they stay in pinned memory and are copied asynchronously); normalisation and augmentation run
on the device; loss and accuracy accumulate on the device and are read only when an event is
due (about twice a second) or an epoch ends, so the host never waits for the GPU per step.
The first steps (cuDNN autotuning, allocator warm-up) are timed apart from the steady state.

When everything before the classifier is frozen and augmentation is off, the backbone runs
once over the data ("feature cache") and only the head trains on the stored features.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data, models, profiling, runtime
from .data.placement import StreamedData, device_budget, place_split
from .errors import CNNCompareError
from .settings import OPTIMIZERS, SCHEDULES, ModelEntry, TrainSettings, first_line

__all__ = [
    "Event",
    "EventKind",
    "RunResult",
    "Estimate",
    "run",
    "fine_tune",
    "estimate",
    "train_one_epoch",
    "evaluate",
    "extract_features",
    "make_optimizer",
    "lr_factor",
    "can_cache_features",
    "cache_point",
    "classifier_only",
    "run_config",
    "resolve_batch_size",
    "model_inputs",
    "OPTIMIZERS",
    "SCHEDULES",
]

EventKind = Literal["start", "info", "step", "epoch", "end"]
EVENT_EVERY_S = 0.5  # step events (and the device reads they need) at most this often
WARMUP_STEPS = 3  # steps timed apart: cuDNN autotuning and allocator warm-up happen there


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

    def to_dict(self) -> dict:
        return asdict(self)


def run_config(entry: ModelEntry, settings: TrainSettings) -> dict:
    """The flat dict a run records: model entry fields, then training settings.

    A weights file is recorded by its name only: a run folder, its downloads and its label never carry a
    path of the machine it ran on (such a run saves all its weights, so the file is not needed again).
    """
    config = {**entry.to_dict(), **settings.to_dict()}
    if config.get("weights_file"):
        config["weights_file"] = Path(config["weights_file"]).name
    return config


# --------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_batch_size(settings: TrainSettings, device: torch.device) -> int:
    """The batch a run uses: the setting, or (0 = auto) 32 on a CPU and 128 on a GPU."""
    if settings.batch_size:
        return settings.batch_size
    return 128 if device.type == "cuda" else 32


def make_optimizer(settings: TrainSettings, params, device: torch.device | None = None) -> torch.optim.Optimizer:
    """The optimizer the settings name, over `params`, with PyTorch's fused kernels where it has them.

    Fused kernels update each weight in one pass, on a GPU and on a CPU too: a CPU Adam step over VGG's
    133 M weights drops from about 0.9 s to 0.09 s (measured on this project's 2-core machine).
    """
    params = list(params)
    wd, lr = settings.weight_decay, settings.lr
    fused = {"fused": True} if device is None or device.type in ("cuda", "cpu") else {}
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, **fused)
    if settings.optimizer == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, **fused)
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, **fused)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **fused)
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9, weight_decay=wd)  # Keras' rho=0.9


def lr_factor(settings: TrainSettings, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at a global step: linear warm-up, then the schedule."""
    total = settings.epochs * steps_per_epoch
    warm = int(settings.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if settings.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * t))
    if settings.schedule == "step":  # x0.1 after each third of the run, as in the classic recipes
        every = max(1, math.ceil(settings.epochs / 3))
        return 0.1 ** ((step // steps_per_epoch) // every)
    return 1.0


class Normalizer(nn.Module):
    """uint8 NCHW batch -> float, normalised with the model's own mean/std."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random-resized crop (scale 0.5-1, ratio 3/4-4/3) of each float image.

    One batched affine resampling on the batch's own device; the random draws come from the
    run's CPU generator, so a seed gives the same augmentation on a CPU and a GPU.
    """
    n = x.shape[0]
    scale = torch.empty(n).uniform_(0.5, 1.0, generator=gen)
    ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen).exp()
    w = (scale * ratio).sqrt().clamp(max=1.0)  # crop width and height as fractions of the image
    h = (scale / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)  # crop centre, in [-1, 1] coordinates
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def classifier_only(model: nn.Module) -> nn.Module | None:
    """The classifier module when it is all that trains (every layer before it frozen), else None."""
    name = models.classifier_name(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if trainable and all(t.startswith(name + ".") for t in trainable):
        return model.get_submodule(name)
    return None


def can_cache_features(model: nn.Module) -> bool:
    """True when only head layers train: everything `forward_features` runs is frozen."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    heads = tuple(h + "." for h in model.cnncompare.head_modules)
    return bool(trainable) and all(t.startswith(heads) for t in trainable)


def cache_point(model: nn.Module, settings: TrainSettings) -> str | None:
    """Where a run may store the frozen part's output once and train on it every epoch.

    "pre-logits": only the classifier trains, so everything before it (VGG's and AlexNet's frozen
    fc6/fc7 included) runs once, in inference mode, as in the Keras feature-extraction guide; a
    VGG16 head run then costs about what a ResNet-50 head run costs. "features": a new multi-layer
    head trains, so the backbone's output is stored and the head runs every step. None: no cache
    (it is off, augmentation changes the images, or the backbone trains).
    """
    if not settings.feature_cache or settings.augment:
        return None
    if classifier_only(model) is not None:
        return "pre-logits"
    return "features" if can_cache_features(model) else None


def set_train_mode(model: nn.Module, train_module: nn.Module) -> None:
    """Train mode for what trains; frozen layers before a lone classifier stay in inference mode (dropout off).

    The same rule on the cached and the plain path keeps their results equal.
    """
    clf = classifier_only(model)
    if clf is not None:
        model.eval()
        clf.train()
    else:
        train_module.train()


# --------------------------------------------------------------------------- the parts


@dataclass
class Loop:
    """What every part of one run needs: the model's input pipeline, precision and batch."""

    model: nn.Module
    norm: Normalizer
    precision: runtime.Precision
    batch_size: int
    size: int
    augment: bool = False
    gen: torch.Generator | None = None
    interpolation: str = "bilinear"
    dist: runtime.Dist = field(default_factory=runtime.Dist)
    train_module: nn.Module | None = None  # what a training step calls: the model, its head, or their DDP wrapper
    cached_at: str | None = None  # `cache_point`: what the stored tensors are, when a step trains on them

    def __post_init__(self):
        if self.train_module is None:
            self.train_module = self.model

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def inputs(self, xb: torch.Tensor, train: bool = False) -> torch.Tensor:
        """uint8 batch on the device -> normalised float batch at the input size, in the model's memory format."""
        x = model_inputs(xb, self.norm, self.size, self.interpolation)
        if train and self.augment:
            x = augment_batch(x, self.gen)
        return x.contiguous(memory_format=self.precision.memory_format)


def model_inputs(xb: torch.Tensor, norm: Normalizer, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """uint8 images -> normalised float images at size x size (resized here when stored at another size)."""
    x = norm(xb)
    if x.shape[-2:] != (size, size):  # images kept at their stored size are resized per batch, on the device
        mode = "bicubic" if interpolation == "bicubic" else "bilinear"
        # antialiasing only changes a downscale, and its kernel is several times slower when upscaling
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=size < x.shape[-1])
    return x


@dataclass
class RunState:
    """Counters of one run, kept across epochs."""

    started: float
    train_time: float = 0.0
    images: int = 0
    warmup_time: float = 0.0
    warmup_images: int = 0
    steps_done: int = 0
    snapshot: dict | None = None  # weights of the last finished epoch

    def steady_images_per_s(self) -> float | None:
        """Images per second after the warm-up steps (all steps when the run had no more)."""
        t, n = self.train_time - self.warmup_time, self.images - self.warmup_images
        if n > 0 and t > 0:
            return n / t
        return self.images / self.train_time if self.train_time else None


class _Stop(Exception):
    pass


class Diverged(CNNCompareError):
    """The loss became NaN or infinite."""


def _read_running(
    loss_sum: torch.Tensor, correct: torch.Tensor, seen: torch.Tensor, dist: runtime.Dist
) -> tuple[float, float, int]:
    """(mean loss, accuracy %, images) so far, summed over the processes; raises Diverged on NaN/inf."""
    totals = dist.sum(torch.stack([loss_sum.double(), correct.double(), seen.double()])).tolist()
    n = max(1.0, totals[2])
    loss = totals[0] / n
    if not math.isfinite(loss):
        raise Diverged("diverged: the loss became NaN or infinite; lower the learning rate.")
    return loss, 100 * totals[1] / n, int(totals[2])


def steps_per_epoch(n: int, batch: int) -> int:
    """Steps of one epoch; a last batch of one image (which breaks BatchNorm in train mode) is dropped."""
    return n // batch if (n % batch == 1 and n > 1) else max(1, math.ceil(n / batch))


def index_batches(order: torch.Tensor, batch: int, steps: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """The indices of each step's batch; with `world` processes, this rank's share of each global batch."""
    return [order[k * batch : (k + 1) * batch][rank::world] for k in range(steps)]


def train_one_epoch(
    loop: Loop,
    train,
    feats: torch.Tensor | None,
    optimizer,
    scheduler,
    scaler,
    criterion,
    state: RunState,
    check_stop: Callable[[], None],
) -> Iterator[dict]:
    """One pass over the training data; yields a progress dict about every EVENT_EVERY_S and the epoch's totals last.

    Loss and correct predictions accumulate on the device: the host reads them only when it
    yields, so the GPU is never waited for per step. Under torchrun each process trains on its
    share of every global batch and DistributedDataParallel averages the gradients; progress is
    summed over the processes, which all read it at the same steps.
    """
    device, dist = loop.device, loop.dist
    n = len(train.y)
    steps = steps_per_epoch(n, loop.batch_size)
    # the same order in every process (same seed), moved to the device once: a per-step copy of indices
    # from pageable host memory would make the host wait for the GPU at every step
    order = torch.randperm(n, generator=loop.gen).to(feats.device if feats is not None else train.index_device)
    batches = index_batches(order, loop.batch_size, steps, dist.rank, dist.world)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = torch.zeros((), device=device, dtype=torch.long)
    set_train_mode(loop.model, loop.train_module)
    t_epoch = time.perf_counter()
    last_event = t_epoch
    lr = optimizer.param_groups[0]["lr"]
    stream = (
        ((idx, None, train.y.to(idx.device)[idx]) for idx in batches) if feats is not None else train.batches(batches)
    )
    for step, (idx, xb, yb) in enumerate(stream, start=1):
        if dist.world == 1:
            check_stop()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
        with loop.precision.autocast():
            logits = loop.train_module(feats[idx] if feats is not None else loop.inputs(xb, True))
            loss = criterion(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += loss.detach().float() * len(yb)
        correct += (logits.detach().argmax(1) == yb).sum()
        seen += len(yb)
        state.steps_done += 1
        if state.steps_done == WARMUP_STEPS:  # one wait for the device, once per run: the warm-up's end
            runtime.sync(device)
            state.warmup_time = state.train_time + time.perf_counter() - t_epoch
            state.warmup_images = state.images + int(seen)
        now = time.perf_counter()
        if step < steps and _event_due(device, dist, step, now - last_event):
            last_event = now
            if dist.world > 1:
                _agreed_stop(dist, device, check_stop)
            loss_value, _, seen_all = _read_running(loss_sum, correct, seen, dist)  # reads the device: waits here
            yield dict(
                step=step, steps=steps, loss=loss_value, lr=lr, epoch_time=time.perf_counter() - t_epoch, seen=seen_all
            )
    loss_value, acc, seen_all = _read_running(loss_sum, correct, seen, dist)
    epoch_time = time.perf_counter() - t_epoch
    state.train_time += epoch_time
    state.images += seen_all
    yield dict(
        step=steps, steps=steps, loss=loss_value, acc=acc, lr=lr, epoch_time=epoch_time, seen=seen_all, done=True
    )


def _agreed_stop(dist: runtime.Dist, device: torch.device, check_stop: Callable[[], None]) -> None:
    """Under torchrun, stop every process together when any of them is asked to stop."""
    why = None
    try:
        check_stop()
    except _Stop as err:
        why = str(err)
    if dist.any(why is not None, device):
        raise _Stop(why or "stopped by user")


class _Head(nn.Module):
    """The model's head as a module, so DistributedDataParallel can wrap the feature-cache path."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(feats)


def _event_due(device: torch.device, dist: runtime.Dist, step: int, since_last: float) -> bool:
    if dist.world > 1:  # every process must read at the same steps (the read is a collective)
        return step % (1 if device.type == "cpu" else 25) == 0
    # on a CPU a read costs nothing, so every step reports; on a GPU a read waits for the device
    return device.type != "cuda" or since_last >= EVENT_EVERY_S


def _in_order(split, batch: int) -> Iterator[tuple]:
    n = len(split)
    return split.batches(index_batches(torch.arange(n, device=split.index_device), batch, math.ceil(n / batch)))


@torch.no_grad()
def evaluate(loop: Loop, split, feats: torch.Tensor | None, criterion, n_classes: int) -> dict:
    """Validation loss, top-1, top-5 (5+ classes) and the confusion matrix (rows: true class)."""
    model = loop.model
    model.eval()
    batch = max(loop.batch_size, 128)
    logits = []
    n = len(split)
    with loop.precision.autocast():
        if feats is not None:
            head = _cached_head(model, loop.cached_at)
            for i in range(0, n, batch):
                logits.append(head(feats[i : i + batch]).float())
        else:
            for _, xb, _ in _in_order(split, batch):
                logits.append(model(loop.inputs(xb)).float())
    logits = torch.cat(logits)
    y = split.y.to(logits.device)
    pred = logits.argmax(1)
    conf = torch.bincount(y * n_classes + pred, minlength=n_classes * n_classes).view(n_classes, n_classes)
    top5 = None
    if n_classes >= 5:
        top5 = 100 * (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    loss = criterion(logits, y).item()
    prob = logits.softmax(1).max(1).values
    return dict(
        loss=loss,
        top1=100 * (pred == y).float().mean().item(),
        top5=top5,
        confusion=conf.cpu(),
        pred=pred.cpu().tolist(),
        prob=[round(p, 4) for p in prob.cpu().tolist()],
    )


def extract_features(loop: Loop, split, check_stop: Callable[[], None], at: str = "features") -> torch.Tensor:
    """The frozen part's output for every image of a split, once, on the device.

    `at="features"`: `forward_features`; `at="pre-logits"`: everything before the classifier
    (`forward_head(..., pre_logits=True)`). Frozen layers run in eval mode, which is exact for
    them (FrozenBatchNorm2d) and, for dropout, the inference mode a frozen layer keeps in
    training too (`set_train_mode`). A stop request ends it between batches.
    """
    model = loop.model
    batch = max(loop.batch_size, 64)  # no gradients kept: a bigger batch is cheaper per image
    model.eval()
    out = []
    for _, xb, _ in _in_order(split, batch):
        check_stop()
        with torch.inference_mode(), loop.precision.autocast():
            f = model.forward_features(loop.inputs(xb))
            if at == "pre-logits":
                f = model.forward_head(f, pre_logits=True)
            out.append(f.float())
    return torch.cat(out).clone()  # clone: leave inference mode so autograd can use it


def _cached_head(model: nn.Module, at: str | None) -> nn.Module:
    """What runs on stored tensors: the classifier alone (pre-logits) or the whole head (features)."""
    return classifier_only(model) if at == "pre-logits" else _Head(model)


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
    settings.validate()
    entry.validate(settings.size)
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
        model = models.build(entry.spec(len(classes)))
        models.freeze(model, entry.freeze, s.size)
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
                raise _Stop("stopped by user")
            if s.time_budget_s and time.perf_counter() - state.started > s.time_budget_s:
                raise _Stop("time budget")

        try:
            yield self.event(
                "start",
                epochs=s.epochs,
                message=f"{self.label}: {trainable:,} of {params:,} parameters train "
                f"({model.cnncompare.weights_source}) on {device}, batch {self.batch}",
            )
            yield from self._train(model, model_ref, result, state, check_stop)
        except _Stop as why:
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
        s, device, classes = self.settings, self.device, result.classes
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
        )

        cached_at = cache_point(model, s)
        result.feature_cache, result.cached_at = cached_at is not None, cached_at
        f_train = f_val = None
        if cached_at:
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
            runtime.sync(device)
            state.train_time += time.perf_counter() - t0  # honest totals: extraction is training time
            state.warmup_time = state.train_time  # extraction is not steady-state head training
        loop.dist, loop.cached_at = self.dist, cached_at
        loop.train_module = self.dist.wrap(_cached_head(model, cached_at) if cached_at else model, device)
        criterion = nn.CrossEntropyLoss(label_smoothing=s.label_smoothing)
        optimizer = make_optimizer(s, (p for p in model.parameters() if p.requires_grad), device)
        steps = steps_per_epoch(len(train), self.batch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(s, k, steps))
        scaler = torch.amp.GradScaler("cuda", enabled=precision.needs_scaler)
        loop_start = time.perf_counter()
        best = -1.0
        for epoch in range(1, s.epochs + 1):
            for p in train_one_epoch(loop, train, f_train, optimizer, scheduler, scaler, criterion, state, check_stop):
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
                result.history.append(row)
                result.final_epoch = self.finished_epochs = epoch
                if val_m["top1"] > best:
                    best, result.best_epoch = val_m["top1"], epoch
                _fill_metrics(result, val_m, classes)
                if epoch < s.epochs:  # weights of the last finished epoch, restored if a stop comes mid-epoch
                    state.snapshot = _changing_state(model)
                if self.store is not None:
                    self.store.log_epoch(row)
                now = time.perf_counter()
                yield self.event(
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


# --------------------------------------------------------------------------- estimates


@dataclass
class Estimate:
    """How long a run should take here, part by part, from timing a few real steps of its model.

    Every part the run's wall time has is counted: building the model, the frozen part's features
    (cached runs), the epochs (training steps, optimizer, evaluation, the end-of-epoch copy of the
    trained weights) and the end (latency profile, the save and its rebuild check).
    """

    model: str
    seconds_per_epoch: float
    total_s: float
    feature_cache: bool
    device: str
    note: str = ""
    build_s: float = 0.0
    features_s: float = 0.0
    finish_s: float = 0.0
    took_s: float = 0.0  # how long this estimate took to make

    def to_dict(self) -> dict:
        return asdict(self)


def _secs(t: float) -> str:
    return f"{t:.1f} s" if t < 10 else f"{t:.0f} s"


def _timed(device: torch.device, fn, repeat: int = 1, budget_s: float = 0.25, warmup: bool = True) -> float:
    """Seconds per call of `fn`: the fastest of up to `repeat` timed calls (more while under `budget_s`),
    after one warm-up call (kernel selection, allocation).

    The fastest call is the machine's speed; a slower one met another program's burst on a shared machine.
    """
    if warmup:
        fn()
        runtime.sync(device)
    best, spent, calls = math.inf, 0.0, 0
    while calls < repeat or (spent < budget_s and calls < 3 * repeat):
        t0 = time.perf_counter()
        fn()
        runtime.sync(device)
        dt = time.perf_counter() - t0
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return best


_RATES: dict[str, tuple[float, float]] = {}


def _machine_rates(device: torch.device) -> tuple[float, float]:
    """(seconds to initialise one parameter at random, seconds to copy one byte), measured once per device."""
    key = str(device)
    if key not in _RATES:
        n = 2**22
        x = torch.empty(n)
        init = _timed(torch.device("cpu"), lambda: torch.nn.init.kaiming_normal_(x.view(2048, -1)), 2) / n
        copy = _timed(torch.device("cpu"), lambda: x.clone(), 3) / (4 * n)
        _RATES[key] = (init, copy)
    return _RATES[key]


def _timing_model(entry: ModelEntry, settings: TrainSettings, n_classes: int, device: torch.device) -> nn.Module:
    """The run's architecture, head and freeze policy with placeholder weights: no random init, no download.

    Weights of 1/fan-in keep activations at a steady scale through any depth; their values do not
    change how long a dense layer takes.
    """
    model = models.build(models.ModelSpec(entry.model, num_classes=n_classes, head=entry.head), device="meta")
    models.freeze(model, entry.freeze, settings.size)
    model = model.to_empty(device=device)
    fmt = runtime.precision_for(device, training=True).memory_format
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 4:  # in the run's memory format from the start: no copy of VGG's 400 MB fc6 later
                p.data = torch.empty_like(p, memory_format=fmt)
            p.fill_(1.0 / p[0].numel()) if p.dim() > 1 else p.fill_(1.0 if name.endswith("weight") else 0.0)
        for name, b in model.named_buffers():
            b.fill_(1) if "var" in name or name.endswith("weight") else b.zero_()
    return model


@dataclass(frozen=True)
class _StepTimes:
    """Measured once per architecture, freeze policy, input size, batch and device (`_step_times`).

    A pass over n images takes `fixed + n * per_image` seconds: on a CPU the fixed part (reading
    VGG's 120 M fully connected weights once per batch, whatever its size) matters as much as the
    per-image part, so a time measured at one batch size cannot simply be scaled per image.
    """

    params: int
    trainable: int
    cached: str | None
    forward: tuple[float, float]  # (fixed, per image): the frozen part (cached runs) or the model in eval mode
    train: tuple[float, float]  # (fixed, per image): forward + backward, or the classifier's step on stored tensors


_STEP_TIMES: dict[tuple, _StepTimes] = {}
_OPTIMIZER_RATES: dict[tuple, float] = {}


def _optimizer_rate(settings: TrainSettings, device: torch.device) -> float:
    """Seconds per trained parameter of one optimizer step: it reads and writes every trained weight and its
    state, so its cost follows the trained parameters, not the batch (VGG's 120 M-weight fc6/fc7 dominate)."""
    key = (settings.optimizer, settings.weight_decay > 0, str(device))
    if key not in _OPTIMIZER_RATES:
        n = 2**22
        p = nn.Parameter(torch.zeros(n, device=device))
        p.grad = torch.full_like(p, 1e-3)
        opt = make_optimizer(settings, [p], device)
        _OPTIMIZER_RATES[key] = _timed(device, opt.step, 2) / n
    return _OPTIMIZER_RATES[key]


def _fit(device: torch.device, call: Callable[[int], Callable[[], None]], b: int) -> tuple[float, float]:
    """(fixed seconds per call, seconds per image) of `call(batch)()`, from batches of b and b/4 on a CPU
    (one warm-up, at b/4: its cost is mostly allocating gradients, whatever the batch); on a GPU, b alone."""
    if device.type == "cuda" or b < 4:
        return 0.0, _timed(device, call(b)) / b
    lo = b // 4
    t_lo = _timed(device, call(lo))
    t_hi = _timed(device, call(b), warmup=False)
    per_image = max((t_hi - t_lo) / (b - lo), 0.0)
    return max(t_lo - per_image * lo, 0.0), per_image


def _step_times(entry: ModelEntry, settings: TrainSettings, n_classes: int, device, batch: int) -> _StepTimes:
    precision = runtime.precision_for(device, training=True)
    b = batch if device.type == "cuda" else min(batch, 8)  # small batches on a CPU: the estimate stays quick
    cache_kind = settings.feature_cache and not settings.augment
    key = (entry.model, entry.head, entry.freeze, settings.size, b, batch, cache_kind, str(device), n_classes)
    if key in _STEP_TIMES:
        return _STEP_TIMES[key]
    model = _timing_model(entry, settings, n_classes, device).to(memory_format=precision.memory_format)
    params, trainable = models.count_params(model)
    cached = cache_point(model, settings)
    x = torch.randn(b, 3, settings.size, settings.size, device=device)
    x = x.contiguous(memory_format=precision.memory_format)
    y = torch.randint(0, n_classes, (b,), device=device)
    model.eval()
    if cached:

        def frozen_part(t):
            f = model.forward_features(t)
            return model.forward_head(f, pre_logits=True) if cached == "pre-logits" else f

        def forward(n):
            def call():
                with torch.inference_mode(), precision.autocast():
                    frozen_part(x[:n])

            return call

        fwd = _fit(device, forward, b)
        with torch.no_grad():
            feats = frozen_part(x[:1]).float()
        head = _cached_head(model, cached)
        feats = feats.expand(batch, *feats.shape[1:]).contiguous()
        yb = torch.randint(0, n_classes, (batch,), device=device)
        set_train_mode(model, head)

        def head_step():
            with precision.autocast():
                loss = F.cross_entropy(head(feats), yb)
            loss.backward()

        train = (_timed(device, head_step, 3), 0.0)
    else:
        set_train_mode(model, model)

        def fwd_bwd(n):
            def call():
                with precision.autocast():
                    loss = F.cross_entropy(model(x[:n]), y[:n])
                loss.backward()

            return call

        train = _fit(device, fwd_bwd, b)
        fwd = (train[0] / 3, train[1] / 3)  # evaluation: a forward pass is about a third of forward + backward
    times = _StepTimes(params, trainable, cached, fwd, train)
    _STEP_TIMES[key] = times
    return times


def _passes(n: int, batch: int, cost: tuple[float, float]) -> float:
    """Seconds for n images in batches of `batch`, at (fixed, per image) seconds."""
    return math.ceil(n / batch) * cost[0] + n * cost[1] if n else 0.0


def estimate(entry: ModelEntry, settings: TrainSettings, n_train: int, n_val: int, n_classes: int) -> Estimate:
    """Time a few real steps of the run's model and add up the whole run, part by part.

    On a CPU the forward and backward passes are timed on batches of 8 and 2 images, fitted as a
    fixed cost per batch plus a cost per image, then added up at the run's batch sizes; the
    optimizer step (its cost follows the trained parameters, not the batch) comes from a step over
    4 M parameters. Cached runs time the frozen part and the classifier's step. Timings are kept
    per architecture, so a second run of the same model costs nothing.

    Raises:
        CNNCompareError: as `run`'s validation.
    """
    started = time.perf_counter()
    settings.validate()
    entry.validate(settings.size)
    device = runtime.resolve_device(settings.device)
    with runtime.cpu_threads(device):
        init_rate, copy_rate = _machine_rates(device)
        batch = min(resolve_batch_size(settings, device), max(1, n_train))
        t = _step_times(entry, settings, n_classes, device, batch)
        step_opt = t.trainable * _optimizer_rate(settings, device)
    params, cached = t.params, t.cached
    if cached:  # extraction runs in batches of 64 or more (`extract_features`); evaluation on stored tensors: ~free
        big = max(batch, 64)
        features = _passes(n_train, big, t.forward) + _passes(n_val, big, t.forward)
        per_epoch = (t.train[0] + step_opt) * math.ceil(n_train / batch)
    else:  # evaluation runs in batches of 128 or more (`evaluate`)
        features = 0.0
        per_epoch = _passes(n_train, batch, t.train) + step_opt * math.ceil(n_train / batch)
        per_epoch += _passes(n_val, max(batch, 128), t.forward)
    per_epoch += 4 * t.trainable * copy_rate  # the end-of-epoch copy of what trained
    # building touches every weight (random init or a file); timm's constructors measured 2.0-2.3x one
    # kaiming_normal_ pass per parameter on this project's CPU machines
    build = 2.2 * params * init_rate
    # the end: MACs on the meta device, ~0.3 s of batch-1 latency, the save (trained part only, after a
    # rebuild that checks the frozen part comes back bit for bit) or all the weights
    frozen = t.trainable < params
    one = sum(t.forward)
    finish = 0.8 + 5 * one + (build + 3 * params * 4 * copy_rate if frozen else 2 * params * 4 * copy_rate)
    total = build + features + per_epoch * settings.epochs + finish
    if cached == "pre-logits":
        note = f"frozen part run once (~{_secs(features)}), then ~{_secs(per_epoch)} per epoch for the classifier"
    elif cached:
        note = f"features computed once (~{_secs(features)}), then ~{_secs(per_epoch)} per epoch"
    else:
        note = f"~{_secs(per_epoch)} per epoch"
    return Estimate(
        entry.model,
        per_epoch,
        total,
        bool(cached),
        str(device),
        note,
        build_s=build,
        features_s=features,
        finish_s=finish,
        took_s=time.perf_counter() - started,
    )


def estimate_runs(runs, n_train: int, n_val: int, n_classes: int) -> list[Estimate]:
    """`estimate` for each planned run (`compare.PlannedRun`: `.entry`, `.settings`), in order.

    Raises:
        CNNCompareError: as `estimate`, for the first run that cannot be built.
    """
    return [estimate(r.entry, r.settings, n_train, n_val, n_classes) for r in runs]
