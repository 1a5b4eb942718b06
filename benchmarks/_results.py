"""Print a benchmark table and record it, with machine and date, in benchmarks/RESULTS.md.

RESULTS.md keeps one current section per benchmark (its `## title`): a new run of the same benchmark replaces its
section in place; earlier results are in git's history of the file (`git log -p benchmarks/RESULTS.md`).
"""

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
    RESULTS.write_text(replaced(RESULTS.read_text() if RESULTS.exists() else HEADER, title, text))
    return text


HEADER = (
    "# Benchmark results\n\nOne current section per benchmark, written by the scripts in this folder (each says its "
    "command, machine and date); earlier results are in git's history of this file.\n"
)


def sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The page's header and its (title, section text) in order."""
    head, *parts = text.split("\n## ")
    return head, [(part.split("\n", 1)[0].strip(), "\n## " + part) for part in parts]


def replaced(page: str, title: str, section: str) -> str:
    """`page` with the section titled `title` replaced by `section` (added at the end when it is new)."""
    head, parts = sections(page)
    body = [text for t, text in parts if t != title]
    at = next((i for i, (t, _) in enumerate(parts) if t == title), len(body))
    body.insert(min(at, len(body)), section.rstrip("\n") + "\n")
    return head.rstrip("\n") + "\n" + "".join(b if b.endswith("\n") else b + "\n" for b in body)
