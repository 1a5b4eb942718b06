"""Who the visitor is, where their runs live, what they may see, and the disk they may use.

A visitor is a random key kept in their browser (`gr.BrowserState`, so a page refresh keeps
it). The key is a secret: it is never used as a path, only its hash is:

    <runs>/visitors/<sha256(key)[:16]>/<run folders>

A visitor lists, predicts with and downloads only the runs in their own folder. API clients
that send no key are a visitor per gradio session (each `gradio_client.Client` is one); they
may also send a key of their own (the `visitor` parameter), e.g. to find their runs again.

A workspace code, typed on the page, makes several browsers share one folder (a class): the
runs then live under the code's hash, while the queue still counts each browser by its own key.

With CNNCOMPARE_SHARED_EXAMPLES=1, the runs at the top level of the runs folder (made with
the CLI by whoever runs the server) are offered to everyone, read-only, as examples.

Run folders are never served by path: downloads are copies written by `compare.export` into a
folder with a random name inside gradio's upload folder, removed after `DOWNLOADS_KEEP_S`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import CNNCompareError, first_line
from .uploads import upload_folder

__all__ = [
    "Visitor",
    "new_key",
    "resolve",
    "new_state",
    "join_workspace",
    "RunChoice",
    "visible_runs",
    "find_run",
    "visitor_dir",
    "visitors_root",
    "downloads_dir",
    "clean_downloads",
    "after_run",
    "at_start",
    "browser_secret",
    "folder_id",
]

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")  # new_key() gives 32 characters
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{10,64}$")
SHARED_PREFIX = "shared:"
VISITORS = "visitors"
DOWNLOADS = "cnncompare-downloads"
DOWNLOADS_KEEP_S = 3600.0


@dataclass(frozen=True)
class Visitor:
    """One visitor: `id` counts their share of the queue; `folder` names the folder of their runs."""

    id: str  # sha256 of the personal key, first 16 hex digits
    folder: str  # the same, or the workspace code's hash when they joined one
    workspace: bool = False  # runs shared through a typed workspace code

    @property
    def short(self) -> str:
        return self.id[:6]


def folder_id(secret: str) -> str:
    """The folder name of a key (or 'workspace:<code>'): the first 16 hex digits of its sha256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def new_key() -> str:
    """A fresh visitor key: 24 random bytes, URL-safe (32 characters)."""
    return secrets.token_urlsafe(24)


def new_state(value: Any = None) -> dict:
    """The browser's stored value, with a key made when it has none (the page's load event)."""
    key, code = _parts(value)
    if key is None or not KEY_PATTERN.match(key):
        key = new_key()
    return {"key": key, "code": code if code and CODE_PATTERN.match(code) else ""}


def join_workspace(value: Any, code: str | None) -> dict:
    """The browser's value with workspace `code` (empty: back to the visitor's own runs).

    Raises:
        CNNCompareError: a code that is too short or has other characters than letters, digits, - and _.
    """
    state = new_state(value)
    code = (code or "").strip()
    if code and not CODE_PATTERN.match(code):
        raise CNNCompareError("A workspace code has 10 to 64 letters, digits, - or _ (long codes cannot be guessed).")
    return {**state, "code": code}


def _parts(value: Any) -> tuple[str | None, str]:
    if isinstance(value, dict):
        key, code = value.get("key"), value.get("code") or ""
        return (str(key) if key else None), str(code)
    if isinstance(value, str) and value.strip():
        return value.strip(), ""
    return None, ""


def resolve(value: Any, request: Any = None) -> Visitor:
    """The visitor of a call: from the browser's key (or an API client's), else from the gradio session.

    Raises:
        CNNCompareError: a key or workspace code in the wrong form (never a path: only hashes are used).
    """
    key, code = _parts(value)
    if key is None:
        session = getattr(request, "session_hash", None)
        key = f"session:{session}" if session else "local"
    elif not KEY_PATTERN.match(key):
        raise CNNCompareError(
            "The visitor key must be 22 to 128 letters, digits, - or _ (reload the page for a new "
            "one; API clients may leave it out)."
        )
    vid = folder_id(key)
    if code:
        if not CODE_PATTERN.match(code):
            raise CNNCompareError("A workspace code has 10 to 64 letters, digits, - or _.")
        return Visitor(vid, folder_id(f"workspace:{code}"), workspace=True)
    return Visitor(vid, vid)


# --------------------------------------------------------------------------- folders


def visitors_root(ctx) -> Path:
    return ctx.runs_root / VISITORS


def visitor_dir(ctx, visitor: Visitor, create: bool = False) -> Path:
    path = visitors_root(ctx) / visitor.folder
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def browser_secret(ctx) -> str:
    """The key that encrypts the visitor key in the browser's storage, kept in the runs folder so that a server
    restart does not make every visitor a new one (their stored key would no longer decrypt)."""
    path = visitors_root(ctx) / ".browser-secret"
    try:
        text = path.read_text().strip()
        if len(text) >= 16:
            return text
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    text = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return text


# --------------------------------------------------------------------------- the runs a visitor sees


@dataclass
class RunChoice:
    label: str  # what the dropdown shows
    value: str  # what the API takes: the run folder's name, or shared:<name> for an example
    run: runs.SavedRun
    shared: bool = False


def _read_runs(folder: Path) -> tuple[list[runs.SavedRun], list[str]]:
    """Finished-or-not runs directly in `folder`, newest first, and one note per folder that cannot be read."""
    if not folder.is_dir():
        return [], []
    found, notes = [], []
    for d in sorted((p for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file()), reverse=True):
        try:
            found.append(runs.load_run(d))
        except CNNCompareError as err:  # its name, never the server's path
            notes.append(first_line(err).replace(str(d), d.name).replace(str(folder), ""))
    return found, notes


def visible_runs(ctx, visitor: Visitor) -> tuple[list[RunChoice], list[str]]:
    """The runs this visitor may predict with (those with saved weights), newest first, then the shared examples;
    and notes on folders that were skipped because they cannot be read."""
    own, notes = _read_runs(visitor_dir(ctx, visitor))
    out = [RunChoice(r.label, r.path.name, r) for r in own if (r.path / "weights.safetensors").is_file()]
    if ctx.env.shared_examples:
        shared, shared_notes = _read_runs(ctx.runs_root)
        out += [
            RunChoice(f"example · {r.label}", SHARED_PREFIX + r.path.name, r, shared=True)
            for r in shared
            if (r.path / "weights.safetensors").is_file()
        ]
        notes += [f"example {n}" for n in shared_notes]
    return out, notes


def skipped_note(notes: list[str]) -> str:
    if not notes:
        return ""
    return (
        f"⚠️ {len(notes)} run folder(s) could not be read and are not listed: "
        + "; ".join(notes[:3])
        + ("; …" if len(notes) > 3 else "")
    )


def find_run(ctx, visitor: Visitor, name: str) -> runs.SavedRun:
    """One of the visitor's own runs (or a shared example), by folder name or label.

    Raises:
        CNNCompareError: the same sentence whether the run does not exist or belongs to someone else.
    """
    name = str(name).strip()
    choices, _ = visible_runs(ctx, visitor)
    for c in choices:  # own runs first; shared examples are named shared:<folder>
        if name in (c.value, c.label, c.run.label):
            return c.run
    raise CNNCompareError(f"No fine-tuned run called '{name[:80]}' among your runs: press ↻ to refresh the list.")


# --------------------------------------------------------------------------- downloads


def _downloads_root() -> Path:
    return upload_folder() / DOWNLOADS


def downloads_dir() -> Path:
    """A new folder with a random, unguessable name for one comparison's downloads (served by gradio from its
    upload folder to whoever holds the link: the visitor who ran it)."""
    clean_downloads()
    path = _downloads_root() / secrets.token_hex(16)
    path.mkdir(parents=True)
    return path


def clean_downloads(keep_s: float = DOWNLOADS_KEEP_S) -> int:
    """Remove download folders older than `keep_s`; returns how many."""
    root = _downloads_root()
    if not root.is_dir():
        return 0
    now, n = time.time(), 0
    for d in root.iterdir():
        try:
            if d.is_dir() and now - d.stat().st_mtime > keep_s:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        except OSError:
            continue
    return n


# --------------------------------------------------------------------------- disk


def _mb(value: float) -> float | None:
    return value * 2**20 if value and value > 0 else None  # 0 = no limit


def prune_all(ctx) -> list[Path]:
    """Every visitor's runs together: those older than the expiry, then the oldest over the cap."""
    env = ctx.env
    max_age = env.run_expiry_h * 3600 if env.run_expiry_h and env.run_expiry_h > 0 else None
    return runs.prune(visitors_root(ctx), max_bytes=_mb(env.runs_cap_mb), max_age_s=max_age)


def after_run(ctx, visitor: Visitor) -> list[str]:
    """Keep the visitor's folder under their quota and all visitors' under the cap; sentences for the page."""
    lines = []
    own_weights = runs.folder_bytes(visitor_dir(ctx, visitor) / "weights")  # uploads count against it too
    quota = _mb(ctx.env.visitor_quota_mb)
    mine = runs.prune(visitor_dir(ctx, visitor), max_bytes=None if quota is None else max(0, quota - own_weights))
    if mine:
        names = ", ".join(p.name for p in mine[:4]) + (", …" if len(mine) > 4 else "")
        lines.append(
            f"Your runs passed this server's quota of {ctx.env.visitor_quota_mb:,.0f} MB per visitor, so the "
            f"oldest were deleted: {names}. The zip download of each comparison keeps them."
        )
    others = prune_all(ctx)
    if any(p.parent.name == visitor.folder for p in others):
        lines.append("Some of your older runs were deleted to keep the server's disk within its limits.")
    return lines


def at_start(ctx) -> None:
    """Leftovers of a crash (*.tmp files), expired runs and old downloads go when the app starts."""
    try:
        runs.clean_tmp(ctx.runs_root)
        prune_all(ctx)
        clean_downloads()
    except OSError:
        pass
