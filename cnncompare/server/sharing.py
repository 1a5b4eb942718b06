"""Identical runs computed once: a class of 30 pressing the same Learn preset costs one run.

On a CPU a run is a pure function of its plan entry (model, freeze policy, settings, seed), its dataset's
content and the library versions: two seeded runs of the same plan on the same data give the same metrics
(tests check it). So `SharedRuns` keeps, per run key (`run_key`):

- a **finished** run: a copy of its folder under `<runs>/_shared/<key>/`; whoever asks for the same run later
  gets a copy of it in their own folder (weights hard-linked, no second copy on disk), its curves replayed,
  and "shared with N visitors" in its notes;
- a run **in progress** (or claimed by a comparison waiting for the machine): whoever asks for the same run
  now follows its events as they come and gets a copy when it ends, without a place in the training line.

What is never shared: a run on a GPU (not bit-for-bit repeatable), and a run on a visitor's own upload or own
weights file with anyone outside that visitor's folder (`Share.scope`: the visitor's, or their workspace's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import __version__, runtime, training
from ..data import file_digest
from ..runfolder import RunFolder

__all__ = ["SharedRuns", "Share", "run_key", "SHARED_DIR"]

SHARED_DIR = "_shared"
KEEP_EVENTS = ("start", "info", "epoch", "end")  # what a follower who joins late replays; steps: the latest only


def run_key(run, dataset_id: str, scope: str = "") -> str:
    """What makes two runs the same: the run's whole config, the content of its weights file (the config names
    only the file), its dataset's identity, where it may be shared, and the versions of the libraries that compute
    it."""
    import timm
    import torch
    import torchvision

    config = training.run_config(run.entry, run.settings)
    weights = _digest(run.entry.weights_file) if run.entry.weights_file else None
    payload = dict(
        config=config,
        weights=weights,
        dataset=dataset_id,
        scope=scope,
        versions=[__version__, torch.__version__, torchvision.__version__, timm.__version__],
    )
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


_DIGESTS: dict[tuple, str] = {}


def _digest(path: str) -> str:
    """A weights file's content digest, computed once per (path, size, time written)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        if len(_DIGESTS) > 1000:
            _DIGESTS.clear()
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


class _Live:
    """A run in progress (or claimed): its events so far, for followers."""

    def __init__(self, owner: object):
        self.owner = owner
        self.events: list[training.Event] = []
        self.step: training.Event | None = None
        self.done = False
        self.result: training.RunResult | None = None  # the finished run (its folder copied into the store)
        self.cond = threading.Condition()


class SharedRuns:
    """Finished runs on disk and runs in progress in memory, by run key (see the module's docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root) / SHARED_DIR
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self.computed = 0  # runs this server computed for sharing (the rest were copies)
        self.copies = 0

    # ------------------------------------------------------------------ claims

    def claim(self, key: str, owner: object) -> str:
        """'done' (a finished copy exists), 'live' (someone else's run is in progress or claimed), or 'mine'
        (nobody has it: `owner` computes it; others asking now will follow it)."""
        with self._lock:
            live = self._live.get(key)
            if live is not None and not live.done:
                return "mine" if live.owner is owner else "live"
            if self._finished(key) is not None:
                return "done"
            self._live[key] = _Live(owner)
            return "mine"

    def release(self, owner: object) -> None:
        """Give up the claims of `owner` that never finished (a stopped or failed comparison): followers are told."""
        with self._lock:
            mine = [(k, live) for k, live in self._live.items() if live.owner is owner and not live.done]
        for key, live in mine:
            self._end(key, live, None)

    # ------------------------------------------------------------------ the run that computes

    def publish(self, key: str, ev: training.Event) -> None:
        live = self._live.get(key)
        if live is None:
            return
        with live.cond:
            if ev.kind == "step":
                live.step = ev
            elif ev.kind in KEEP_EVENTS:
                live.events.append(ev)
            live.cond.notify_all()

    def finish(self, key: str, result: training.RunResult | None) -> None:
        """The computing run ended: keep a copy of its folder when it finished cleanly (else followers are told)."""
        live = self._live.get(key)
        if live is None:
            return
        kept = None
        if result is not None and _clean(result) and result.run_dir and Path(result.run_dir).is_dir():
            target = self.root / key
            try:
                RunFolder(Path(result.run_dir)).copy_to(target, owner=None)
                kept = dataclasses.replace(result, run_dir=str(target))
                self.computed += 1
            except OSError:
                kept = None
        self._end(key, live, kept)

    def _end(self, key: str, live: _Live, result: training.RunResult | None) -> None:
        with live.cond:
            live.done, live.result = True, result
            live.cond.notify_all()
        with self._lock:
            if self._live.get(key) is live:
                del self._live[key]

    # ------------------------------------------------------------------ the runs that follow

    def follow(
        self, key: str, label: str, out_dir, owner: str | None, should_stop: Callable[[], bool]
    ) -> Iterator[training.Event]:
        """The events of the run with `key`, relabelled as this comparison's `label`: replayed when it finished
        earlier, followed live while it runs; the last is an "end" whose result is a copy in `out_dir`."""
        live = self._live.get(key)
        if live is not None:
            seen, last_step = 0, None
            while True:
                with live.cond:
                    if seen == len(live.events) and live.step is last_step and not live.done:
                        live.cond.wait(timeout=0.5)
                    fresh, step, done, source = live.events[seen:], live.step, live.done, live.result
                seen += len(fresh)
                for ev in fresh:
                    if ev.kind != "end":
                        yield _relabel(ev, label, following=True)
                if step is not None and step is not last_step:
                    last_step = step
                    yield _relabel(step, label, following=True)
                if done:
                    break
                if should_stop():
                    yield _stopped(key, label, "stopped by user")
                    return
            if source is None:
                yield _stopped(key, label, "the identical run it followed was stopped before it finished")
                return
        folder = self._finished(key)
        if folder is None:
            yield _stopped(key, label, "the identical run it followed was stopped before it finished")
            return
        yield from self._copy_out(folder, label, out_dir, owner, replay=live is None)

    def _copy_out(self, folder: Path, label: str, out_dir, owner, replay: bool) -> Iterator[training.Event]:
        data = json.loads((folder / "results.json").read_text())
        result = training.RunResult.from_dict(data)
        with self._lock:
            self.copies += 1
            n = self._bump(folder)
        result.label = label
        result.shared_with = n
        if out_dir is not None:
            target = RunFolder.fresh_path(out_dir, result.name)
            result.run_dir = str(RunFolder(folder).copy_to(target, owner=owner, label=label, shared_with=n).path)
        else:
            result.run_dir = None
        if replay:
            yield training.Event(
                "start",
                result.name,
                label=label,
                epochs=result.final_epoch,
                message=f"{label}: the same run finished earlier on this server: its results are copied to your "
                "runs instead of computing it again",
            )
            for row in result.history:  # the curves, replayed
                yield training.Event(
                    "epoch",
                    result.name,
                    label=label,
                    epoch=row.get("epoch", 0),
                    epochs=result.final_epoch,
                    loss=row.get("train_loss"),
                    train_acc=row.get("train_acc"),
                    val_loss=row.get("val_loss"),
                    val_top1=row.get("val_top1"),
                )
        yield training.Event(
            "end",
            result.name,
            label=label,
            epoch=result.final_epoch,
            epochs=result.final_epoch,
            val_top1=result.val_top1,
            message=f"{label}: shared: computed once on this server for {n} visitor(s); "
            + (f"val top-1 {result.val_top1:.1f}%" if result.val_top1 is not None else "no finished epoch"),
            result=result,
        )

    # ------------------------------------------------------------------ on disk

    def _finished(self, key: str) -> Path | None:
        folder = self.root / key
        return folder if RunFolder(folder).finished else None

    def _bump(self, folder: Path) -> int:
        """One more visitor has this run; returns how many have it (its computer included)."""
        path = folder / ".shared-with"
        try:
            n = int(path.read_text()) + 1
        except (OSError, ValueError):
            n = 2
        path.write_text(str(n))
        os.utime(folder)  # in use: pruning leaves the most recently shared runs
        return n


@dataclasses.dataclass
class Share:
    """How one comparison shares: the store, its dataset's identity, the scope it may be shared in, the device,
    and the token of the comparison (its claims)."""

    registry: SharedRuns
    dataset_id: str
    scope: str = ""  # "" (anyone) or a visitor's folder: a run on their upload is shared only there
    private: str = ""  # the visitor's folder: a run from their own weights file is shared only there
    token: object = dataclasses.field(default_factory=object)

    def key(self, run) -> str | None:
        """The run's key, or None when it is not shared (a GPU run; a run from a weights file of a caller who has
        no folder)."""
        if runtime.resolve_device(run.settings.device).type != "cpu":
            return None
        scope = self.scope
        if run.entry.weights_file:  # somebody's own weights: never across owners, and keyed by their content
            if not (self.scope or self.private):
                return None
            scope = self.scope or self.private
        return run_key(run, self.dataset_id, scope)

    def claim_all(self, plan) -> dict[str, str]:
        """Claim every run of a plan (label -> 'done' | 'live' | 'mine' | 'own'): runs that are someone else's
        need no place in the training line; 'own' runs (not shared) do."""
        out = {}
        for run in plan.runs():
            key = self.key(run)
            out[run.label] = "own" if key is None else self.registry.claim(key, self.token)
        return out


def _clean(result: training.RunResult) -> bool:
    return not result.error and not result.stopped and result.final_epoch > 0


def _relabel(ev: training.Event, label: str, following: bool) -> training.Event:
    message = ev.message
    if ev.label and message.startswith(ev.label):
        message = label + message[len(ev.label) :]
    if following and ev.kind == "start":
        message += " (the same run as another visitor's, computed once: you follow it)"
    return dataclasses.replace(ev, label=label, message=message, result=None)


def _stopped(key: str, label: str, why: str) -> training.Event:
    result = training.RunResult(name=label.split("@")[0], config={}, classes=[], label=label, error=why)
    return training.Event("end", result.name, label=label, message=f"{label}: failed: {why}", result=result)
