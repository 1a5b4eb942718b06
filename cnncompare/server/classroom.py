"""A class in one workspace: the teacher's runs (and latest comparison) come along when they open it, and every
member's page shows the class's latest comparison (its curves, results and reading) as it is recorded here.

A workspace is a folder of runs shared by everyone who has its code (`visitors`). This module keeps, in that
folder, who opened it (`.class/teacher`) and the latest finished comparison (`.class/latest.json`: its headline
with the lesson's reading, its dataset line, and its run folders by name), each counted in the writer's ledger
before it is written. No gradio here: `ui.classroom` draws it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import runfolder
from ..fileio import write_atomic
from . import ledger
from .visitors import Visitor, personal_dir, visitor_dir

__all__ = ["carry_runs", "record", "latest", "teacher_of", "CLASS_DIR"]

CLASS_DIR = ".class"  # not a run folder (no config.json): run lists skip it


def _class_dir(ctx, visitor: Visitor) -> Path:
    path = visitor_dir(ctx, visitor, create=True) / CLASS_DIR
    path.mkdir(exist_ok=True)
    return path


def carry_runs(ctx, visitor: Visitor) -> int:
    """The visitor's own finished runs, copied into the workspace they are now in (weights hard-linked: no second
    copy on disk), still theirs; they are recorded as its teacher. Returns how many runs came along."""
    if not visitor.workspace:
        return 0
    own = personal_dir(ctx, visitor)
    target = visitor_dir(ctx, visitor, create=True)
    folders = [d for d in sorted(own.iterdir()) if (d / "results.json").is_file()] if own.is_dir() else []
    small = sum(f.stat().st_size for d in folders for f in d.iterdir() if f.is_file() and f.suffix != ".safetensors")
    with ledger.reserve(ctx, visitor, small, "Bringing your runs into the workspace", "runs"):
        for d in folders:
            if not (target / d.name).exists():
                runfolder.RunFolder(d).copy_to(target / d.name, owner=visitor.id)
        write_atomic(_class_dir(ctx, visitor) / "teacher", visitor.id)
        mine = own / CLASS_DIR / "latest.json"
        if mine.is_file():  # their latest comparison is the class's first (its runs came along under their names)
            write_atomic(_class_dir(ctx, visitor) / "latest.json", mine.read_bytes())
    return len(folders)


def teacher_of(ctx, visitor: Visitor) -> str | None:
    """The id of whoever opened the visitor's workspace with their runs (None: nobody did)."""
    try:
        return (visitor_dir(ctx, visitor) / CLASS_DIR / "teacher").read_text().strip() or None
    except OSError:
        return None


def record(ctx, visitor: Visitor, headline: str, dataset_line: str, run_dirs: list[str]) -> None:
    """A finished comparison: what every member of a workspace sees next (the newest replaces the last); in a
    visitor's own folder it is what comes along when they open a class workspace."""
    folder = visitor_dir(ctx, visitor)
    names = [Path(d).name for d in run_dirs if d and Path(d).parent.resolve() == folder.resolve()]
    if not names:
        return
    blob = json.dumps(
        {"headline": headline, "dataset": dataset_line, "runs": names, "by": visitor.id, "time": time.time()}
    ).encode()
    with ledger.reserve(ctx, visitor, len(blob), "The class's record of this comparison", "runs"):
        write_atomic(_class_dir(ctx, visitor) / "latest.json", blob)


def latest(ctx, visitor: Visitor) -> tuple[dict, list[Path]] | None:
    """The workspace's latest comparison and its run folders that still exist (None: none recorded)."""
    path = visitor_dir(ctx, visitor) / CLASS_DIR / "latest.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    folder = visitor_dir(ctx, visitor)
    dirs = [folder / n for n in rec.get("runs", []) if isinstance(n, str) and "/" not in n and (folder / n).is_dir()]
    return rec, dirs
