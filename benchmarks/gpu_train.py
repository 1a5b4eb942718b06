"""GPU training benchmarks (used by bench_gpu.py): our loop against a plain PyTorch loop, and one
CIFAR-sized epoch at 224 px for the classic four.

`section_train`: for each model, the steady-state training images/s of `cnncompare.training.run`
(full fine-tuning, bf16 autocast, channels_last, data on the GPU) against a minimal plain loop in a
FRESH process (torchvision's model, same batch, dtype, memory format, optimizer, cuDNN autotuning
on, data already on the GPU: what a user would write). Warm-up (first steps) is reported apart.

`section_epoch`: one epoch over 50,000 generated 32-px images (CIFAR-10's size, kept at 32 px in
memory and resized to 224 px per batch on the GPU) for each model, with wall time per model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from cnncompare.models.catalog import CLASSIC_FOUR

MODELS = list(CLASSIC_FOUR)

# The plain loop a user would write; run in a fresh interpreter so no setting of ours leaks in.
PLAIN_LOOP = r"""
import json, sys, time, torch, torchvision
name, batch, steps, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.backends.cudnn.benchmark = True
kw = dict(aux_logits=False, init_weights=True) if name == "googlenet" else {}
model = getattr(torchvision.models, name)(num_classes=10, **kw).cuda().to(memory_format=torch.channels_last)
opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
x_all = torch.randint(0, 256, (batch * 8, 3, 224, 224), dtype=torch.uint8, device="cuda")
y_all = torch.randint(0, 10, (batch * 8,), device="cuda")
mean = torch.tensor([0.485, 0.456, 0.406], device="cuda").view(1, 3, 1, 1) * 255
std = torch.tensor([0.229, 0.224, 0.225], device="cuda").view(1, 3, 1, 1) * 255
model.train()
def step(i):
    j = (i % 8) * batch
    x = ((x_all[j:j + batch].float() - mean) / std).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), y_all[j:j + batch])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
t0 = time.perf_counter()
for i in range(warm):
    step(i)
torch.cuda.synchronize()
t1 = time.perf_counter()
for i in range(steps):
    step(i)
torch.cuda.synchronize()
t2 = time.perf_counter()
print(json.dumps(dict(warmup_s=t1 - t0, images_per_s=batch * steps / (t2 - t1))))
"""


def plain_loop(name: str, batch: int, steps: int, warm: int = 10, timeout: float = 240) -> dict:
    """Steady-state images/s of the plain loop, measured in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_LOOP, name, str(batch), str(steps), str(warm)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "plain loop failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _random_dataset(n_train: int, n_val: int, size: int, classes: int = 10, seed: int = 0):
    from cnncompare.data import DataReport, ImageDataset, LoadedData

    rng = np.random.default_rng(seed)
    names = [f"class{i}" for i in range(classes)]

    def split(n):
        return ImageDataset(
            names, rng.integers(0, classes, n).tolist(), array=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        )

    train, val = split(n_train), split(n_val)
    report = DataReport(source="generated", classes=names, counts={"train": {}, "val": {}})
    return LoadedData(f"random {size}px", names, train, val, report)


def ours(name: str, dataset, batch: int, epochs: int = 1) -> dict:
    """Our loop on `dataset`: steady images/s, warm-up s, wall s, data placement."""
    from cnncompare import training
    from cnncompare.settings import ModelEntry, TrainSettings

    entry = ModelEntry(name, freeze="none", pretrained=False)
    settings = TrainSettings(epochs=epochs, batch_size=batch, size=224, lr=1e-4, device="cuda", schedule="none")
    t0 = time.perf_counter()
    r = training.fine_tune(entry, settings, dataset)
    if r.error:
        raise RuntimeError(r.error)
    return dict(
        images_per_s=r.images_per_s,
        warmup_s=r.warmup_s,
        wall_s=time.perf_counter() - t0,
        train_s=r.train_time_s,
        batch=r.batch_size,
        on_device=r.data_on_device,
        val_top1=r.val_top1,
    )


def section_train(args) -> list[dict]:
    """Our loop vs the plain loop, per model, at one batch (steady state, warm-up apart)."""
    import torch

    if not torch.cuda.is_available():
        print("train: no CUDA here, skipped")
        return []
    batch, steps = args.batch, args.steps
    ds = _random_dataset(batch * steps, 256, 224)
    rows = []
    for name in args.models:
        try:
            plain = plain_loop(name, batch, steps)
            mine = ours(name, ds, batch)
            rows.append(
                dict(
                    model=name,
                    batch=batch,
                    ours_ips=mine["images_per_s"],
                    plain_ips=plain["images_per_s"],
                    ratio=mine["images_per_s"] / plain["images_per_s"],
                    ours_warmup_s=mine["warmup_s"],
                    plain_warmup_s=plain["warmup_s"],
                    on_device=mine["on_device"],
                )
            )
        except Exception as err:  # one model's failure must not lose the others' numbers
            rows.append(dict(model=name, error=f"{type(err).__name__}: {str(err)[:200]}"))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def section_epoch(args) -> list[dict]:
    """One epoch of 50,000 generated 32-px images at 224 px per model; wall time each and together."""
    import torch

    if not torch.cuda.is_available():
        print("epoch: no CUDA here, skipped")
        return []
    ds = _random_dataset(args.epoch_images, 1000, 32)
    rows = []
    for name in args.models:
        try:
            mine = ours(name, ds, 0)  # 0 = the automatic GPU batch
            rows.append(
                dict(
                    model=name,
                    images=args.epoch_images,
                    wall_s=mine["wall_s"],
                    train_s=mine["train_s"],
                    ours_ips=mine["images_per_s"],
                    batch=mine["batch"],
                    warmup_s=mine["warmup_s"],
                )
            )
        except Exception as err:
            rows.append(dict(model=name, error=f"{type(err).__name__}: {str(err)[:200]}"))
        print(json.dumps(rows[-1]), flush=True)
    total = sum(r.get("wall_s", 0) for r in rows)
    print(f"epoch: the four models together: {total:.0f} s wall (target < 300 s, aim 180 s)")
    return rows
