"""How well a run's memory is counted before it runs: `memory.run_memory` against the peak RSS of the real run.

    .venv/bin/python benchmarks/bench_memory.py [--no-append]

Each configuration runs in a fresh process (one epoch of the real `training.fine_tune` on the `shapes` data, as a
run on the server trains), which prints the count, then its peak resident memory's growth over what it held after
importing the libraries and building the data (VmHWM - VmRSS before the run). The count is what
CNNCOMPARE_MAX_RUN_MB is compared with, slack included; "raw" is the count without it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import markdown_table, report  # noqa: E402

CONFIGS = [  # model, freeze, size, batch, optimizer
    ("resnet18", "none", 128, 64, "adam"),
    ("resnet18", "head", 224, 32, "adam"),
    ("resnet50", "head", 128, 32, "adam"),
    ("vgg11", "none", 64, 16, "adam"),
    ("alexnet", "none", 224, 32, "momentum"),
    ("googlenet", "stages:2", 128, 32, "sgd"),
]

CHILD = """
import json, sys
from cnncompare import data, memory, training
from cnncompare.settings import ModelEntry, TrainSettings
model, freeze, size, batch, opt = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ds = data.load_dataset("shapes", work_dir=sys.argv[6], max_per_class=40)
entry, settings = ModelEntry(model, freeze=freeze), TrainSettings(size=size, batch_size=batch, epochs=1, optimizer=opt)
need = memory.run_memory(entry, settings, len(ds.train), len(ds.val), len(ds.classes))
def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024
base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
result = training.fine_tune(entry, settings, ds)
print(json.dumps(dict(count=need.total, raw=(need.total - memory.OVERHEAD) / memory.SLACK, peak=status("VmHWM:") - base,
                      error=result.error)))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)
    env = {**os.environ, "CNNCOMPARE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    rows = []
    for model, freeze, size, batch, opt in CONFIGS:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, model, freeze, str(size), str(batch), opt, "/tmp/cnncompare-bench-memory"],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        if out.returncode:
            rows.append([f"{model}@{freeze}", size, batch, opt, "–", "–", "–", out.stderr.strip()[-120:]])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mb = lambda b: f"{b / 2**20:,.0f}"  # noqa: E731
        rows.append(
            [
                f"{model}@{freeze}",
                size,
                batch,
                opt,
                mb(r["raw"]),
                mb(r["count"]),
                mb(r["peak"]),
                f"{r['peak'] / r['raw']:.2f}",
                f"{r['count'] / r['peak']:.2f}",
            ]
        )
        print(rows[-1], flush=True)
    header = [
        "run",
        "px",
        "batch",
        "optimizer",
        "raw count MB",
        "count MB",
        "peak growth MB",
        "peak ÷ raw",
        "count ÷ peak",
    ]
    notes = (
        "Peak growth = the run's VmHWM minus its VmRSS before the run (libraries and data loaded), fresh process, "
        "one epoch of 8 x 32 training images. count = raw x SLACK + OVERHEAD (memory.py); it should stay above the "
        "peak (count ÷ peak ≥ 1), so a run the server admits fits."
    )
    if args.no_append:
        print(markdown_table(header, rows) + "\n\n" + notes)
    else:
        report("Memory of a run: counted before vs measured", header, rows, notes, "python benchmarks/bench_memory.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
