"""Every Learn preset through the app's own path: the estimate, then the real comparison.

    .venv/bin/python benchmarks/bench_presets.py [--only KEY ...] [--seeds N] [--no-append]

For each preset: the Fine-tune form filled by the preset (as the Learn button does), read and
loaded by the Fine-tune tab's own functions, estimated by the engine's `estimate_runs` (what the
Estimate button shows), then run by `compare.run_plan` with a runs folder (what Start does).
Per run: estimate vs actual wall time (build, features, epochs, evaluation, profile, save);
per preset: how long Estimate took, the total, and the lesson's own reading of the runs (whether
they showed the point the lesson makes). Targets (issue 9): every estimate within
±25 % of its run, Estimate under 3 s, every preset under 3 min on a 2-core CPU.

`--seeds N` runs each preset N times, with seeds 0..N-1 in place of its own (the seed fixes the split and the
starting weights), and counts on how many seeds it showed its point (issue 24: 3 seeds for a training lesson).
A run of some presets only (`--only`) or of several seeds gets its own section in RESULTS.md, titled by what it
ran, so it never replaces the section of the full run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("CNNCOMPARE_OFFLINE", "1")  # the classroom default here: no downloads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gradio as gr  # noqa: E402

from benchmarks._results import report  # noqa: E402
from cnncompare import compare, estimate, lessons, training  # noqa: E402
from cnncompare.ui import common, comparison, finetune, learn  # noqa: E402


def run_preset(ctx, form, preset, estimate_only: bool = False, seed: int | None = None) -> list[list]:
    values = learn.filled(preset, learn.start_values(form))
    if seed is not None:
        values["seed"] = seed
    key = preset.key if seed is None else f"{preset.key} (seed {seed})"
    c = comparison.read_comparison(ctx, values)
    ds = comparison.spec_of(ctx, c).open()  # what a worker opens for this comparison
    runs = c.plan.runs()
    t0 = time.perf_counter()
    estimates = [r.estimate for r in estimate.estimate_plan(c.plan, ds).runs]
    est_s = time.perf_counter() - t0
    if estimate_only:
        rows = [[key, r.label, f"{e.total_s:.0f}", "", "", "", e.note] for r, e in zip(runs, estimates)]
        rows.append([key, "**whole preset**", f"{sum(e.total_s for e in estimates):.0f}", "", "", "", f"{est_s:.1f}"])
        print(*rows, sep="\n", flush=True)
        return rows
    walls: dict[str, float] = {}
    results: dict[str, training.RunResult] = {}
    with tempfile.TemporaryDirectory() as out:
        t_start = last = time.perf_counter()
        for ev in compare.run_plan(c.plan, ds, out_dir=out):
            if ev.kind == "end":
                now = time.perf_counter()
                walls[ev.label], results[ev.label], last = now - last, ev.result, now
        total = time.perf_counter() - t_start
    rows = []
    for run, est in zip(runs, estimates):
        r = results[run.label]
        actual = walls[run.label]
        top1 = f"{r.val_top1:.0f} %" if r.val_top1 is not None else (r.error or "–")
        if r.history:
            top1 += f" (loss {r.history[-1]['train_loss']:.2f})"
        rows.append([key, run.label, f"{est.total_s:.0f}", f"{actual:.0f}", f"{est.total_s / actual:.2f}", top1, ""])
    est_total = sum(e.total_s for e in estimates)
    reading = lessons.read(preset, [results[r.label] for r in runs])
    shown = {True: "showed its point", False: "did NOT show its point", None: "nothing to read"}[reading.showed]
    rows.append([key, "**what the runs showed**", "", "", "", shown, reading.sentence])
    rows.append(
        [
            key,
            "**whole preset**",
            f"{est_total:.0f}",
            f"{total:.0f}",
            f"{est_total / total:.2f}",
            "",
            f"{est_s:.1f}",
        ]
    )
    print(*rows, sep="\n", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="preset keys (default: all)")
    parser.add_argument("--seeds", type=int, help="run each preset with seeds 0..N-1 instead of its own seed")
    parser.add_argument("--estimate-only", action="store_true", help="only the estimates (implies --no-append)")
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    presets = [p for p in learn.PRESETS if not args.only or p.key in args.only]
    seeds = list(range(args.seeds)) if args.seeds else [None]
    with tempfile.TemporaryDirectory() as root:
        ctx = common.Context.from_env(root)
        with gr.Blocks():
            ft = finetune.build(ctx)
        rows = []
        for preset in presets:
            shown = 0
            for seed in seeds:
                got = run_preset(ctx, ft.form, preset, args.estimate_only, seed)
                shown += any(r[1] == "**what the runs showed**" and r[5] == "showed its point" for r in got)
                rows += got
            if args.seeds and not args.estimate_only:
                rows.append([preset.key, f"**showed its point on {shown} of {len(seeds)} seeds**", *[""] * 5])
    header = ["preset", "run", "estimate s", "actual s", "estimate ÷ actual", "val top-1 (final training loss)"]
    header.append("Estimate took s (reading)")
    notes = (
        "Offline (random weights where a preset asks for ImageNet weights: same cost). Actual = wall time of each "
        "run as Start runs it (build, features, epochs, evaluation, profile, save); the whole preset adds loading."
    )
    if args.no_append or args.estimate_only:
        print(header, *rows, sep="\n")
        return
    title, command, part = "Learn presets: estimate vs actual", "python benchmarks/bench_presets.py", []
    if args.only:
        part.append(", ".join(p.key for p in presets))
        command += " --only " + " ".join(args.only)
    if args.seeds:
        part.append(f"seeds 0-{args.seeds - 1}")
        command += f" --seeds {args.seeds}"
    if part:  # a part of the full run gets a section of its own: it never replaces the full run's
        title += f" ({'; '.join(part)})"
    report(title, header, rows, notes, command)


if __name__ == "__main__":
    main()
