"""Fine-tuning speed on this machine.

    .venv/bin/python benchmarks/bench_training.py [--quick]

1. Feature cache: resnet18, 64 px, shapes (2,000 images), 3 epochs, only the head trains:
   backbone features computed once vs the plain frozen path (backbone forward every step).
   Target: >= 5x faster with comparable accuracy.
2. Loop overhead: images/s of cnncompare's loop for full fine-tuning vs a minimal plain
   PyTorch loop (same model, batch, data, threads), interleaved. Target: >= 0.9x.
3. From scratch: resnet18 at 64 px on shapes, wall time and validation top-1 vs chance.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import report  # noqa: E402
from cnncompare import data, models, training  # noqa: E402
from cnncompare.data import placement  # noqa: E402
from cnncompare.settings import ModelEntry, TrainSettings  # noqa: E402


def feature_cache(ds, epochs: int = 3) -> list[list]:
    """Wall time of whole runs (build, decode, train, evaluate each epoch, final profile)."""
    rows, walls, per_epoch = [], {}, {}
    placement.cached_tensors(ds.train, 64, "bilinear")  # decode once for both, outside the timing
    placement.cached_tensors(ds.val, 64, "bilinear")
    for cache in (False, True):  # plain first: it also warms up the CPU kernels for both
        cfg = TrainSettings(epochs=epochs, size=64, batch_size=32, lr=1e-2, feature_cache=cache, device="cpu")
        t0 = time.perf_counter()
        r = training.fine_tune(ModelEntry("resnet18", freeze="head"), cfg, ds)
        walls[cache] = time.perf_counter() - t0
        h = r.history
        per_epoch[cache] = (h[-1]["elapsed_s"] - h[0]["elapsed_s"]) / (len(h) - 1)
        rows.append(
            [
                ("cached features" if cache else "plain frozen path"),
                f"{walls[cache]:.1f}",
                f"{h[0]['elapsed_s']:.2f}",
                f"{per_epoch[cache]:.2f}",
                f"{r.val_top1:.1f}",
                r.feature_cache,
            ]
        )
    rows.append([f"speed-up at {epochs} epochs", f"{walls[False] / walls[True]:.1f}x", "", "", "", ""])
    fixed = {c: walls[c] - epochs * per_epoch[c] for c in walls}  # start-up + first-epoch extra + final profile
    for e in (10, 30):
        est = (fixed[False] + e * per_epoch[False]) / (fixed[True] + e * per_epoch[True])
        rows.append([f"speed-up at {e} epochs (from the per-epoch times)", f"{est:.1f}x", "", "", "", ""])
    return rows


def plain_loop_ips(x, y, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = models.build("resnet18", num_classes=8).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    seen, spent = 0, 0.0
    for i in range(steps + 2):
        xb, yb = x[(i * batch) % len(x) :][:batch], y[(i * batch) % len(y) :][:batch]
        t0 = time.perf_counter()
        loss = F.cross_entropy(model((xb.float() - mean) / std), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:  # skip warm-up steps
            spent += time.perf_counter() - t0
            seen += len(xb)
    return seen / spent


def loop_overhead(ds, rounds: int, epochs: int) -> list[list]:
    x, y = placement.cached_tensors(ds.train, 64, "bilinear")
    ours, plain = [], []
    for _ in range(rounds):  # interleaved: the machine's speed drifts
        cfg = TrainSettings(epochs=epochs, size=64, batch_size=32, device="cpu")
        r = training.fine_tune(ModelEntry("resnet18", freeze="none"), cfg, ds)
        ours.append(r.images_per_s)
        plain.append(plain_loop_ips(x, y, steps=len(y) // 32 * epochs, batch=32))
    o, p = statistics.median(ours), statistics.median(plain)
    return [
        ["cnncompare loop img/s", f"{o:.1f}"],
        ["minimal PyTorch loop img/s", f"{p:.1f}"],
        ["ratio", f"{o / p:.3f}"],
    ]


def from_scratch(ds) -> list[list]:
    cfg = TrainSettings(epochs=5, size=64, batch_size=32, lr=1e-3, device="cpu")
    t0 = time.perf_counter()
    r = training.fine_tune(ModelEntry("resnet18", freeze="none"), cfg, ds)
    return [
        [
            "resnet18 from scratch, 64 px, 5 epochs",
            f"{time.perf_counter() - t0:.0f}",
            f"{r.val_top1:.1f}",
            f"{100 / len(ds.classes):.1f}",
        ]
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller data, one round")
    args = ap.parse_args()
    per_class = 60 if args.quick else 250
    work = tempfile.mkdtemp()
    ds = data.load_dataset("shapes", work_dir=work, shapes_per_class=per_class, seed=0)
    n = len(ds.train) + len(ds.val)
    report(
        f"Feature cache: resnet18, 64 px, {n} images, 3 epochs, freeze=head",
        ["path", "wall s", "1st epoch done at s", "each further epoch s", "val top-1 %", "feature_cache"],
        feature_cache(ds),
        command="python benchmarks/bench_training.py" + (" --quick" if args.quick else ""),
    )
    report(
        "Training loop vs minimal PyTorch loop (resnet18, full fine-tuning, batch 32, 64 px)",
        ["measure", "value"],
        loop_overhead(ds, rounds=1 if args.quick else 3, epochs=1),
    )
    report(
        f"From scratch on shapes ({len(ds.train)} train / {len(ds.val)} val images)",
        ["run", "wall s", "val top-1 %", "chance %"],
        from_scratch(ds),
    )


if __name__ == "__main__":
    main()
