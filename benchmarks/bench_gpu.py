"""GPU benchmarks, sized for a short window on one GPU (about 6 minutes for everything).

    python benchmarks/bench_gpu.py [--only profile,train,epoch] [--out gpu.json] [--budget-s 240]

Sections (each in its own try/except; a failing one is reported and the others still run):
  profile  alexnet, vgg16, googlenet, resnet50 at 224 px: cnncompare's eager and CUDA-graph
           batch-1 p50, a bare CUDA-graph replay loop in a fresh process (plain torchvision
           model, bf16 autocast, channels_last, batch 1, same timing method) and ours ÷ bare
           (target within 10 %); throughput at batch 256 (halved on out-of-memory), achieved
           TFLOP/s and the fraction of the card's dense bf16 peak.
  train    steady-state training img/s of cnncompare's loop vs a plain loop in a fresh process
           (target >= 0.9), warm-up seconds apart (benchmarks/gpu_train.py)
  epoch    one epoch of 50,000 CIFAR-sized images at 224 px for each classic model

Prints tables, appends them with machine and date to benchmarks/RESULTS.md and, with --out,
writes everything as JSON (rewritten after each section, so a cut-off run keeps what it had).
Without CUDA it prints a "no CUDA" line and exits 0. Needs torch, torchvision, timm; never gradio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._results import machine, report  # noqa: E402
from cnncompare.models.catalog import CLASSIC_FOUR  # noqa: E402

MODELS = list(CLASSIC_FOUR)
SIZE = 224
BUDGET_S = 420  # the whole script; a model is skipped when less than MIN_LEFT_S is left
MIN_LEFT_S = 25
TIMING_BUDGET_S = 1.0  # per timing phase inside profile()
TRAIN_BATCH, TRAIN_STEPS = 128, 40  # training comparison: 40 timed steps of 128 after 10 warm-up steps
EPOCH_IMAGES = 50_000
BARE_RUNS = 300  # replays timed by the bare loop (our graph timing: up to 300 within TIMING_BUDGET_S)

# A plain PyTorch CUDA-graph replay loop: what anyone would write, nothing from cnncompare.
# Same settings as cnncompare on CUDA (runtime.configure_cuda + precision_for) and the same timing:
# perf_counter around one replay + synchronize, median.
BARE_GRAPH = r"""
import json, statistics, sys, time
import torch, torchvision
name, size, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
cl = torch.channels_last
model = torchvision.models.get_model(name, weights=None).cuda().eval().to(memory_format=cl)
x = torch.randn(1, 3, size, size, device="cuda").contiguous(memory_format=cl)
side = torch.cuda.Stream()
side.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(side), torch.inference_mode(), torch.autocast("cuda", dtype=dtype, cache_enabled=False):
    for _ in range(3):
        model(x)
torch.cuda.current_stream().wait_stream(side)
graph = torch.cuda.CUDAGraph()
with torch.inference_mode(), torch.cuda.graph(graph), torch.autocast("cuda", dtype=dtype, cache_enabled=False):
    out = model(x)
for _ in range(10):
    graph.replay()
torch.cuda.synchronize()
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    graph.replay()
    torch.cuda.synchronize()
    times.append((time.perf_counter() - t0) * 1e3)
print(json.dumps({"p50": statistics.median(times), "runs": runs}))
"""


def _f(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _left(args) -> float:
    return args.deadline - time.monotonic()


def _free_cuda() -> None:
    gc.collect()
    torch.cuda.empty_cache()


# --------------------------------------------------------------------------- profile


def bare_graph_p50(name: str, timeout: float = 120) -> float:
    """p50 (ms) of a bare CUDA-graph replay loop of torchvision's `name`, batch 1, in a fresh process."""
    r = subprocess.run(
        [sys.executable, "-c", BARE_GRAPH, name, str(SIZE), str(BARE_RUNS)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()
        raise RuntimeError(tail[-1] if tail else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])["p50"]


def profile_row(name: str) -> dict:
    """cnncompare's GPU profile of one model and the bare graph loop beside it (errors kept in the row)."""
    from cnncompare import profiling

    row: dict = {"model": name}
    try:
        p = profiling.profile(name, SIZE, device="cuda", budget_s=TIMING_BUDGET_S)
        row.update(
            eager_p50=p.latency_ms.p50,
            graph_p50=p.latency_graph_ms.p50 if p.latency_graph_ms else None,
            batch=p.batch,
            images_per_s=p.throughput_ips,
            tflops=p.tflops,
            peak_tflops=p.peak_tflops,
            peak_fraction=p.peak_fraction,
            macs=p.macs,
            dtype=p.dtype,
            warnings=p.warnings,
        )
    except Exception as err:  # noqa: BLE001 - keep the other models
        row["error"] = f"profile: {type(err).__name__}: {err}"
    finally:
        _free_cuda()
    try:
        row["bare_graph_p50"] = bare_graph_p50(name)
    except Exception as err:  # noqa: BLE001
        row["error"] = (row.get("error", "") + f" bare: {type(err).__name__}: {err}").strip()
    if row.get("graph_p50") and row.get("bare_graph_p50"):
        row["ours_over_bare"] = row["graph_p50"] / row["bare_graph_p50"]
    return row


def section_profile(args) -> dict:
    """Eager and graph batch-1 latency vs a bare graph loop; throughput, TFLOP/s, fraction of peak."""
    from cnncompare import profiling

    rows = []
    for name in args.models:
        if _left(args) < MIN_LEFT_S:
            rows.append({"model": name, "error": "skipped: out of time"})
            continue
        t0 = time.monotonic()
        rows.append(profile_row(name))
        rows[-1]["wall_s"] = time.monotonic() - t0
        print(json.dumps(rows[-1]), flush=True)
    table = [
        [
            r["model"],
            _f(r.get("eager_p50")),
            _f(r.get("graph_p50")),
            _f(r.get("bare_graph_p50")),
            _f(r.get("ours_over_bare"), ".3f"),
            _f(r.get("batch"), "d"),
            _f(r.get("images_per_s"), ",.0f"),
            _f(r.get("tflops"), ".1f"),
            _f(r["peak_fraction"] * 100, ".1f") if r.get("peak_fraction") else "-",
            "; ".join(r.get("warnings", []) + ([r["error"]] if r.get("error") else [])),
        ]
        for r in rows
    ]
    report(
        f"GPU profile: batch-1 latency (eager, CUDA graph, bare graph loop) and throughput at {SIZE} px",
        [
            "model",
            "eager p50 ms",
            "graph p50 ms",
            "bare graph p50 ms",
            "ours ÷ bare",
            "batch",
            "img/s",
            "TFLOP/s",
            "% of peak",
            "notes",
        ],
        table,
        notes=(
            f"{profiling.GRAPH_NOTE} Bare loop: plain torchvision model in a fresh process, same precision "
            f"and timing (perf_counter around replay + synchronize, median of {BARE_RUNS}); ours uses timm "
            "for vgg16 and resnet50 (same layers). Target ours ÷ bare within 0.90-1.10. TFLOP/s = "
            "2 × MACs × img/s; peak = dense bf16 tensor peak of the card (profiling.PEAK_TFLOPS)."
        ),
        command="python benchmarks/bench_gpu.py --only profile",
    )
    return {"rows": rows}


# --------------------------------------------------------------------------- training


def section_train(args) -> dict:
    """Steady-state training img/s of our loop vs a plain loop in a fresh process, per model (gpu_train.py)."""
    from benchmarks import gpu_train

    args.batch, args.steps = TRAIN_BATCH, TRAIN_STEPS
    args_models = [m for m in args.models if _left(args) > MIN_LEFT_S]
    rows = gpu_train.section_train(_with(args, models=args_models))
    table = [
        [
            r["model"],
            _f(r.get("batch"), "d"),
            _f(r.get("ours_ips"), ",.0f"),
            _f(r.get("plain_ips"), ",.0f"),
            _f(r.get("ratio"), ".3f"),
            _f(r.get("ours_warmup_s"), ".1f"),
            _f(r.get("plain_warmup_s"), ".1f"),
            r.get("error", ""),
        ]
        for r in rows
    ]
    report(
        "GPU training: our loop vs a plain PyTorch loop (full fine-tuning, 224 px, bf16 autocast, channels_last)",
        ["model", "batch", "ours img/s", "plain img/s", "ours ÷ plain", "ours warm-up s", "plain warm-up s", "notes"],
        table,
        notes=(
            "Steady state after the warm-up steps (cuDNN autotuning) in both. Plain loop: torchvision model in a "
            "fresh process, Adam (fused), data already on the GPU as uint8, normalised per step, cuDNN "
            "autotuning on. Ours: cnncompare.training.run with the images decoded once and kept on the GPU; "
            "per-epoch evaluation not counted in img/s. Target ours ÷ plain >= 0.90; resnet50 >= 3,500 img/s."
        ),
        command="python benchmarks/bench_gpu.py --only train",
    )
    return {"rows": rows}


def section_epoch(args) -> dict:
    """One epoch of 50,000 generated CIFAR-sized images at 224 px for each classic model (gpu_train.py)."""
    from benchmarks import gpu_train

    args.epoch_images = EPOCH_IMAGES
    rows = gpu_train.section_epoch(args)
    total = sum(r.get("wall_s", 0) for r in rows)
    table = [
        [
            r["model"],
            _f(r.get("images"), ",d"),
            _f(r.get("batch"), "d"),
            _f(r.get("wall_s"), ".1f"),
            _f(r.get("train_s"), ".1f"),
            _f(r.get("ours_ips"), ",.0f"),
            r.get("error", ""),
        ]
        for r in rows
    ]
    table.append(["all four", "", "", _f(total, ".1f"), "", "", "target < 300 s (aim 180 s)"])
    report(
        "GPU: one epoch of 50,000 CIFAR-sized images at 224 px per model",
        ["model", "images", "batch", "wall s", "train s", "img/s", "notes"],
        table,
        notes=(
            "Images generated at 32 px (CIFAR-10's size: 150 MB for 50k), kept at that size in GPU memory and "
            "resized to 224 px per batch on the GPU; automatic batch (128); wall time includes building the "
            "model, evaluating 1,000 validation images and profiling the trained model."
        ),
        command="python benchmarks/bench_gpu.py --only epoch",
    )
    return {"rows": rows, "total_wall_s": total}


def _with(args, **changes):
    out = argparse.Namespace(**vars(args))
    for k, v in changes.items():
        setattr(out, k, v)
    return out


SECTIONS = {"profile": section_profile, "train": section_train, "epoch": section_epoch}


# --------------------------------------------------------------------------- driver


def _write(path: str | None, results: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(results, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="wall-clock budget for the whole run")
    parser.add_argument("--models", default=",".join(MODELS), help="models for the profile section")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    results: dict = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "sections": {}}
    if not torch.cuda.is_available():
        print("no CUDA: bench_gpu.py measures a GPU and there is none here; nothing measured.")
        results["error"] = "no CUDA"
        _write(args.out, results)
        return 0
    from cnncompare import profiling

    args.deadline = time.monotonic() + args.budget_s
    results["machine"] = machine()
    results["env"] = profiling.environment(torch.device("cuda"))
    print(f"{results['machine']}; driver {results['env'].get('driver')}", flush=True)
    for name in chosen:
        t0 = time.monotonic()
        try:
            results["sections"][name] = SECTIONS[name](args)
        except Exception as err:  # noqa: BLE001 - report it and go on with the next section
            traceback.print_exc()
            results["sections"][name] = {"error": f"{type(err).__name__}: {err}"}
        results["sections"][name]["wall_s"] = time.monotonic() - t0
        _write(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
