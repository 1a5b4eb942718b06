"""Who the visitor is, where their runs live, and what they may see (the disk they use: `ledger`).

A visitor is a random key kept in their browser (`gr.BrowserState`, so a page refresh keeps
it). The key is a secret: it is never used as a path, only its hash is:

    <runs>/visitors/<sha256(key)[:16]>/<run folders>

A visitor lists, predicts with and downloads only the runs in their own folder. API clients
that send no key are a visitor per gradio session (each `gradio_client.Client` is one); they
may also send a key of their own (the `visitor` parameter), e.g. to find their runs again. A
call with neither (a raw HTTP call outside gradio's queue) is refused.

A workspace makes several browsers share one folder of runs (a class). Its code is made by the
server (96 random bits: `new_workspace`), shown once to whoever created it and shared as a link
(`?workspace=CODE`); a code nobody created is refused, and one key (or address) may try only a few
unknown codes in ten minutes, while a code the server made always works (`Workspaces`). Members share runs,
never weights files (those stay in each member's own folder, `personal_dir`), and each member's quota counts and
evicts only the runs that member made (a run records its `owner`).

With CNNCOMPARE_SHARED_EXAMPLES=1, the runs at the top level of the runs folder (made with
the CLI by whoever runs the server) are offered to everyone, read-only, as examples.

Run folders are never served by path: downloads are copies written into the visitor's own download folder
(`ledger`), counted against their quota before they are written.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import CNNCompareError, first_line

__all__ = [
    "Visitor",
    "Workspaces",
    "new_key",
    "resolve",
    "new_state",
    "join_workspace",
    "RunChoice",
    "visible_runs",
    "find_run",
    "visitor_dir",
    "visitors_root",
    "personal_dir",
    "address_of",
    "browser_secret",
    "folder_id",
]

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")  # new_key() gives 32 characters
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16}$")  # Workspaces.create gives 16 characters: 96 random bits
ATTEMPT_WINDOW_S = 600.0
SHARED_PREFIX = "shared:"
VISITORS = "visitors"


@dataclass(frozen=True)
class Visitor:
    """One visitor: `id` counts their share of the queue; `folder` names the folder of their runs."""

    id: str  # sha256 of the personal key, first 16 hex digits
    folder: str  # the same, or the workspace code's hash when they joined one
    workspace: bool = False  # runs shared through a typed workspace code
    address: str = ""  # the client's address (`address_of`): limits per address count it

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
        workspaces.check(code, address, folder_id(state["key"]))
    elif code and not CODE_PATTERN.match(code):
        raise CNNCompareError(UNKNOWN_CODE)
    return {**state, "code": code}


UNKNOWN_CODE = "That is not a workspace code of this server: ask whoever created the workspace for its link."


class Workspaces:
    """The workspace codes this server made (their hashes, kept in the runs folder), and the wrong codes tried lately.

    A stranger guessing codes is stopped after `attempts` wrong ones in ten minutes from one visitor key, or ten
    times as many from one address (a school's browsers share one address: one student mistyping stops only that
    student). A code this server made is always accepted: members already in a workspace keep working whatever
    others mistyped. Creating workspaces is limited the same way (`CREATES` per key, ten times as many per address).
    """

    ADDRESS_FACTOR = 10
    CREATES = 5

    def __init__(self, root: Path, attempts: int = 10):
        self.path = root / ".workspaces"
        self.attempts = max(1, int(attempts))
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, list[float]] = OrderedDict()  # "key:<id>" / "addr:<address>" -> times
        self._creates: OrderedDict[str, list[float]] = OrderedDict()
        try:
            self._hashes = set(self.path.read_text().split())
        except OSError:
            self._hashes = set()

    def _known(self) -> set[str]:
        return self._hashes

    def create(self, who: str = "", address: str = "") -> str:
        """A new code (96 random bits), recorded by its hash only.

        Raises:
            CNNCompareError: this visitor (or address) created too many in the last ten minutes.
        """
        with self._lock:
            if not _count(self._creates, [(f"key:{who}", self.CREATES), (f"addr:{address}", self.CREATES * 10)]):
                raise CNNCompareError(
                    "You created several workspaces in the last ten minutes: use one of them (its link), or wait."
                )
            code = secrets.token_urlsafe(12)
            digest = folder_id(f"workspace:{code}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(digest + "\n")
            self._hashes.add(digest)
        return code

    def check(self, code: str, address: str = "", who: str = "") -> None:
        """Raises CNNCompareError for a code this server did not make, or when the caller tried too many."""
        if self.known(code):
            return
        with self._lock:
            limits = [(f"key:{who}", self.attempts), (f"addr:{address}", self.attempts * self.ADDRESS_FACTOR)]
            if not _count(self._failures, limits):
                raise CNNCompareError(
                    "Too many wrong workspace codes from you: wait ten minutes, or use the workspace's link."
                )
        raise CNNCompareError(UNKNOWN_CODE)

    def known(self, code: str) -> bool:
        return bool(code) and CODE_PATTERN.match(code) is not None and folder_id(f"workspace:{code}") in self._known()


def _count(log: OrderedDict[str, list[float]], limits: list[tuple[str, int]]) -> bool:
    """Record one event under each name of `limits` unless one of them already reached its limit in the window;
    True when it was recorded. A refusal records nothing (fresh names cannot flood the log), and past 10,000 names
    the least recently counted are forgotten (a name still in use stays)."""
    now = time.monotonic()
    recent = {name: [t for t in log.get(name, []) if now - t < ATTEMPT_WINDOW_S] for name, _ in limits}
    if any(len(recent[name]) >= limit for name, limit in limits):
        return False
    for name, _ in limits:
        log[name] = [*recent[name], now]
        log.move_to_end(name)
    while len(log) > 10_000:
        log.popitem(last=False)
    return True


def _parts(value: Any) -> tuple[str | None, str]:
    if isinstance(value, dict):
        key, code = value.get("key"), value.get("code") or ""
        return (str(key) if key else None), str(code)
    if isinstance(value, str) and value.strip():
        return value.strip(), ""
    return None, ""


def address_of(request: Any) -> str:
    """The client's address (what limits a stranger's guesses), '' when unknown. X-Forwarded-For is applied by
    the web server (uvicorn) only for the proxies named in CNNCOMPARE_TRUSTED_PROXIES (`ui.app.launch`)."""
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
            workspaces.check(code, address_of(request), vid)
        elif not CODE_PATTERN.match(code):
            raise CNNCompareError(UNKNOWN_CODE)
        return Visitor(vid, folder_id(f"workspace:{code}"), workspace=True, address=address_of(request))
    return Visitor(vid, vid, address=address_of(request))


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
