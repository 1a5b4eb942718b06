"""Who the visitor is, where their runs live, what they may see, and the disk they may use.

A visitor is a random key kept in their browser (`gr.BrowserState`, so a page refresh keeps
it). The key is a secret: it is never used as a path, only its hash is:

    <runs>/visitors/<sha256(key)[:16]>/<run folders>

A visitor lists, predicts with and downloads only the runs in their own folder. API clients
that send no key are a visitor per gradio session (each `gradio_client.Client` is one); they
may also send a key of their own (the `visitor` parameter), e.g. to find their runs again. A
call with neither (a raw HTTP call outside gradio's queue) is refused.

A workspace makes several browsers share one folder of runs (a class). Its code is made by the
server (96 random bits: `new_workspace`), shown once to whoever created it and shared as a link
(`?workspace=CODE`); a code nobody created is refused, and one address may try only a few unknown
codes in ten minutes (`Workspaces`). Members share runs, never weights files (those stay in each
member's own folder, `personal_dir`), and each member's quota counts and evicts only the runs
that member made (a run records its `owner`).

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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import data, runs
from ..errors import CNNCompareError, first_line
from .uploads import upload_folder

__all__ = [
    "Visitor",
    "Workspaces",
    "new_key",
    "resolve",
    "new_state",
    "join_workspace",
    "personal_dir",
    "usage",
    "eviction_note",
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
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16}$")  # Workspaces.create gives 16 characters: 96 random bits
ATTEMPT_WINDOW_S = 600.0
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


def join_workspace(value: Any, code: str | None, workspaces: Workspaces | None = None, address: str = "") -> dict:
    """The browser's value with workspace `code` (empty: back to the visitor's own runs).

    Raises:
        CNNCompareError: a code this server did not make (or too many wrong ones from this address), in one
        sentence that never says whether a folder exists.
    """
    state = new_state(value)
    code = (code or "").strip()
    if code and workspaces is not None:
        workspaces.check(code, address)
    elif code and not CODE_PATTERN.match(code):
        raise CNNCompareError(UNKNOWN_CODE)
    return {**state, "code": code}


UNKNOWN_CODE = "That is not a workspace code of this server: ask whoever created the workspace for its link."


class Workspaces:
    """The workspace codes this server made (their hashes, kept in the runs folder), and the wrong codes each
    address tried lately (a stranger guessing codes is stopped after `attempts` in ten minutes)."""

    def __init__(self, root: Path, attempts: int = 10):
        self.path = root / ".workspaces"
        self.attempts = max(1, int(attempts))
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        try:
            self._hashes = set(self.path.read_text().split())
        except OSError:
            self._hashes = set()

    def _known(self) -> set[str]:
        return self._hashes

    def create(self) -> str:
        """A new code (96 random bits), recorded by its hash only."""
        code = secrets.token_urlsafe(12)
        digest = folder_id(f"workspace:{code}")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(digest + "\n")
            self._hashes.add(digest)
        return code

    def check(self, code: str, address: str = "") -> None:
        """Raises CNNCompareError for a code this server did not make, or when `address` tried too many."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(address, []) if now - t < ATTEMPT_WINDOW_S]
            if len(recent) >= self.attempts:
                self._failures[address] = recent
                raise CNNCompareError(
                    "Too many wrong workspace codes from your address: wait ten minutes, or use the workspace's link."
                )
            if CODE_PATTERN.match(code) and folder_id(f"workspace:{code}") in self._known():
                return
            recent.append(now)
            self._failures[address] = recent
            if len(self._failures) > 10_000:  # forget the oldest addresses: memory stays bounded
                for key in list(self._failures)[:1000]:
                    self._failures.pop(key, None)
        raise CNNCompareError(UNKNOWN_CODE)

    def known(self, code: str) -> bool:
        return bool(code) and CODE_PATTERN.match(code) is not None and folder_id(f"workspace:{code}") in self._known()


def _parts(value: Any) -> tuple[str | None, str]:
    if isinstance(value, dict):
        key, code = value.get("key"), value.get("code") or ""
        return (str(key) if key else None), str(code)
    if isinstance(value, str) and value.strip():
        return value.strip(), ""
    return None, ""


def address_of(request: Any) -> str:
    """The client's address (what limits a stranger's guesses), '' when unknown."""
    client = getattr(getattr(request, "request", request), "client", None)
    return str(getattr(client, "host", "") or "")


def resolve(value: Any, request: Any = None, workspaces: Workspaces | None = None) -> Visitor:
    """The visitor of a call: from the browser's key (or an API client's), else from the gradio session; a
    workspace code must be one `workspaces` made (wrong ones count against the caller's address).

    Raises:
        CNNCompareError: a key in the wrong form, a code this server did not make, or a call with neither a key
        nor a session (never a path: only hashes are used).
    """
    key, code = _parts(value)
    if key is None:
        session = getattr(request, "session_hash", None)
        if not session:
            raise CNNCompareError(
                "This call has neither a visitor key nor a session: call the app through its queue (the page, or "
                "gradio_client), or pass your own key as `visitor`."
            )
        key = f"session:{session}"
    elif not KEY_PATTERN.match(key):
        raise CNNCompareError(
            "The visitor key must be 22 to 128 letters, digits, - or _ (reload the page for a new "
            "one; API clients may leave it out)."
        )
    vid = folder_id(key)
    if code:
        if workspaces is not None:
            workspaces.check(code, address_of(request))
        elif not CODE_PATTERN.match(code):
            raise CNNCompareError(UNKNOWN_CODE)
        return Visitor(vid, folder_id(f"workspace:{code}"), workspace=True)
    return Visitor(vid, vid)


# --------------------------------------------------------------------------- folders


def visitors_root(ctx) -> Path:
    return ctx.runs_root / VISITORS


def visitor_dir(ctx, visitor: Visitor, create: bool = False) -> Path:
    """Where the visitor's runs live: their own folder, or their workspace's."""
    path = visitors_root(ctx) / visitor.folder
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def personal_dir(ctx, visitor: Visitor) -> Path:
    """The visitor's own folder, whatever workspace they are in: their weights files live here."""
    return visitors_root(ctx) / visitor.id


def _weights_bytes(folder: Path) -> int:
    weights = folder / "weights"
    return sum(f.stat().st_size for f in weights.glob("*.safetensors") if f.is_file()) if weights.is_dir() else 0


def usage(ctx, visitor: Visitor) -> int:
    """Bytes the visitor uses: the runs they made (in a workspace, only theirs) and their weights files."""
    folder = visitor_dir(ctx, visitor)
    if not folder.is_dir():
        mine = 0
    elif visitor.workspace:
        mine = sum(runs.folder_bytes(d) for d in folder.iterdir() if d.is_dir() and runs.owner_of(d) == visitor.id)
    else:
        mine = runs.folder_bytes(folder) - _weights_bytes(folder)
    return mine + _weights_bytes(personal_dir(ctx, visitor))


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


def heat_maps_dir(visitor: Visitor) -> Path:
    """The visitor's own folder for the heat maps of their latest prediction (overwritten by the next one: a
    visitor predicts one request at a time), under the downloads and removed with them when unused an hour."""
    path = _downloads_root() / ("heat-" + hashlib.sha256(visitor.id.encode()).hexdigest()[:16])
    if not path.is_dir():
        clean_downloads()
        path.mkdir(parents=True, exist_ok=True)
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
    """Everything visitors leave on disk, together: expired weights files and runs, then the oldest runs until
    runs and weights fit the server's cap (weights count but are not evicted for runs), and old unpacked uploads."""
    env = ctx.env
    max_age = env.run_expiry_h * 3600 if env.run_expiry_h and env.run_expiry_h > 0 else None
    expire_weights(ctx)
    root = visitors_root(ctx)
    weights = sum(_weights_bytes(d) for d in root.iterdir() if d.is_dir()) if root.is_dir() else 0
    cap = _mb(env.runs_cap_mb)
    removed = runs.prune(root, max_bytes=None if cap is None else max(0, cap - weights), max_age_s=max_age)
    data.prune_unpacked(env.data_dir, max_age_s=max_age, max_bytes=_mb(env.data_cap_mb))
    return removed


def eviction_note(ctx, visitor: Visitor, need_bytes: int) -> str | None:
    """What a comparison keeping `need_bytes` would cost this visitor before it starts: None when it fits their
    quota, else the sentence naming their oldest runs that would be deleted when it ends."""
    quota = _mb(ctx.env.visitor_quota_mb)
    if quota is None:
        return None
    used = usage(ctx, visitor)
    if used + need_bytes <= quota:
        return None
    folder = visitor_dir(ctx, visitor)
    mine = [d for d in folder.iterdir() if (d / "config.json").is_file()] if folder.is_dir() else []
    if visitor.workspace:
        mine = [d for d in mine if runs.owner_of(d) == visitor.id]
    mine.sort(key=lambda d: (d / "config.json").stat().st_mtime)
    gone, free = [], used + need_bytes - quota
    for d in mine:
        if free <= 0:
            break
        gone.append(d.name)
        free -= runs.folder_bytes(d)
    mb = lambda n: f"{n / 2**20:,.0f} MB"  # noqa: E731
    if free > 0:
        return (
            f"These runs will keep about {mb(need_bytes)}, more than your quota of {mb(quota)} even without your "
            "other runs: they will be deleted when they end (the zip download keeps their results). Use fewer or "
            "smaller models, or freeze more (only trained layers are kept)."
        )
    names = ", ".join(gone[:4]) + (", …" if len(gone) > 4 else "")
    return (
        f"These runs will keep about {mb(need_bytes)}; with your runs ({mb(used)}) that passes your quota of "
        f"{mb(quota)}, so your oldest runs will be deleted when they end: {names}. Their zip downloads keep them."
    )


def after_run(ctx, visitor: Visitor) -> list[str]:
    """Keep the visitor's folder under their quota and all visitors' under the cap; sentences for the page."""
    lines = []
    own_weights = _weights_bytes(personal_dir(ctx, visitor))  # uploads count against it too
    quota = _mb(ctx.env.visitor_quota_mb)
    mine = runs.prune(
        visitor_dir(ctx, visitor),
        max_bytes=None if quota is None else max(0, quota - own_weights),
        owner=visitor.id if visitor.workspace else None,  # a member's quota never evicts another member's runs
    )
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
