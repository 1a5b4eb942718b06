"""Every byte a visitor's requests write, counted before it is written, and everything they leave, pruned.

What a visitor causes on disk, and where it lives:

    <runs>/visitors/<folder>/<run>/...          runs (in a workspace: the folder is shared, each run has an owner)
    <runs>/visitors/<id>/weights/*.safetensors  their own weights files
    <runs>/_shared/<key>/...                    finished runs kept for identical requests (`sharing`)
    <data>/visitors/<id>/uploads/<digest>/...   their unpacked uploads (zips, CIFAR archives)
    <gradio uploads>/cnncompare-downloads/v-<hash of id>/...   exports, comparison zips, heat maps

`usage` adds up one visitor's part (runs they made, weights, unpacked uploads, downloads); `reserve` is entered
before a write with the bytes it will take: past the visitor's quota (CNNCOMPARE_VISITOR_QUOTA_MB) or the
server's cap for that kind of file (runs and weights: CNNCOMPARE_RUNS_CAP_MB, unpacked uploads:
CNNCOMPARE_DATA_CAP_MB, downloads: CNNCOMPARE_DOWNLOADS_CAP_MB) it refuses in one sentence, after pruning
what has expired. Reservations in flight count too, so two requests at once cannot both take the last bytes.
A file with several names (a shared run's weights, hard-linked) counts once over all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .. import runfolder
from ..errors import CNNCompareError
from .paths import upload_folder
from .visitors import Visitor, personal_dir, visitor_dir, visitors_root

__all__ = [
    "CAPS",
    "usage",
    "server_bytes",
    "disk_bytes",
    "reserve",
    "downloads_dir",
    "visitor_downloads",
    "heat_maps_dir",
    "picture_name",
    "unpack_dir",
    "camera_dir",
    "clean_downloads",
    "prune_all",
    "eviction_note",
    "after_run",
    "at_start",
    "mb",
]

DOWNLOADS = "cnncompare-downloads"
DOWNLOADS_KEEP_S = 3600.0
SHARED_DIR = "_shared"
# which server cap a kind of file counts against, by its environment setting
CAPS = {"runs": "runs_cap_mb", "data": "data_cap_mb", "downloads": "downloads_cap_mb"}

_lock = threading.Lock()
_pending: dict[tuple[str, str], int] = {}  # (visitor id or "", cap) -> bytes reserved and not yet written


def mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:,.0f} MB"


def _limit(value: float) -> float | None:
    return value * 2**20 if value and value > 0 else None  # 0 = no limit


# --------------------------------------------------------------------------- where things live


def downloads_root() -> Path:
    return upload_folder() / DOWNLOADS


def visitor_downloads(visitor: Visitor) -> Path:
    """The visitor's own download folder: its name comes from their secret key's hash (unguessable), so gradio
    serves what is in it only to whoever holds a link."""
    return downloads_root() / ("v-" + hashlib.sha256(visitor.id.encode()).hexdigest()[:20])


def downloads_dir(visitor: Visitor) -> Path:
    """A new folder (random name) in the visitor's download folder, for one download; removed after an hour."""
    clean_downloads()
    path = visitor_downloads(visitor) / secrets.token_hex(16)
    path.mkdir(parents=True)
    return path


def latest_dir(visitor: Visitor, kind: str) -> Path:
    """The pictures of the visitor's latest answer of one kind (overwritten by the next one): "heat" (a prediction's
    heat maps), "maps" (feature maps)."""
    path = visitor_downloads(visitor) / kind
    path.mkdir(parents=True, exist_ok=True)
    os.utime(path)  # in use: the hour before it is cleaned counts from now
    return path


def picture_name(stem: str, blob: bytes, suffix: str, folder: Path) -> str:
    """A picture's file name in a visitor's folder (`folder`: one of `latest_dir`'s): the visitor's own (gradio
    keeps a file it serves under its name, so two visitors' pictures never share one) and after its content (the
    browser keeps what it fetched by URL, so a new picture under an old name would show the old one)."""
    return f"{stem}-{folder.parent.name[-12:]}-{hashlib.sha256(blob).hexdigest()[:16]}{suffix}"


def heat_maps_dir(visitor: Visitor) -> Path:
    return latest_dir(visitor, "heat")


def unpack_dir(ctx, visitor: Visitor) -> Path:
    """Where the visitor's uploads are unpacked: theirs alone, so whether a zip was seen before says nothing about
    anyone else's uploads (no timing oracle)."""
    return ctx.data_dir / "visitors" / visitor.id


def camera_dir(ctx, visitor: Visitor) -> Path:
    """The classes the visitor made with their camera (`capture.Captures`): in their own data folder, counted with
    their unpacked uploads (cap "data"), never pruned by age (they are the visitor's dataset)."""
    return unpack_dir(ctx, visitor) / "camera"


def _files_bytes(paths) -> int:
    """Bytes of the files under `paths`, each inode once; a file or folder removed meanwhile (a prune, an unpack
    finishing) is simply not counted."""
    seen, total = set(), 0
    for root in paths:
        root = str(root)
        walked = os.walk(root) if os.path.isdir(root) else [("", [], [root])] if os.path.isfile(root) else []
        for folder, _, files in walked:
            for name in files:
                try:
                    st = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def disk_bytes(path: str | Path) -> int:
    """Bytes of the files under `path` (a file or a folder), each inode once; 0 when it does not exist."""
    return _files_bytes([path])


def _weights_bytes(folder: Path) -> int:
    return _files_bytes([folder / "weights"])


def usage(ctx, visitor: Visitor) -> int:
    """Bytes the visitor uses: the runs they made (in a workspace, only theirs), their weights files, their unpacked
    uploads and their downloads (exports, zips, heat maps)."""
    extra = _files_bytes([unpack_dir(ctx, visitor), visitor_downloads(visitor)])
    return _run_bytes(ctx, visitor) + _weights_bytes(personal_dir(ctx, visitor)) + extra


def server_bytes(ctx, cap: str) -> int:
    """Bytes on disk of one kind, all visitors together (each inode once)."""
    if cap == "runs":
        return _files_bytes([visitors_root(ctx), ctx.runs_root / SHARED_DIR])
    if cap == "data":
        return _files_bytes([ctx.data_dir / "uploads", ctx.data_dir / "visitors"])
    if cap == "downloads":
        return _files_bytes([downloads_root()])
    raise KeyError(cap)


# --------------------------------------------------------------------------- before a write


@contextlib.contextmanager
def reserve(ctx, visitor: Visitor | None, nbytes: int, what: str, cap: str = "runs") -> Iterator[None]:
    """Hold `nbytes` for a write of `what` while the block runs (the write happens inside it).

    Raises:
        CNNCompareError: the write would pass the visitor's quota or the server's cap for `cap`, in one sentence
        (nothing has been written).
    """
    nbytes = max(0, int(nbytes))
    env = ctx.env
    quota, limit = _limit(env.visitor_quota_mb), _limit(getattr(env, CAPS[cap]))
    mine_key, all_key = ("visitor", visitor.id if visitor else ""), ("cap", cap)
    with _lock:
        if quota is not None and visitor is not None:
            used = usage(ctx, visitor) + _pending.get(mine_key, 0)
            if used + nbytes > quota and cap == "downloads":  # a new download replaces the visitor's older ones
                _drop_old_downloads(visitor, used + nbytes - quota)
                used = usage(ctx, visitor) + _pending.get(mine_key, 0)
            if used + nbytes > quota:
                raise CNNCompareError(
                    f"{what} needs about {mb(nbytes)}, and your files already use {mb(used)} of your "
                    f"{mb(quota)} on this server: delete some of your runs or weights files (or wait for old "
                    "downloads to expire, an hour after they were made) and try again."
                )
        if limit is not None:
            total = server_bytes(ctx, cap) + _pending.get(all_key, 0)
            if total + nbytes > limit:
                prune_all(ctx)
                total = server_bytes(ctx, cap) + _pending.get(all_key, 0)
            if total + nbytes > limit:
                raise CNNCompareError(
                    f"{what} needs about {mb(nbytes)}, more than is left of this server's disk for {cap} "
                    f"({mb(total)} of {mb(limit)} used): try again later, or with something smaller."
                )
        for key in (mine_key, all_key):
            _pending[key] = _pending.get(key, 0) + nbytes
    try:
        yield
    finally:
        with _lock:
            for key in (mine_key, all_key):
                left = _pending.get(key, 0) - nbytes
                if left > 0:
                    _pending[key] = left
                else:
                    _pending.pop(key, None)


# --------------------------------------------------------------------------- pruning


def _drop_old_downloads(visitor: Visitor, nbytes: int) -> None:
    """Remove the visitor's download folders, oldest first, until `nbytes` are free: not the heat maps, and none
    written in the last minute (a download being made now)."""
    now = time.time()
    aged = []
    for d in visitor_downloads(visitor).glob("*"):
        try:
            if d.is_dir() and d.name != "heat" and now - d.stat().st_mtime > 60:
                aged.append((d.stat().st_mtime, d))
        except OSError:
            continue
    for _, d in sorted(aged):
        if nbytes <= 0:
            break
        nbytes -= _files_bytes([d])
        shutil.rmtree(d, ignore_errors=True)


def clean_downloads(keep_s: float = DOWNLOADS_KEEP_S) -> int:
    """Remove download folders (each visitor's) older than `keep_s`; returns how many."""
    root = downloads_root()
    if not root.is_dir():
        return 0
    now, n = time.time(), 0
    for d in [*root.glob("v-*/*"), *(p for p in root.iterdir() if not p.name.startswith("v-"))]:
        try:
            if d.is_dir() and now - d.stat().st_mtime > keep_s:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        except OSError:
            continue
    return n


def expire_weights(ctx) -> int:
    """Delete every visitor's weights files older than the runs' expiry (CNNCOMPARE_RUN_EXPIRY_H); how many."""
    hours = ctx.env.run_expiry_h
    root = visitors_root(ctx)
    if not hours or hours <= 0 or not root.is_dir():
        return 0
    now, n = time.time(), 0
    for f in root.glob("*/weights/*"):
        try:
            if f.is_file() and now - f.stat().st_mtime > hours * 3600:
                f.unlink()
                n += 1
        except OSError:
            continue
    return n


def prune_all(ctx) -> list[Path]:
    """Everything visitors leave on disk, together: expired weights files, runs and shared runs; then the oldest
    runs until runs, shared runs and weights fit the server's cap (weights count but are not evicted for runs);
    old unpacked uploads; old downloads."""
    env = ctx.env
    max_age = env.run_expiry_h * 3600 if env.run_expiry_h and env.run_expiry_h > 0 else None
    expire_weights(ctx)
    root = visitors_root(ctx)
    weights = sum(_weights_bytes(d) for d in root.iterdir() if d.is_dir()) if root.is_dir() else 0
    cap = _limit(env.runs_cap_mb)
    shared = ctx.runs_root / SHARED_DIR
    # the shared store goes first: a visitor's copy keeps its weights (hard links) when the store's entry goes
    runfolder.prune(shared, max_age_s=max_age)
    if cap is not None:
        others = _files_bytes([root])
        runfolder.prune(shared, max_bytes=max(0, cap - others))
    removed = runfolder.prune(root, max_bytes=None if cap is None else max(0, cap - weights), max_age_s=max_age)
    _prune_unpacked(ctx, max_age, _limit(env.data_cap_mb))
    clean_downloads()
    return removed


def _prune_unpacked(ctx, max_age_s: float | None, max_bytes: float | None) -> None:
    """Unpacked uploads and camera classes of every visitor together: expired ones, then the least recently used
    until all fit the data cap (none used in the last hour: a run may be reading it)."""
    found = []
    cameras = [d.parent for d in (ctx.data_dir / "visitors").glob("*/camera")]  # a set of classes is one item
    for uploads in [ctx.data_dir / "uploads", *(ctx.data_dir / "visitors").glob("*/uploads"), *cameras]:
        for d in uploads.glob("*" if uploads.name == "uploads" else "camera") if uploads.is_dir() else []:
            try:
                found.append((d.stat().st_mtime, d, _files_bytes([d])))
            except OSError:
                continue
    total, now = sum(n for *_, n in found), time.time()
    for mtime, d, n in sorted(found, key=lambda x: x[0]):
        age = now - mtime
        if age < 3600:
            continue
        expired = (max_age_s is not None and age > max_age_s) or d.name.startswith(".unpacking-")  # a crash's leftover
        if expired or (max_bytes is not None and total > max_bytes):
            shutil.rmtree(d, ignore_errors=True)
            total -= n


def eviction_note(ctx, visitor: Visitor, need_bytes: int) -> str | None:
    """What a comparison keeping `need_bytes` would cost this visitor before it starts: None when it fits their
    quota, else the sentence naming their oldest runs that would be deleted when it ends."""
    quota = _limit(ctx.env.visitor_quota_mb)
    if quota is None:
        return None
    used = usage(ctx, visitor)
    if used + need_bytes <= quota:
        return None
    folder = visitor_dir(ctx, visitor)
    mine = [d for d in folder.iterdir() if (d / "config.json").is_file()] if folder.is_dir() else []
    if visitor.workspace:
        mine = [d for d in mine if runfolder.owner_of(d) == visitor.id]
    mine.sort(key=lambda d: (d / "config.json").stat().st_mtime)
    gone, free = [], used + need_bytes - quota
    for d in mine:
        if free <= 0:
            break
        gone.append(d.name)
        free -= runfolder.folder_bytes(d)
    if free > 0:
        return (
            f"These runs will keep about {mb(need_bytes)}, more than your quota of {mb(quota)} even without your "
            "other runs: they will be deleted when they end (the zip download keeps their results). Use fewer or "
            "smaller models, or freeze more (only trained layers are kept)."
        )
    names = ", ".join(gone[:4]) + (", …" if len(gone) > 4 else "")
    return (
        f"These runs will keep about {mb(need_bytes)}; with your files ({mb(used)}) that passes your quota of "
        f"{mb(quota)}, so your oldest runs will be deleted when they end: {names}. Their zip downloads keep them."
    )


def after_run(ctx, visitor: Visitor) -> list[str]:
    """Keep the visitor's folder under their quota and all visitors' under the cap; sentences for the page."""
    lines = []
    quota = _limit(ctx.env.visitor_quota_mb)
    # weights files and unpacked uploads count against it too; downloads are copies that expire within the hour
    others = _weights_bytes(personal_dir(ctx, visitor)) + _files_bytes([unpack_dir(ctx, visitor)])
    mine = runfolder.prune(
        visitor_dir(ctx, visitor),
        max_bytes=None if quota is None else max(0, quota - others),
        owner=visitor.id if visitor.workspace else None,  # a member's quota never evicts another member's runs
    )
    if mine:
        names = ", ".join(p.name for p in mine[:4]) + (", …" if len(mine) > 4 else "")
        lines.append(
            f"Your runs passed this server's quota of {ctx.env.visitor_quota_mb:,.0f} MB per visitor, so the "
            f"oldest were deleted: {names}. The zip download of each comparison keeps them."
        )
    gone = prune_all(ctx)
    if any(p.parent.name == visitor.folder for p in gone):
        lines.append("Some of your older runs were deleted to keep the server's disk within its limits.")
    return lines


def _run_bytes(ctx, visitor: Visitor) -> int:
    folder = visitor_dir(ctx, visitor)
    if not folder.is_dir():
        return 0
    if visitor.workspace:
        return sum(
            runfolder.folder_bytes(d) for d in folder.iterdir() if d.is_dir() and runfolder.owner_of(d) == visitor.id
        )
    return runfolder.folder_bytes(folder) - _weights_bytes(folder)


def at_start(ctx) -> None:
    """Leftovers of a crash (*.tmp files), expired runs and old downloads go when the app starts."""
    try:
        runfolder.clean_tmp(ctx.runs_root)
        prune_all(ctx)
    except OSError:
        pass
