"""What a run will cost before it starts: its time here, from timing a few real steps of its model
(`estimate`, `estimate_plan`), and the GPU time a shared GPU must lend it (`gpu_seconds`, `gpu_duration`).

The CLI and the app both call `estimate_plan` and print its `text()`, so they say the same thing for the
same plan. Whether a run caches the frozen part's output is decided by the one rule training uses
(`loop.cache_point`), on the run's own model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import memory, models, profiling, runtime
from .errors import CNNCompareError
from .loop import (
    EVAL_BATCH,
    EXTRACT_BATCH,
    cache_point,
    cached_head,
    make_optimizer,
    resolve_batch_size,
    set_train_mode,
)
from .serving import GATE
from .settings import ModelEntry, TrainSettings

__all__ = [
    "Estimate",
    "RunEstimate",
    "PlanEstimate",
    "estimate",
    "estimate_plan",
    "duration_text",
    "gpu_seconds",
    "gpu_duration",
    "GPU_TRAIN_FLOPS",
    "GPU_RUN_OVERHEAD_S",
]


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
    """'~1.2 s', '~42 s', or 'under 0.1 s' (never '~0.0 s')."""
    if t < 0.1:
        return "under 0.1 s"
    return f"~{t:.1f} s" if t < 10 else f"~{t:.0f} s"


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
    model = models.build_frozen(entry, n_classes, settings.size, device="meta").to_empty(device=device)
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
        head = cached_head(model, cached)
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
    models.check_entry(entry, settings.size)
    device = runtime.resolve_device(settings.device)
    with GATE.quiet(), runtime.cpu_threads(device):  # timed alone: no training step, no other work on the cores
        init_rate, copy_rate = _machine_rates(device)
        batch = min(resolve_batch_size(settings, device), max(1, n_train))
        t = _step_times(entry, settings, n_classes, device, batch)
        step_opt = t.trainable * _optimizer_rate(settings, device)
    params, cached = t.params, t.cached
    if cached:  # extraction runs in batches of 64 or more (`extract_features`); evaluation on stored tensors: ~free
        big = max(batch, EXTRACT_BATCH)
        features = _passes(n_train, big, t.forward) + _passes(n_val, big, t.forward)
        per_epoch = (t.train[0] + step_opt) * math.ceil(n_train / batch)
    else:  # evaluation runs in batches of 128 or more (`evaluate`)
        features = 0.0
        per_epoch = _passes(n_train, batch, t.train) + step_opt * math.ceil(n_train / batch)
        per_epoch += _passes(n_val, max(batch, EVAL_BATCH), t.forward)
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
        note = f"frozen part run once ({_secs(features)}), then {_secs(per_epoch)} per epoch for the classifier"
    elif cached:
        note = f"features computed once ({_secs(features)}), then {_secs(per_epoch)} per epoch"
    else:
        note = f"{_secs(per_epoch)} per epoch"
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


def duration_text(seconds: float | None) -> str:
    """'less than 1 s', '42 s', '3 min 05 s' ('?' when unknown): how estimates and waits are written."""
    if seconds is None:
        return "?"
    if seconds < 1:
        return "less than 1 s"
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@dataclass
class RunEstimate:
    """One planned run's estimate, or why it cannot be made (the run would fail the same way)."""

    label: str
    estimate: Estimate | None = None
    error: str | None = None
    budget_s: float | None = None  # the run's time budget: it stops there

    @property
    def seconds(self) -> float | None:
        """What the run will take: its estimate, or its time budget when that comes first."""
        if self.estimate is None:
            return None
        t = self.estimate.total_s
        return min(t, self.budget_s) if self.budget_s else t


@dataclass
class PlanEstimate:
    """Every run of a plan, estimated on the dataset it will train on."""

    runs: list[RunEstimate]
    n_train: int
    n_val: int
    epochs: int
    size: int

    @property
    def total_s(self) -> float:
        return sum(r.seconds or 0.0 for r in self.runs)

    def text(self) -> str:
        """The estimate as the CLI prints it and the app shows it (a Markdown table that reads as text too)."""
        lines = [
            f"Estimate for {self.n_train} training and {self.n_val} validation images, {self.epochs} epoch(s) at "
            f"{self.size} px:",
            "",
            "| run | time | how |",
            "|---|---|---|",
        ]
        for r in self.runs:
            if r.estimate is None:
                lines.append(f"| {r.label} | – | cannot run: {r.error} |")
                continue
            over = r.budget_s and r.estimate.total_s > r.budget_s
            budget = f" (stops at its {duration_text(r.budget_s)} budget)" if over else ""
            lines.append(
                f"| {r.label} | ~{duration_text(r.seconds)}{budget} | {r.estimate.note} on {r.estimate.device} |"
            )
        lines += [
            "",
            f"Total: about {duration_text(self.total_s)}, counting each run's start, epochs, evaluation and save. "
            "It comes from timing a few real steps of each model; on a machine doing nothing else, runs land "
            "within about ±25 % of it.",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_plan(plan, dataset) -> PlanEstimate:
    """`estimate` for every run of a `compare.Plan` on a loaded dataset; a run that cannot be estimated (a model
    that cannot take the input size, weights that cannot be had) gets its reason instead."""
    out = []
    n_train, n_val, n_classes = len(dataset.train), len(dataset.val), len(dataset.classes)
    for run in plan.runs():
        budget = run.settings.time_budget_s
        try:
            memory.check_run(run, plan.limits, n_train, n_val, n_classes)  # a run that cannot fit is not timed
            est = estimate(run.entry, run.settings, n_train, n_val, n_classes)
        except CNNCompareError as err:
            out.append(RunEstimate(run.label, error=str(err), budget_s=budget))
            continue
        out.append(RunEstimate(run.label, est, budget_s=budget))
    return PlanEstimate(out, n_train, n_val, plan.settings.epochs, plan.settings.size)


# --------------------------------------------------------------------------- GPU time on a shared GPU

# Training throughput on a GPU, as FLOPs per second, low end of what bench_gpu.py measured on an H200
# (googlenet 48, resnet50 105, vgg16 305 TFLOP/s counting 3 x the forward pass): an estimate made
# before a GPU is attached (ZeroGPU attaches it only inside the decorated call) must not run short.
GPU_TRAIN_FLOPS = 40e12
GPU_RUN_OVERHEAD_S = 20.0  # build, cuDNN autotuning, evaluation, profiling, saving


def gpu_seconds(plan, n_train: int, n_val: int, n_classes: int) -> float:
    """Seconds of GPU time a `compare.Plan` needs, from each model's MACs (counted on the meta device, no GPU
    needed).

    A run that trains the whole model costs 3 forward passes per training image (forward + backward) and one
    per validation image, every epoch; a run whose frozen part is cached (`loop.cache_point`, the rule
    training follows) pays one forward pass per image once.
    """
    total = 0.0
    for run in plan.runs():
        s = run.settings
        model = models.build_frozen(run.entry, n_classes, s.size, device="meta")
        macs = profiling.count_macs(model, s.size)
        passes = (n_train + n_val) if cache_point(model, s) else s.epochs * (3 * n_train + n_val)
        total += GPU_RUN_OVERHEAD_S + 2 * macs * passes / GPU_TRAIN_FLOPS
    return total


def gpu_duration(plan, n_train: int, n_val: int, n_classes: int, limit_s: float) -> int:
    """The GPU time to ask a shared GPU (ZeroGPU) for: the estimate with a 25 % margin, at most `limit_s`.

    Raises:
        CNNCompareError: the plan cannot fit the limit; the message says what to shrink.
    """
    need = gpu_seconds(plan, n_train, n_val, n_classes)
    if need > limit_s:
        raise CNNCompareError(
            f"This comparison needs about {need:.0f} s of GPU time, more than the {limit_s:.0f} s "
            "one request may have here: use fewer models, fewer epochs, a smaller input size or "
            "fewer images per class."
        )
    return int(min(limit_s, max(30.0, 1.25 * need)))
