"""Print a benchmark table and append it, with machine and date, to benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    import timm
    import torch
    import torchvision

    if torch.cuda.is_available():
        dev = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        dev = f"CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return (
        f"{dev}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, timm {timm.__version__}"
    )


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def report(title: str, header: list[str], rows: list[list], notes: str = "", command: str = "") -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"\n## {title}\n\n{stamp} · {machine()}\n\n"
    if command:
        text += f"`{command}`\n\n"
    text += markdown_table(header, rows) + "\n"
    if notes:
        text += f"\n{notes}\n"
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nRows appended by the scripts in this folder; newest last.\n")
    with RESULTS.open("a") as f:
        f.write(text)
    return text
