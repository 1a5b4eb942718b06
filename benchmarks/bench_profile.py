"""How long profiling takes, and whether the latency harness adds or hides time.

    .venv/bin/python benchmarks/bench_profile.py

1. Counting cost per model (meta-device build + params + MACs + activation memory).
2. Wall time of the CLI contract command `profile <5 classics> --no-latency --json`
   (target: < 15 s on a 2-core CPU, imports included).
3. Latency harness vs a bare `perf_counter` loop, resnet18, batch 1, 224 px, interleaved
   (target: within 15 %).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import report  # noqa: E402
from cnncompare import models, profiling  # noqa: E402

CLASSICS = [("alexnet", 224), ("vgg16", 224), ("googlenet", 224), ("resnet50", 224), ("inception_v3", 299)]


def counting_rows() -> list[list]:
    rows = []
    for name, size in CLASSICS:
        t0 = time.perf_counter()
        meta = models.build(name, device="meta")
        params, _ = models.count_params(meta)
        t1 = time.perf_counter()
        macs = profiling.count_macs(name, size)
        t2 = time.perf_counter()
        profiling.activation_bytes(name, size)
        t3 = time.perf_counter()
        rows.append([name, size, f"{params / 1e6:.2f} M", f"{macs / 1e9:.3f} G", f"{(t1 - t0) * 1e3:.0f}",
                     f"{(t2 - t1) * 1e3:.0f}", f"{(t3 - t2) * 1e3:.0f}"])
    return rows


def cli_wall() -> float:
    cmd = [sys.executable, "-m", "cnncompare", "profile", *[n for n, _ in CLASSICS], "--no-latency", "--json"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - t0


def harness_vs_bare(rounds: int = 3) -> tuple[float, float]:
    model = models.build("resnet18").eval()
    x = torch.randn(1, 3, 224, 224)
    harness, bare = [], []
    for _ in range(rounds):
        lat, _, _, _ = profiling.measure_latency(model, 224, torch.device("cpu"), batch=1, budget_s=1.0)
        harness.append(lat.p50)
        times = []
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            for _ in range(20):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
        bare.append(statistics.median(times))
    return statistics.median(harness), statistics.median(bare)


def main() -> None:
    report("Counting cost (meta device)", ["model", "px", "params", "MACs", "build+params ms", "MACs ms",
                                            "activation ms"], counting_rows(),
           command="python benchmarks/bench_profile.py")
    walls = [cli_wall() for _ in range(2)]
    h, b = harness_vs_bare()
    report("CLI wall time and latency-harness overhead", ["measure", "value", "target"], [
        ["`profile alexnet vgg16 googlenet resnet50 inception_v3 --no-latency --json` wall s (best of 2)",
         f"{min(walls):.1f}", "< 15"],
        ["resnet18 b1 224 px p50, harness ms", f"{h:.1f}", ""],
        ["resnet18 b1 224 px p50, bare loop ms", f"{b:.1f}", ""],
        ["harness / bare", f"{h / b:.3f}", "0.85 - 1.15"],
    ])


if __name__ == "__main__":
    main()
