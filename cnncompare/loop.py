"""The parts of a training run, with their field's names, in the spirit of torchvision's
references/classification/train.py: `train_one_epoch`, `evaluate`, `extract_features`, the optimizer
(`make_optimizer`), the learning-rate schedule (`lr_factor`) and the one rule for what a run may cache
(`cache_point`). `training.run` strings them together.

Speed on a GPU: loss and accuracy accumulate on the device and are read only when an event is due
(about twice a second) or an epoch ends, so the host never waits for the GPU per step. The first steps
(cuDNN autotuning, allocator warm-up) are timed apart from the steady state.

When everything before the classifier is frozen and augmentation is off, the frozen part runs once over
the data ("feature cache") and only the head trains on the stored outputs.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import models, runtime
from .errors import CNNCompareError
from .inputs import Normalizer, augment_batch, model_inputs
from .serving import GATE, Turn
from .settings import TrainSettings

__all__ = [
    "EVENT_EVERY_S",
    "WARMUP_STEPS",
    "EVAL_BATCH",
    "EXTRACT_BATCH",
    "Loop",
    "RunState",
    "Stop",
    "Diverged",
    "seed_everything",
    "resolve_batch_size",
    "make_optimizer",
    "lr_factor",
    "lr_curve",
    "classifier_only",
    "can_cache_features",
    "cache_point",
    "cached_head",
    "set_train_mode",
    "steps_per_epoch",
    "index_batches",
    "train_one_epoch",
    "evaluate",
    "extract_features",
]

EVENT_EVERY_S = 0.5  # step events (and the device reads they need) at most this often
WARMUP_STEPS = 3  # steps timed apart: cuDNN autotuning and allocator warm-up happen there
EVAL_BATCH = 128  # evaluation's smallest batch: no gradients are kept, so a bigger batch is cheaper per image
EXTRACT_BATCH = 64  # the feature cache's smallest batch, likewise


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
    if settings.optimizer in ("momentum", "nesterov"):
        nesterov = settings.optimizer == "nesterov"
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=nesterov, weight_decay=wd, **fused)
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


def lr_curve(settings: TrainSettings, steps_per_epoch: int = 20) -> tuple[list[float], list[float]]:
    """(epoch, learning rate) at every step of a run with `steps_per_epoch` steps: the schedule `lr_factor` sets."""
    steps = range(settings.epochs * steps_per_epoch)
    return [k / steps_per_epoch for k in steps], [settings.lr * lr_factor(settings, k, steps_per_epoch) for k in steps]


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
    turn: Turn | None = None  # the run's turns at the cores: it pauses for interactive work (`serving.Gate`)

    def __post_init__(self):
        if self.train_module is None:
            self.train_module = self.model
        if self.turn is None:
            self.turn = GATE.turn()

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def inputs(self, xb: torch.Tensor, train: bool = False) -> torch.Tensor:
        """uint8 batch on the device -> normalised float batch at the input size, in the model's memory format."""
        x = model_inputs(xb, self.norm, self.size, self.interpolation)
        if train and self.augment:
            x = augment_batch(x, self.gen)
        return x.contiguous(memory_format=self.precision.memory_format)


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
    first_loss: float | None = None  # the first reading: a loss far above it means the run diverged

    def steady_images_per_s(self) -> float | None:
        """Images per second after the warm-up steps (all steps when the run had no more)."""
        t, n = self.train_time - self.warmup_time, self.images - self.warmup_images
        if n > 0 and t > 0:
            return n / t
        return self.images / self.train_time if self.train_time else None


class Stop(Exception):
    """Raised between steps to end a run early; its message says why ("stopped by user", "time budget")."""


class Diverged(CNNCompareError):
    """The loss became NaN or infinite, or grew far beyond its first value."""


DIVERGED_FACTOR = 1000.0  # a loss this many times its first value (at least 1) has left training behind


def _read_running(
    loss_sum: torch.Tensor, correct: torch.Tensor, seen: torch.Tensor, dist: runtime.Dist, state: RunState | None = None
) -> tuple[float, float, int]:
    """(mean loss, accuracy %, images) so far, summed over the processes.

    Raises:
        Diverged: a loss that is NaN or infinite, or (with `state`) over DIVERGED_FACTOR times the run's first one
        (SGD at lr 10 reached 4e27 and was once reported done).
    """
    totals = dist.sum(torch.stack([loss_sum.double(), correct.double(), seen.double()])).tolist()
    n = max(1.0, totals[2])
    loss = totals[0] / n
    if not math.isfinite(loss):
        raise Diverged("diverged: the loss became NaN or infinite; lower the learning rate.")
    if state is not None:
        if state.first_loss is None:
            state.first_loss = loss
        elif loss > DIVERGED_FACTOR * max(state.first_loss, 1.0):
            raise Diverged(
                f"diverged: the loss grew from {state.first_loss:.3g} to {loss:.3g}; lower the learning rate."
            )
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
            for waiting in loop.turn.pauses():  # interactive work first: wait at this step boundary
                yield dict(step=step - 1, steps=steps, paused=waiting, epoch_time=time.perf_counter() - t_epoch)
                check_stop()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
        with loop.turn.step():
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
            loss_value, _, seen_all = _read_running(loss_sum, correct, seen, dist, state)  # reads the device: waits
            yield dict(
                step=step, steps=steps, loss=loss_value, lr=lr, epoch_time=time.perf_counter() - t_epoch, seen=seen_all
            )
    loss_value, acc, seen_all = _read_running(loss_sum, correct, seen, dist, state)
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
    except Stop as err:
        why = str(err)
    if dist.any(why is not None, device):
        raise Stop(why or "stopped by user")


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
    batch = max(loop.batch_size, EVAL_BATCH)
    logits = []
    n = len(split)
    with loop.precision.autocast():
        if feats is not None:
            head = cached_head(model, loop.cached_at)
            for i in range(0, n, batch):
                logits.append(head(feats[i : i + batch]).float())
        else:
            for _, xb, _ in _in_order(split, batch):
                loop.turn.wait()  # interactive work first, between batches
                with loop.turn.step():
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
    batch = max(loop.batch_size, EXTRACT_BATCH)
    model.eval()
    out = []
    for _, xb, _ in _in_order(split, batch):
        check_stop()
        loop.turn.wait()  # interactive work first, between batches
        with loop.turn.step(), torch.inference_mode(), loop.precision.autocast():
            f = model.forward_features(loop.inputs(xb))
            if at == "pre-logits":
                f = model.forward_head(f, pre_logits=True)
            out.append(f.float())
    return torch.cat(out).clone()  # clone: leave inference mode so autograd can use it


def cached_head(model: nn.Module, at: str | None) -> nn.Module:
    """What runs on stored tensors: the classifier alone (pre-logits) or the whole head (features)."""
    return classifier_only(model) if at == "pre-logits" else _Head(model)
