"""Fine-tune one model on one dataset: a plain loop in the spirit of torchvision's
references/classification/train.py, reporting events as it goes.

Images are decoded and resized once per run into a uint8 tensor (`data.to_tensors`);
each batch is then normalised (and optionally augmented) on the device. When everything
before the classifier is frozen and augmentation is off, the backbone runs once over the
data ("feature cache") and only the head trains on the stored features: the same result
as the plain frozen path without paying the backbone's forward pass every epoch.

`run(...)` is a generator of `Event`s (the UI streams it, and closing it stops the run);
`fine_tune(...)` drives it with a callback and returns the `RunResult`.
"""

from __future__ import annotations

import math
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from . import models, profiling
from .errors import CNNCompareError

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "cosine")


@dataclass
class TrainConfig:
    model: str
    freeze: str = "head"  # none | head | stages:K | layers:N
    head: str = "linear"
    pretrained: bool = False
    init: str = "default"
    weights_file: str | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 3
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    size: int = 64
    augment: bool = False
    device: str = "auto"
    time_budget_s: float | None = None
    feature_cache: bool = True  # use the cache when the policy allows it

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise CNNCompareError(f"Unknown optimizer '{self.optimizer}': choose one of {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise CNNCompareError(f"Unknown schedule '{self.schedule}': choose one of {', '.join(SCHEDULES)}.")
        for name, low in (("epochs", 1), ("batch_size", 1)):
            if getattr(self, name) < low:
                raise CNNCompareError(f"{name} must be at least {low}, got {getattr(self, name)}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CNNCompareError(f"Learning rate must be a positive number, got {self.lr}.")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1 or self.warmup_epochs < 0:
            raise CNNCompareError("weight decay and warm-up must be >= 0 and label smoothing in [0, 1).")
        models.FreezePolicy.parse(self.freeze)
        models.check_input_size(self.model, self.size)

    def spec(self, num_classes: int) -> models.ModelSpec:
        return models.ModelSpec(self.model, num_classes=num_classes, pretrained=self.pretrained, head=self.head,
                                init=self.init, weights_file=self.weights_file)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Event:
    kind: str  # "start" | "step" | "epoch" | "end" | "info"
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
    images_per_s: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    message: str = ""
    result: "RunResult | None" = None

    @property
    def progress(self) -> float:
        """Fraction of this run done, 0..1."""
        if not self.epochs:
            return 0.0
        done = (self.epoch - 1 + (self.step / self.steps if self.steps else 1)) if self.epoch else 0
        return min(1.0, max(0.0, done / self.epochs))


@dataclass
class RunResult:
    name: str
    config: dict
    classes: list[str]
    val_top1: float | None = None  # percent
    val_top5: float | None = None  # percent, with 5 classes or more
    per_class_acc: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, columns: predicted
    best_epoch: int | None = None
    final_epoch: int = 0
    train_time_s: float = 0.0  # training steps + feature extraction; evaluation excluded
    images_per_s: float | None = None  # training images processed per second of train_time_s
    peak_mem_mb: float | None = None  # MiB: CUDA max allocated, or the process's peak RSS on a CPU
    params: int | None = None
    trainable_params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    feature_cache: bool = False
    stopped: str | None = None  # why it ended early: "stopped by user", "time budget"
    history: list[dict] = field(default_factory=list)
    device: str = ""
    weights_source: str = ""
    run_dir: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- helpers

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    params = list(params)
    wd = cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd)
    if cfg.optimizer == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=wd)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.9, weight_decay=wd)  # Keras' rho=0.9


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at a global step: linear warm-up, then the schedule."""
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "step":  # x0.1 after each third of the run, as in the classic recipes
        every = max(1, math.ceil(cfg.epochs / 3))
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


def augment_batch(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random-resized-crop (scale 0.5-1, ratio 3/4-4/3) per image, on uint8."""
    out = torch.empty_like(x)
    n = x.shape[0]
    flips = torch.rand(n, generator=gen) < 0.5
    scales = torch.empty(n).uniform_(0.5, 1.0, generator=gen)
    log_r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    for i in range(n):
        area = scales[i].item() * size * size
        ratio = math.exp(log_r[i].item())
        w = min(size, max(8, int(round(math.sqrt(area * ratio)))))
        h = min(size, max(8, int(round(math.sqrt(area / ratio)))))
        top = int(torch.randint(0, size - h + 1, (1,), generator=gen))
        left = int(torch.randint(0, size - w + 1, (1,), generator=gen))
        crop = x[i:i + 1, :, top:top + h, left:left + w].float()
        img = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i] = img.round().clamp(0, 255).to(torch.uint8)[0]
        if flips[i]:
            out[i] = out[i].flip(-1)
    return out


def _amp(device: torch.device) -> tuple[bool, torch.dtype]:
    if device.type != "cuda":
        return False, torch.float32
    return True, (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # the process's peak RSS (KiB on Linux), reset at the start of each run where Linux allows
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Decoded tensors are shared by the models of one comparison (same data, size, interpolation).
# The dataset object itself is kept in the entry, so an id() can never be reused by another.
_TENSOR_CACHE: dict[tuple, tuple[object, torch.Tensor, torch.Tensor]] = {}
_TENSOR_CACHE_SIZE = 2  # train + val of one comparison


def cached_tensors(ds, size: int, interpolation: str) -> tuple[torch.Tensor, torch.Tensor]:
    key = (id(ds), size, interpolation)
    hit = _TENSOR_CACHE.get(key)
    if hit is None or hit[0] is not ds:
        while len(_TENSOR_CACHE) >= _TENSOR_CACHE_SIZE:
            _TENSOR_CACHE.pop(next(iter(_TENSOR_CACHE)))
        hit = (ds, *data_mod.to_tensors(ds, size, interpolation))
        _TENSOR_CACHE[key] = hit
    return hit[1], hit[2]


def can_cache_features(model: nn.Module) -> bool:
    """True when only head layers train: everything `forward_features` runs is frozen.

    The cache then stores `forward_features` outputs and each step runs `forward_head` in
    train mode, so dropout in the head (AlexNet's fc6/fc7, GoogLeNet's) acts exactly as on
    the plain path.
    """
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    heads = tuple(h + "." for h in model.cnncompare.head_modules)
    return bool(trainable) and all(t.startswith(heads) for t in trainable)


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets the process's peak RSS, so each run's CPU peak is its own.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# --------------------------------------------------------------------------- the loop

class _Stop(Exception):
    pass


def run(cfg: TrainConfig, data: "data_mod.LoadedData", *, should_stop: Callable[[], bool] | None = None,
        store=None) -> Iterator[Event]:
    """Fine-tune `cfg.model` on `data`, yielding events; the last event has kind "end" and a result.

    `store` (a runs.RunStore) receives the config first, each epoch's metrics as it ends, and
    the results and weights at the end. A stop (flag, time budget, or the consumer closing this
    generator) ends the run at the next step; the weights saved are those of the last finished
    epoch, so they always match the metrics saved with them.
    """
    cfg.validate()
    should_stop = should_stop or (lambda: False)
    device = profiling.resolve_device(cfg.device)
    seed_everything(cfg.seed)
    classes = list(data.classes)
    model = models.build(cfg.spec(len(classes)))
    models.freeze(model, cfg.freeze, cfg.size)
    params, trainable = models.count_params(model)
    if trainable == 0:
        raise CNNCompareError(f"Nothing left to train in {cfg.model} with freeze={cfg.freeze}.")
    result = RunResult(name=cfg.model, config=cfg.to_dict(), classes=classes, params=params,
                       trainable_params=trainable, device=str(device),
                       weights_source=model.cnncompare.weights_source)
    if store is not None:
        store.start(cfg, data, result)
        result.run_dir = str(store.path)
    started = time.perf_counter()
    state = dict(train_time=0.0, images=0, snapshot=None)

    def check_stop() -> None:
        if should_stop():
            raise _Stop("stopped by user")
        if cfg.time_budget_s and time.perf_counter() - started > cfg.time_budget_s:
            raise _Stop("time budget")

    try:
        yield Event("start", cfg.model, epochs=cfg.epochs,
                    message=f"{cfg.model}: {trainable:,} of {params:,} parameters train "
                            f"({model.cnncompare.weights_source}) on {device}")
        dcfg = models.data_config(model, cfg.size)
        interp = dcfg.get("interpolation", "bilinear")
        x_train, y_train = cached_tensors(data.train, cfg.size, interp)
        x_val, y_val = cached_tensors(data.val, cfg.size, interp)
        norm = Normalizer(dcfg["mean"], dcfg["std"]).to(device)
        amp, amp_dtype = _amp(device)
        fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        model = model.to(device=device, memory_format=fmt)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            _reset_peak_rss()
        ctx = (norm, cfg.batch_size, device, fmt, amp, amp_dtype)

        use_cache = cfg.feature_cache and not cfg.augment and can_cache_features(model)
        result.feature_cache = use_cache
        f_train = f_val = None
        if use_cache:
            yield Event("info", cfg.model, epochs=cfg.epochs, elapsed_s=time.perf_counter() - started,
                        message=f"{cfg.model}: backbone frozen and no augmentation: computing its features once")
            t0 = time.perf_counter()
            f_train = _extract(model, x_train, ctx, check_stop)
            f_val = _extract(model, x_val, ctx, check_stop)
            state["train_time"] += time.perf_counter() - t0  # honest totals: extraction is training time
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        optimizer = make_optimizer(cfg, (p for p in model.parameters() if p.requires_grad))
        n = len(y_train)
        # a last batch of one image breaks BatchNorm in train mode: drop that single leftover
        steps = n // cfg.batch_size if (n % cfg.batch_size == 1 and n > 1) else max(1, math.ceil(n / cfg.batch_size))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps))
        scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
        gen = torch.Generator().manual_seed(cfg.seed)
        loop_start = time.perf_counter()
        best = -1.0
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = torch.randperm(n, generator=gen)
            run_loss = run_correct = run_seen = 0
            for step in range(1, steps + 1):
                check_stop()
                t0 = time.perf_counter()
                idx = order[(step - 1) * cfg.batch_size: step * cfg.batch_size]
                yb = y_train[idx].to(device, non_blocking=True)
                lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    if use_cache:
                        logits = model.forward_head(f_train[idx].to(device, non_blocking=True))
                    else:
                        xb = x_train[idx]
                        if cfg.augment:
                            xb = augment_batch(xb, cfg.size, gen)
                        xb = norm(xb.to(device, non_blocking=True)).contiguous(memory_format=fmt)
                        logits = model(xb)
                    loss = criterion(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_value = loss.item()  # also waits for the device
                state["train_time"] += time.perf_counter() - t0
                state["images"] += len(idx)
                run_loss += loss_value * len(idx)
                run_correct += (logits.argmax(1) == yb).sum().item()
                run_seen += len(idx)
                now = time.perf_counter()
                done = (epoch - 1) * steps + step
                yield Event("step", cfg.model, epoch, cfg.epochs, step, steps, loss=loss_value, lr=lr,
                            images_per_s=state["images"] / state["train_time"], elapsed_s=now - started,
                            eta_s=(now - loop_start) / done * (cfg.epochs * steps - done))
            val = _evaluate(model, x_val, y_val, f_val, criterion, ctx, len(classes))
            row = dict(epoch=epoch, train_loss=run_loss / run_seen, train_acc=100 * run_correct / run_seen,
                       val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"], lr=lr,
                       images_per_s=state["images"] / state["train_time"], elapsed_s=time.perf_counter() - started)
            result.history.append(row)
            result.final_epoch = epoch
            if val["top1"] > best:
                best, result.best_epoch = val["top1"], epoch
            _fill_metrics(result, val, classes)
            if epoch < cfg.epochs:  # weights of the last finished epoch, restored if a stop comes mid-epoch
                state["snapshot"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if store is not None:
                store.log_epoch(row)
            now = time.perf_counter()
            yield Event("epoch", cfg.model, epoch, cfg.epochs, steps, steps, loss=row["train_loss"],
                        train_acc=row["train_acc"], val_loss=val["loss"], val_top1=val["top1"], lr=lr,
                        images_per_s=row["images_per_s"], elapsed_s=now - started,
                        eta_s=(now - loop_start) / epoch * (cfg.epochs - epoch))
    except _Stop as why:
        result.stopped = str(why)
        _restore(model, state, result)
    except GeneratorExit:  # the consumer closed us (UI cancel, tab closed): save what finished
        result.stopped = "stopped by user"
        _restore(model, state, result)
        _finish(result, model, cfg, device, state, store)
        raise
    _finish(result, model, cfg, device, state, store)
    yield Event("end", cfg.model, result.final_epoch, cfg.epochs, elapsed_s=time.perf_counter() - started,
                val_top1=result.val_top1, message=_summary(result), result=result)


def _restore(model: nn.Module, state: dict, result: RunResult) -> None:
    """After a mid-epoch stop, go back to the weights the saved metrics describe."""
    if state["snapshot"] is not None and result.final_epoch:
        model.load_state_dict(state["snapshot"])


def _extract(model, x, ctx, check_stop) -> torch.Tensor:
    """Backbone outputs (`forward_features`) for every image, once; a stop request ends it between batches."""
    norm, batch, device, fmt, amp, amp_dtype = ctx
    batch = max(batch, 64)  # no gradients kept: a bigger batch is cheaper per image
    model.eval()  # frozen parts behave the same in both modes (FrozenBatchNorm2d)
    out = []
    for i in range(0, len(x), batch):
        check_stop()
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            xb = norm(x[i:i + batch].to(device)).contiguous(memory_format=fmt)
            out.append(model.forward_features(xb).float())
    return torch.cat(out).clone()  # clone: leave inference mode so autograd can use it


@torch.no_grad()
def _evaluate(model, x, y, feats, criterion, ctx, n_classes) -> dict:
    norm, batch, device, fmt, amp, amp_dtype = ctx
    model.eval()
    logits = []
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
        for i in range(0, len(y), batch):
            if feats is not None:
                logits.append(model.forward_head(feats[i:i + batch].to(device)).float())
            else:
                xb = norm(x[i:i + batch].to(device)).contiguous(memory_format=fmt)
                logits.append(model(xb).float())
    logits = torch.cat(logits).cpu()
    pred = logits.argmax(1)
    conf = torch.zeros(n_classes, n_classes, dtype=torch.long)
    conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    top5 = None
    if n_classes >= 5:
        top5 = 100 * (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    return dict(loss=criterion(logits, y).item(), top1=100 * (pred == y).float().mean().item(), top5=top5,
                confusion=conf)


def _fill_metrics(result: RunResult, val: dict, classes: list[str]) -> None:
    conf = val["confusion"]
    result.val_top1, result.val_top5 = val["top1"], val["top5"]
    result.confusion = conf.tolist()
    totals = conf.sum(1).clamp(min=1)
    result.per_class_acc = {c: 100 * conf[i, i].item() / totals[i].item() for i, c in enumerate(classes)}


def _finish(result, model, cfg, device, state, store) -> None:
    result.train_time_s = state["train_time"]
    result.images_per_s = state["images"] / state["train_time"] if state["train_time"] else None
    result.peak_mem_mb = _peak_mem_mb(device)
    try:
        result.macs = profiling.count_macs(model, cfg.size)
        lat, _, _, _ = profiling.measure_latency(model, cfg.size, device, batch=1, budget_s=0.3)
        result.latency_ms = lat.p50
    except Exception as err:  # a profile is a nice-to-have; never lose the run for it
        result.error = f"profiling failed: {err}"
    if store is not None:
        store.finish(result, model if result.final_epoch else None)


def _summary(r: RunResult) -> str:
    acc = f"val top-1 {r.val_top1:.1f}%" if r.val_top1 is not None else "no finished epoch"
    stop = f" ({r.stopped})" if r.stopped else ""
    cache = ", feature cache" if r.feature_cache else ""
    return f"{r.name}: {acc} after {r.final_epoch} epoch(s), {r.train_time_s:.1f} s training{cache}{stop}"


def fine_tune(cfg: TrainConfig, data, *, on_event: Callable[[Event], None] | None = None,
              should_stop: Callable[[], bool] | None = None, store=None) -> RunResult:
    result = None
    for event in run(cfg, data, should_stop=should_stop, store=store):
        if on_event:
            on_event(event)
        if event.kind == "end":
            result = event.result
    return result


# --------------------------------------------------------------------------- estimates

@dataclass
class Estimate:
    model: str
    seconds_per_epoch: float
    total_s: float
    feature_cache: bool
    device: str
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _secs(t: float) -> str:
    return f"{t:.1f} s" if t < 10 else f"{t:.0f} s"


def estimate(cfg: TrainConfig, n_train: int, n_val: int, n_classes: int, steps: int = 2) -> Estimate:
    """Time a few real training steps on random data and extrapolate to the whole run."""
    cfg.validate()
    device = profiling.resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = models.build(models.ModelSpec(cfg.model, num_classes=n_classes, head=cfg.head, init=cfg.init))
    models.freeze(model, cfg.freeze, cfg.size)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    amp, amp_dtype = _amp(device)
    cached = cfg.feature_cache and not cfg.augment and can_cache_features(model)
    b = min(cfg.batch_size, max(1, n_train))
    x = torch.randn(b, 3, cfg.size, cfg.size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, n_classes, (b,), device=device)
    opt = make_optimizer(cfg, (p for p in model.parameters() if p.requires_grad))

    def timed(fn) -> float:
        fn()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / steps

    def train_step():
        model.train()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def forward():
        model.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            model(x)

    fwd = timed(forward) / b  # per image
    batches = math.ceil(n_train / b)
    if cached:
        once = fwd * (n_train + n_val)
        per_epoch = batches * 0.002  # head-only steps on stored features: milliseconds
        total = once + per_epoch * cfg.epochs
        note = f"features computed once (~{_secs(once)}), then ~{_secs(per_epoch)} per epoch"
    else:
        per_epoch = timed(train_step) * batches + fwd * n_val
        total = per_epoch * cfg.epochs
        note = f"~{_secs(per_epoch)} per epoch"
    return Estimate(cfg.model, per_epoch, total, cached, str(device), note)
