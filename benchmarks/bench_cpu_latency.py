"""CPU batch-1 latency of resnet18 at 224 px: does cnncompare report what a bare PyTorch loop sees?

    .venv/bin/python benchmarks/bench_cpu_latency.py [--rounds 3]

Each measurement runs in a fresh Python process with default settings, so nothing one of them
sets (threads, the OpenMP wait policy, which is read when torch loads) reaches another. The
rounds interleave the measurements, in a rotating order, because this machine's speed drifts.

  bare          torchvision resnet18 (random weights), eval, inference_mode, warm-up, median of N
  bare, CL      the same in channels_last (cnncompare's CPU memory format, see runtime.py)
  cnncompare    `python -m cnncompare profile resnet18 --json` -> latency_ms.p50
  2 profiles    two cnncompare profiles at once in one process (two threads): each one's p50
                ('threads': torch threads each saw when it started; runtime.cpu_threads shares the cores)
  2 bare loops  two bare loops at once in one process (two threads), for reference

Target: cnncompare within 10 % of bare. Timing is reported here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224
WARMUP = 5
RUNS = 30
PAIR_BUDGET_S = 1.0  # each concurrent profile's timing phases (the CLI keeps its default 2 s)


# --------------------------------------------------------------------------- workers (fresh processes)


def _bare_model(channels_last: bool = False):
    import torch
    import torchvision

    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


def _bare_p50(model, x) -> float:
    import time

    import torch

    times = []
    with torch.inference_mode():
        for _ in range(WARMUP):
            model(x)
        for _ in range(RUNS):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _in_threads(jobs) -> list:
    """Run the callables at once, one thread each, started together; their results in order."""
    import threading

    results = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(i):
        barrier.wait()
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def worker(kind: str) -> dict:
    """One measurement, run inside a fresh process; returns {'p50': [ms, ...], ...}."""
    if kind == "bare":
        return {"p50": [_bare_p50(*_bare_model())]}
    if kind == "bare-cl":
        return {"p50": [_bare_p50(*_bare_model(channels_last=True))]}
    if kind == "pair-bare":
        pairs = [_bare_model(), _bare_model()]
        return {"p50": _in_threads([lambda m=m, x=x: _bare_p50(m, x) for m, x in pairs])}
    if kind == "pair-profile":
        from cnncompare import models, profiling  # as the app: cnncompare first, then torch

        built = [models.build("resnet18"), models.build("resnet18")]
        profiles = _in_threads(
            [lambda m=m: profiling.profile(m, SIZE, device="cpu", budget_s=PAIR_BUDGET_S) for m in built]
        )
        return {
            "p50": [p.latency_ms.p50 for p in profiles],
            "threads": [p.threads for p in profiles],
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
        }
    raise SystemExit(f"unknown worker {kind}")


# --------------------------------------------------------------------------- driver


def _run(cmd: list[str], timeout: float = 150) -> str:
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    return r.stdout


def measure(kind: str) -> dict:
    """One measurement in a fresh process: a worker of this script, or the cnncompare CLI."""
    if kind == "cli":
        rows = json.loads(_run([sys.executable, "-m", "cnncompare", "profile", "resnet18", "--json"]))
        return {"p50": [rows[0]["latency_ms"]["p50"]], "threads": [rows[0]["threads"]]}
    out = _run([sys.executable, str(Path(__file__).resolve()), "--worker", kind])
    return json.loads(out.strip().splitlines()[-1])


LABELS = {
    "bare": "bare loop",
    "bare-cl": "bare loop, channels_last",
    "cli": "cnncompare profile (CLI)",
    "pair-profile": "2 cnncompare profiles at once, one process",
    "pair-bare": "2 bare loops at once, one process",
}


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def _fmt(values, spec: str = ".1f") -> str:
    return " / ".join(format(v, spec) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=160,
        help="start no new measurement after this many seconds (a busy machine slows every row)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return

    kinds = list(LABELS)
    load_before = _load()
    samples: dict[str, dict[int, list[float]]] = {k: {} for k in kinds}  # round -> one p50 per thread
    errors: dict[str, str] = {}
    extra: dict[str, object] = {}
    started = time.monotonic()
    for r in range(args.rounds):
        for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:  # rotate: no kind always goes first
            if time.monotonic() - started > args.budget_s:
                errors.setdefault(kind, f"round {r + 1} skipped: past --budget-s {args.budget_s:.0f}")
                continue
            t0 = time.monotonic()
            try:
                result = measure(kind)
            except Exception as err:  # noqa: BLE001 - one failed measurement must not lose the others
                errors[kind] = f"round {r + 1} failed: {type(err).__name__}: {err}"
                continue
            samples[kind][r] = result["p50"]
            extra.setdefault(kind, {k: v for k, v in result.items() if k != "p50"})
            print(
                f"round {r + 1}: {LABELS[kind]}: {_fmt(result['p50'])} ms "
                f"({time.monotonic() - t0:.0f} s with start-up)",
                flush=True,
            )

    bare = {r: v[0] for r, v in samples["bare"].items()}
    rows = []
    for kind in kinds:
        if not samples[kind]:
            rows.append([LABELS[kind], "-", "-", "-", errors.get(kind, "")])
            continue
        per_thread = list(zip(*samples[kind].values()))  # one tuple of round values per thread
        medians = [statistics.median(t) for t in per_thread]
        # ÷ bare within each round (neighbours in time, so drift cancels), then the median over rounds
        ratios = [[v / bare[r] for v in vals] for r, vals in samples[kind].items() if r in bare]
        ratio = _fmt([statistics.median(t) for t in zip(*ratios)], ".2f") if ratios else "-"
        rounds = "; ".join(_fmt(v) for v in samples[kind].values())
        notes = ", ".join(
            f"{k} {'/'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in (extra.get(kind) or {}).items()
        )
        if kind in errors:
            notes = f"{notes}; {errors[kind]}".lstrip("; ")
        rows.append([LABELS[kind], rounds, _fmt(medians), ratio, notes])

    from benchmarks._results import report  # imports torch: only after the workers have run

    load = f"1-min load average {load_before} before, {_load()} after (other work on the machine skews all rows)."

    report(
        f"CPU batch-1 latency, resnet18 at {SIZE} px: cnncompare vs a bare loop",
        ["measurement", "p50 per round (ms; threads split by /)", "median p50 (ms)", "÷ bare", "notes"],
        rows,
        notes=(
            f"Each row in a fresh process, default settings, {args.rounds} interleaved rounds; bare loops: "
            f"{WARMUP} warm-up + median of {RUNS}. ÷ bare: median over rounds of each round's ratio to "
            "that round's bare loop. Target: cnncompare ÷ bare within 0.90-1.10. "
            "Concurrent rows: two jobs share this machine's cores, so each is slower than alone. " + load
        ),
        command="python benchmarks/bench_cpu_latency.py",
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
