"""A run's folder on disk, its one owner: how it is named, written, copied, moved between machines and pruned.

A run folder is `<stamp>-<model>` (`-2`, `-3` for the same second) under a root: a visitor's folder, the
server's store of shared runs, or the CLI's `--out`. Its files are written whole (`fileio`); a copy is made under
a temporary name and renamed when complete, so a reader never sees half a folder; the weights of a copy are
hard-linked where the disk allows (a run shared with 30 visitors keeps one file). What the files hold is
`runs.RunStore`'s (written as a run goes) and `runs.SavedRun`'s (read back).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fileio import TMP_SUFFIX, is_partial, write_atomic

__all__ = ["RunFolder", "prune", "clean_tmp", "folder_bytes", "owner_of", "COPYING"]

COPYING = ".copying"  # a copy in progress: renamed to its name when complete


@dataclass(frozen=True)
class RunFolder:
    """One run's folder (`path`); made by `create`, `copy_to` or `unpack`."""

    path: Path

    # ------------------------------------------------------------------ naming

    @staticmethod
    def fresh_path(root: str | Path, name: str) -> Path:
        """A name for a new run of `name` under `root`: the time, then the name in safe characters."""
        base = Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
        path, i = base, 1
        while path.exists() or path.with_name(path.name + COPYING).exists():
            i += 1
            path = base.with_name(f"{base.name}-{i}")
        return path

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunFolder:
        """A new, empty run folder (two runs starting in the same second get different folders)."""
        Path(root).mkdir(parents=True, exist_ok=True)
        while True:
            path = cls.fresh_path(root, name)
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:  # another process took the name in between
                continue

    @property
    def name(self) -> str:
        return self.path.name

    # ------------------------------------------------------------------ files

    def write_json(self, file: str, obj: Any) -> None:
        write_atomic(self.path / file, json.dumps(obj, indent=2, default=str))

    def read_json(self, file: str) -> dict:
        return json.loads((self.path / file).read_text())

    @property
    def finished(self) -> bool:
        return (self.path / "results.json").is_file() and (self.path / "config.json").is_file()

    @property
    def owner(self) -> str | None:
        return owner_of(self.path)

    def bytes(self) -> int:
        return folder_bytes(self.path)

    # ------------------------------------------------------------------ copies

    def copy_to(
        self, dst: Path, *, owner: str | None, label: str | None = None, shared_with: int | None = None
    ) -> RunFolder:
        """This run, copied to `dst` (replacing it) for `owner`, as `label`, the `shared_with`-th to have it.

        Raises:
            OSError: the disk refused; nothing is left behind.
        """
        tmp = dst.with_name(dst.name + COPYING)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for f in self.path.iterdir():
                if f.is_file() and not f.name.startswith(".") and not is_partial(f):
                    _link_or_copy(f, tmp / f.name)
            copy = RunFolder(tmp)
            config = copy.read_json("config.json")
            config.pop("owner", None)
            config.update({k: v for k, v in (("owner", owner), ("label", label)) if v})
            copy.write_json("config.json", config)
            if shared_with is not None:
                results = copy.read_json("results.json")
                results.update(shared_with=shared_with, run_dir=dst.name, **({"label": label} if label else {}))
                copy.write_json("results.json", results)
            return RunFolder._moved(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def tar(self) -> bytes:
        """The folder as an uncompressed tar (a run coming back from a cluster node)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for f in sorted(self.path.iterdir()):
                if f.is_file() and not is_partial(f):
                    tf.add(f, arcname=f.name)
        return buf.getvalue()

    @classmethod
    def unpack(cls, blob: bytes, root: Path, name: str) -> RunFolder:
        """A tarred run folder (`tar`) into `root`, under `name` or a free name after it; its results name the
        new place."""
        dst, i = root / name, 1
        while dst.exists():
            i += 1
            dst = root / f"{name}-{i}"
        tmp = dst.with_name(dst.name + COPYING)
        tmp.mkdir(parents=True)
        try:
            with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
                tf.extractall(tmp, filter="data")  # plain files only, inside tmp
            if (tmp / "results.json").is_file():
                copy = RunFolder(tmp)
                copy.write_json("results.json", {**copy.read_json("results.json"), "run_dir": str(dst)})
            return cls._moved(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @staticmethod
    def _moved(tmp: Path, dst: Path) -> RunFolder:
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
        return RunFolder(dst)


def _link_or_copy(src: Path, dst: Path) -> None:
    if src.suffix == ".safetensors":
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


# --------------------------------------------------------------------------- a root's runs


def folder_bytes(path: str | Path) -> int:
    """Bytes of the files under `path`, a file with several names (a shared run's weights, hard-linked into each
    visitor's copy) counted once over all its names: each name pays its share, so sums over folders add up to the
    disk really used."""
    total = 0
    for f in Path(path).rglob("*"):
        try:
            st = f.stat()
        except OSError:
            continue
        if f.is_file():
            total += st.st_size // max(1, st.st_nlink)
    return total


def owner_of(run_dir: str | Path) -> str | None:
    """Who made a run (the `owner` its config.json records: a visitor's id on a server), or None."""
    try:
        owner = json.loads((Path(run_dir) / "config.json").read_text()).get("owner")
    except (OSError, ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


def clean_tmp(root: str | Path) -> int:
    """Remove leftover `*.tmp` files (a crash mid-write); returns how many."""
    n = 0
    for f in Path(root).rglob(f"*{TMP_SUFFIX}"):
        if f.is_file():
            f.unlink(missing_ok=True)
            n += 1
    return n


def _run_dirs(root: Path) -> list[Path]:
    return [p.parent for p in root.rglob("config.json") if p.parent != root and not p.parent.name.endswith(COPYING)]


def prune(
    root: str | Path,
    *,
    max_bytes: float | None = None,
    max_age_s: float | None = None,
    busy_s: float = 3600,
    owner: str | None = None,
) -> list[Path]:
    """Delete run folders under `root`: those older than `max_age_s`, then the oldest until the rest fit `max_bytes`.

    A folder without results.json that changed in the last `busy_s` seconds is a run in progress
    and is kept. With `owner`, only that owner's runs are counted and removed (a member of a shared
    workspace never loses another member's runs to their own quota). Returns the removed folders.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    now = time.time()
    found = _run_dirs(root)
    if owner is not None:
        found = [p for p in found if owner_of(p) == owner]
    runs = sorted(found, key=lambda p: (p / "config.json").stat().st_mtime)
    busy = {p for p in runs if not (p / "results.json").exists() and now - p.stat().st_mtime < busy_s}
    removed: list[Path] = []
    sizes = {p: folder_bytes(p) for p in runs}
    total = sum(sizes.values())
    for p in runs:
        if p in busy:
            continue
        old = max_age_s is not None and max_age_s > 0 and now - (p / "config.json").stat().st_mtime > max_age_s
        over = max_bytes is not None and total > max_bytes
        if old or over:
            shutil.rmtree(p, ignore_errors=True)
            total -= sizes[p]
            removed.append(p)
    return removed
