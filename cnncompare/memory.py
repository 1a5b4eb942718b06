"""What a run needs in memory, counted before it runs: a shared server refuses what cannot fit.

On a CPU, running out of memory raises nothing: the kernel's OOM killer ends the whole process, and with it
every visitor's work. So a run's memory is counted first, on the meta device (shapes only, no memory, well
under a second), the way `profiling.activation_bytes` counts inference:

- the weights, the gradients of what trains, the optimizer's state (Adam keeps two numbers per trained
  weight, SGD with momentum one) and the end-of-epoch copy of what trains;
- one training step: a forward and backward pass at two batch sizes, fitted as a fixed part (the gradients)
  plus a part per image (the activations kept for the backward pass), then taken at the run's batch;
- evaluation and the feature cache's extraction, which run without gradients at their own, larger batches;
- the decoded images (uint8 at the training size, unless there are too many and they stream from disk) and
  the stored features of a cached run.

`check` refuses a run over the limit with one sentence naming the largest batch, and the largest input size,
that fit. The limit (`Env.max_run_mb`, CNNCOMPARE_MAX_RUN_MB) defaults to a share of this machine's memory
(`env.default_run_mb`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from . import models, runtime
from .errors import CNNCompareError
from .loop import EVAL_BATCH, EXTRACT_BATCH, cache_point, resolve_batch_size
from .profiling import PeakMemory
from .serving import kept
from .settings import ModelEntry, TrainSettings

__all__ = ["RunMemory", "TooBig", "run_memory", "check", "check_run", "OPTIMIZER_STATES"]

MB = 2**20
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2, "rmsprop": 1}
# What the counted tensors leave out (the allocator, building the model, libraries' first-use caches): measured
# peak RSS growth of real runs on this project's 2-core machine was 0.73-1.27x the count (benchmarks/bench_memory.py)
SLACK, OVERHEAD = 1.25, 100 * 2**20


class TooBig(CNNCompareError):
    """A run that would need more memory than one run may use here; the message says what fits."""


@dataclass
class RunMemory:
    """The bytes one run holds at its peak, part by part (see the module's docstring)."""

    label: str
    batch: int
    size: int
    weights: int
    grads_and_optimizer: int
    step: int  # activations of one training step at `batch` (or of the classifier on stored tensors)
    inference: int  # evaluation or extraction at its own batch, without gradients
    data: int  # decoded images and stored features
    per_image_step: int = 0
    per_image_inference: int = 0

    @property
    def total(self) -> int:
        counted = self.weights + self.grads_and_optimizer + self.data + max(self.step, self.inference)
        return int(SLACK * counted + OVERHEAD)

    @property
    def total_mb(self) -> float:
        return self.total / MB

    def to_dict(self) -> dict:
        return {**asdict(self), "total_mb": round(self.total_mb, 1)}


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GB" if n_bytes >= 2**30 else f"{n_bytes / MB:,.0f} MB"


@kept(256)
def _costs(model_name: str, freeze: str, head: str, size: int, n_classes: int, augment: bool, cache: bool) -> dict:
    """Everything about a run's memory that depends on its model and input size, counted once on the meta device."""
    settings = TrainSettings(size=size, augment=augment, feature_cache=cache)
    entry = ModelEntry(model_name, freeze=freeze, head=head)
    model = models.build_frozen(entry, n_classes, size, device="meta")
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for b in model.buffers())
    cached = cache_point(model, settings)

    def peak(batch: int, train: bool) -> int:
        x = torch.empty(batch, 3, size, size, device="meta")
        tracker = PeakMemory()
        if train and not cached:
            model.train()
            y = torch.zeros(batch, dtype=torch.long, device="meta")
            with tracker:
                loss = F.cross_entropy(model(x), y)
                if loss.requires_grad:
                    loss.backward()
            for p in model.parameters():
                p.grad = None
        else:
            model.eval()
            with torch.inference_mode(), tracker:
                out = model.forward_features(x)
                if cached == "pre-logits":
                    out = model.forward_head(out, pre_logits=True)
            del out
        return tracker.peak

    def fit(train: bool) -> tuple[int, int]:  # (fixed bytes, bytes per image) from batches of 2 and 4
        lo, hi = peak(2, train), peak(4, train)
        per_image = max(0, (hi - lo) // 2)
        return max(0, lo - 2 * per_image), per_image

    feature_numel = 0
    if cached:
        with torch.inference_mode():
            f = model.forward_features(torch.empty(1, 3, size, size, device="meta"))
            if cached == "pre-logits":
                f = model.forward_head(f, pre_logits=True)
        feature_numel = f[0].numel()
    return dict(
        params=params,
        trainable=trainable,
        buffers=buffers,
        cached=cached,
        step=fit(train=True) if not cached else (0, 4 * feature_numel * 3),  # the classifier on stored features
        inference=fit(train=False),
        feature_numel=feature_numel,
    )


def run_memory(
    entry: ModelEntry,
    settings: TrainSettings,
    n_train: int,
    n_val: int,
    n_classes: int,
    *,
    label: str = "",
    max_decoded_bytes: int | None = None,
    batch: int | None = None,
    size: int | None = None,
) -> RunMemory:
    """The memory a run needs at its peak on a CPU (`batch`, `size`: another batch or input size to try)."""
    size = size or settings.size
    b = batch or min(resolve_batch_size(settings, torch.device("cpu")), max(1, n_train))
    c = _costs(entry.model, entry.freeze, entry.head, size, n_classes, settings.augment, settings.feature_cache)
    weights = 4 * (c["params"] + c["buffers"])
    states = OPTIMIZER_STATES.get(settings.optimizer, 2)
    # gradients, optimizer state and the end-of-epoch copy of what trains (and of the buffers)
    grads_and_optimizer = 4 * c["trainable"] * (1 + states + 1) + 4 * c["buffers"]
    pixels = 3 * size * size
    step_fixed, step_per = c["step"]
    # the batch as floats (normalised, then resized or augmented): two copies of it, per image
    step = step_fixed + b * (step_per + 2 * 4 * pixels)
    inf_fixed, inf_per = c["inference"]
    inf_batch = max(b, EXTRACT_BATCH if c["cached"] else EVAL_BATCH)
    inference = inf_fixed + inf_batch * (inf_per + 2 * 4 * pixels)
    decoded = (n_train + n_val) * pixels
    if max_decoded_bytes is not None and decoded > max_decoded_bytes:
        decoded = 0  # streamed from the files, batch by batch
    features = 4 * c["feature_numel"] * (n_train + n_val)
    return RunMemory(
        label or entry.model,
        b,
        size,
        weights,
        grads_and_optimizer,
        step,
        inference,
        decoded + features,
        per_image_step=step_per + 8 * pixels,
        per_image_inference=inf_per + 8 * pixels,
    )


def check(
    entry: ModelEntry,
    settings: TrainSettings,
    n_train: int,
    n_val: int,
    n_classes: int,
    max_mb: float | None,
    *,
    label: str = "",
    max_decoded_bytes: int | None = None,
) -> RunMemory:
    """`run_memory`, refused with one sentence when it passes `max_mb` (None or 0: no limit).

    Raises:
        TooBig: the run needs more; the sentence names the largest batch at this size, and the largest size at
        this batch, that fit (or says the model alone does not fit).
    """
    args = dict(entry=entry, settings=settings, n_train=n_train, n_val=n_val, n_classes=n_classes)
    kw = dict(label=label, max_decoded_bytes=max_decoded_bytes)
    need = run_memory(**args, **kw)
    if not max_mb or max_mb <= 0 or need.total_mb <= max_mb:
        return need
    limit = max_mb * MB
    fits_batch = next(
        (b for b in _descending(need.batch) if run_memory(**{**kw, "batch": b}, **args).total <= limit), None
    )
    fits_size = _largest_size(need, limit, args, kw)
    what = f"{need.label} needs about {_gb(need.total)} of memory at batch {need.batch} and {need.size} px"
    over = f"more than the {_gb(limit)} one run may use on this machine (CNNCOMPARE_MAX_RUN_MB)"
    if fits_batch is None and fits_size is None:
        raise TooBig(f"{what}, {over}; even one image at a time does not fit: pick a smaller model or input size.")
    options = []
    if fits_batch is not None:
        options.append(f"a batch of at most {fits_batch} at {need.size} px")
    if fits_size is not None:
        options.append(f"an input size of at most {fits_size} px at batch {need.batch}")
    raise TooBig(f"{what}, {over}: use {' or '.join(options)}.")


def check_run(run, limits, n_train: int, n_val: int, n_classes: int) -> RunMemory | None:
    """`check` for a planned run (`compare.PlannedRun`) under a plan's limits (`compare.Limits`: max_run_mb,
    max_decoded_bytes); None when nothing is checked: no limit, or a GPU run (out of GPU memory, it halves its batch
    and starts again)."""
    if not limits.max_run_mb or runtime.resolve_device(run.settings.device).type != "cpu":
        return None
    models.check_entry(run.entry, run.settings.size)  # too small an input: the rule's own sentence, not a torch error
    return check(
        run.entry,
        run.settings,
        n_train,
        n_val,
        n_classes,
        limits.max_run_mb,
        label=run.label,
        max_decoded_bytes=limits.max_decoded_bytes,
    )


def _largest_size(need: RunMemory, limit: float, args: dict, kw: dict) -> int | None:
    """The largest input size (a multiple of 16) that fits at the run's batch: activations and images grow with the
    square of the side, so the size is found from the count at this size and checked with a real count."""
    smallest = max(16, models.min_input_size(args["entry"].model))
    fixed = need.total - SLACK * (need.data + max(need.step, need.inference))  # what does not depend on the size
    room = (limit - fixed) / (SLACK * max(1, need.data + max(need.step, need.inference)))
    guess = int(need.size * max(room, 0.0) ** 0.5) // 16 * 16
    for size in range(min(guess, need.size - 16), smallest - 1, -16):
        if run_memory(**args, **kw, size=size).total <= limit:
            return size
        if size < guess - 48:  # the square law was far off: stop counting (each count is a meta pass)
            break
    return None


def _descending(batch: int):
    """Batch sizes to try below `batch`, largest first (powers of two and the halves between them)."""
    b = batch - 1
    while b >= 1:
        yield b
        b = b - max(1, b // 8)
