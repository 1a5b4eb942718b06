"""How long profiling takes.

    .venv/bin/python benchmarks/bench_profile.py

1. Counting cost per model (meta-device build + params + MACs + activation memory).
2. Wall time of the CLI contract command `profile <5 classics> --no-latency --json`
   (target: < 15 s on a 2-core CPU, imports included).

Whether the latency harness agrees with a bare loop: benchmarks/bench_cpu_latency.py (CPU,
fresh processes) and benchmarks/bench_gpu.py --only profile (GPU, CUDA graphs).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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
        rows.append(
            [
                name,
                size,
                f"{params / 1e6:.2f} M",
                f"{macs / 1e9:.3f} G",
                f"{(t1 - t0) * 1e3:.0f}",
                f"{(t2 - t1) * 1e3:.0f}",
                f"{(t3 - t2) * 1e3:.0f}",
            ]
        )
    return rows


def cli_wall() -> float:
    cmd = [sys.executable, "-m", "cnncompare", "profile", *[n for n, _ in CLASSICS], "--no-latency", "--json"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - t0


def main() -> None:
    report(
        "Counting cost (meta device)",
        ["model", "px", "params", "MACs", "build+params ms", "MACs ms", "activation ms"],
        counting_rows(),
        command="python benchmarks/bench_profile.py",
    )
    walls = [cli_wall() for _ in range(2)]
    report(
        "CLI wall time",
        ["measure", "value", "target"],
        [
            [
                "`profile alexnet vgg16 googlenet resnet50 inception_v3 --no-latency --json` wall s (best of 2)",
                f"{min(walls):.1f}",
                "< 15",
            ],
        ],
    )


if __name__ == "__main__":
    main()
