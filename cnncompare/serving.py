"""Serving many people from one small machine, the way model servers do (Triton, TorchServe, Ray Serve):

- **priorities** (`Gate`): interactive work first. A training pauses at its next step boundary while a
  prediction, a count, a diagram or a gallery request waits or runs, and resumes after; a floor keeps it
  from starving (after `max_pause_s` paused it trains `burst_s` even under a constant crowd). A latency
  measurement runs only in a quiet moment (`Gate.quiet`): no training step in flight, no other work on the
  cores, so the number is this machine's.
- **a response cache** (`BoundedCache`): answers that are pure functions of their request (a count, a
  diagram, a prediction of one image by one model) are computed once and kept, bounded in bytes, least
  recently used first; two requests for the same answer at once compute it once.
- **dynamic batching** (`Batcher`): requests for the same model arriving within a short window run as one
  batch, each caller getting its own answer.
- **a rate per caller** (`Throttle`): a camera streams frames faster than a CPU should answer them; each caller
  gets at most one answer per interval, the frames between are skipped and counted.

The engine consults the process-wide `GATE` (training steps, latency measurements, estimates); the CLI never
declares interactive work, so there nothing ever pauses. Nothing here imports torch or gradio.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Gate", "Turn", "GATE", "BoundedCache", "Batcher", "Throttle"]


class Gate:
    """Who may use the cores now: interactive work, a quiet measurement, or a training step (module docstring)."""

    def __init__(self, max_pause_s: float = 3.0, burst_s: float = 0.5, history: int = 4000):
        self.max_pause_s = max_pause_s
        self.burst_s = burst_s
        self._cond = threading.Condition()
        self.demand = 0  # interactive requests waiting in line or running
        self._busy: dict[object, int] = {}  # interactive work computing now (a token each)
        self._quiet_waiting = 0
        self._quiet_owner: int | None = None  # the thread measuring in a quiet moment
        self.stepping = 0  # training steps in flight
        self.pauses = 0  # trainings paused so far (each pause counted once)
        self.intervals: deque[tuple[str, float, float]] = deque(maxlen=history)  # ("step"|"quiet", start, end)
        # the other processes' (demand, busy, stepping, quiet), summed: the server and its workers (`executor.link`);
        # `remote_at`: when they were last read (0: this process is linked to none)
        self.remote = (0, 0, 0, 0)
        self.remote_at = 0.0
        self.link_every_s = 0.0

    # ------------------------------------------------------------------ interactive work

    @contextlib.contextmanager
    def interactive(self) -> Iterator[None]:
        """The whole life of an interactive request (waiting in line, then running): trainings pause meanwhile."""
        with self._cond:
            self.demand += 1
        try:
            yield
        finally:
            with self._cond:
                self.demand -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Interactive work using the cores; it waits while a quiet measurement is asked for or running.

        The work may be a generator that gradio resumes in another worker thread at each step, so it is counted
        by a token of its own, not by its thread.
        """
        token = object()
        me = threading.get_ident()
        with self._cond:
            self._cond.wait_for(
                lambda: self._quiet_owner in (None, me) and self._quiet_waiting == 0 and not self.remote[3]
            )
            self._busy[token] = 1
        try:
            yield
        finally:
            with self._cond:
                del self._busy[token]
                self._cond.notify_all()

    @contextlib.contextmanager
    def quiet(self, polite_s: float = 0.0) -> Iterator[None]:
        """A measurement that needs the machine to itself (a synchronous call, in one thread): it waits until no
        training step is in flight and no interactive work computes (trainings pause for it, new interactive
        work waits), then holds the cores. Work that measures must not hold `working()` meanwhile.

        `polite_s`: first wait up to that long for a moment with no interactive request at all, without holding
        new ones back (a measurement nobody is waiting for, such as a finished run's latency, must not make a
        class's predictions queue behind it); only then ask for the cores as above."""
        me = threading.get_ident()
        with self._cond:
            nested = self._quiet_owner == me
        if nested:  # already quiet: a measurement inside a measurement
            yield
            return
        if polite_s > 0:
            with self._cond:
                self._cond.wait_for(lambda: self.demand + self.remote[0] == 0 and not self._busy, timeout=polite_s)
        with self._cond:
            self._quiet_waiting += 1
            self.demand += 1
            # linked to other processes: their counts must have been read after they saw this measurement asked for
            # (a tick to publish it, one for them to read it and stop at their step boundary, two to read them back)
            fresh = time.monotonic() + 4 * self.link_every_s if self.remote_at else 0.0
            try:
                while not self._cond.wait_for(
                    lambda: (
                        self._quiet_owner is None
                        and self.stepping == 0
                        and not self._busy
                        and not any(self.remote[1:3])
                        and self.remote_at >= fresh
                    ),
                    timeout=self.link_every_s or None,
                ):
                    pass
            except BaseException:
                self._quiet_waiting -= 1
                self.demand -= 1
                raise
            self._quiet_waiting -= 1
            self._quiet_owner = me
        started = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._quiet_owner = None
                self.demand -= 1
                self.intervals.append(("quiet", started, time.monotonic()))
                self._cond.notify_all()

    # ------------------------------------------------------------------ trainings

    def counts(self) -> tuple[int, int, int, int]:
        """This process's own (demand, busy, stepping, quiet), for the other processes (`executor.link`)."""
        with self._cond:
            quiet = int(self._quiet_owner is not None or self._quiet_waiting > 0)
            return self.demand, len(self._busy), self.stepping, quiet

    def set_remote(self, counts: tuple[int, int, int, int], every_s: float) -> None:
        """The other processes' counts summed, read every `every_s`: their interactive work pauses trainings here,
        their measurements too (and hold new interactive work back), their steps and work keep a measurement here
        waiting."""
        with self._cond:
            self.remote_at, self.link_every_s = time.monotonic(), every_s
            if counts != self.remote:
                self.remote = counts
                self._cond.notify_all()

    def turn(self) -> Turn:
        """A training's side of the gate, for one run."""
        return Turn(self)


class Turn:
    """A training's turns at the cores: before each step `pauses()` (a generator) yields the number of requests it
    is pausing for, about twice a second, until it may step; `step()` marks the step in flight."""

    def __init__(self, gate: Gate, on_pause: Callable[[bool], None] | None = None):
        self.gate = gate
        self.on_pause = on_pause  # called with True when a pause starts, False when it ends (thread sharing)
        self._burst_until = 0.0

    def pauses(self) -> Iterator[int]:
        g = self.gate
        paused_at = None
        try:
            while True:
                with g._cond:
                    now = time.monotonic()
                    quiet = g._quiet_owner is not None or g._quiet_waiting > 0 or g.remote[3] > 0
                    demand = g.demand + g.remote[0]
                    if demand == 0 or (not quiet and now < self._burst_until):
                        return
                    if paused_at is None:
                        paused_at = now
                        g.pauses += 1
                        if self.on_pause:
                            self.on_pause(True)
                    elif not quiet and now - paused_at >= g.max_pause_s:
                        self._burst_until = now + g.burst_s  # the floor: a share every few seconds
                        return
                    n = demand
                    g._cond.wait(timeout=0.5)
                yield n
        finally:
            if paused_at is not None and self.on_pause:
                self.on_pause(False)

    def wait(self) -> None:
        """`pauses()` for code that cannot report them (evaluation, feature extraction): blocks instead."""
        for _ in self.pauses():
            pass

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        g = self.gate
        with g._cond:
            g.stepping += 1
        started = time.monotonic()
        try:
            yield
        finally:
            with g._cond:
                g.stepping -= 1
                g.intervals.append(("step", started, time.monotonic()))
                g._cond.notify_all()


GATE = Gate()


# --------------------------------------------------------------------------- the response cache


class BoundedCache:
    """Values kept by key within `max_bytes` (by `size(value)`), least recently used first; a value larger than the
    whole budget is computed, returned and not kept. Two threads asking for the same missing key compute it once."""

    def __init__(self, max_bytes: int, size: Callable[[Any], int] = lambda v: 1024):
        self.max_bytes = int(max_bytes)
        self.size = size
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(n for _, n in self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def peek(self, key, default=None):
        """The kept value of `key` (no computing), or `default`."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
        return default

    def get(self, key, compute: Callable[[], Any], size: Callable[[Any], int] | None = None):
        """The kept value of `key`, else `compute()` (kept when it fits the budget)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:  # the same answer asked twice at once is computed once
            with self._lock:
                if key in self._items:
                    self.hits += 1
                    return self._items[key][0]
                self.misses += 1
            try:
                value = compute()
            finally:
                with self._lock:
                    self._building.pop(key, None)
            self.put(key, value, size)
            return value

    def put(self, key, value, size: Callable[[Any], int] | None = None) -> None:
        nbytes = int((size or self.size)(value))
        with self._lock:
            if nbytes <= self.max_bytes:
                self._items[key] = (value, nbytes)
                self._items.move_to_end(key)
                self._evict()

    def resize(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = int(max_bytes)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _evict(self) -> None:  # lock held
        total = sum(n for _, n in self._items.values())
        while self._items and total > self.max_bytes:
            _, (_, n) = self._items.popitem(last=False)
            total -= n


# --------------------------------------------------------------------------- dynamic batching


def kept(max_items: int = 256, key: Callable[..., Hashable] | None = None) -> Callable[[Callable], Callable]:
    """Decorator: a pure function's results kept by its arguments (hashable, or what `key(*args)` makes of them), at
    most `max_items`, least recently used first; thirty callers asking the same thing at once compute it once
    (`functools.lru_cache` would compute it thirty times, then keep one). An exception reaches each caller and is
    not kept."""

    def wrap(fn: Callable) -> Callable:
        cache = BoundedCache(max_items, size=lambda v: 1)

        @functools.wraps(fn)
        def inner(*args):
            return cache.get(key(*args) if key else args, lambda: fn(*args))

        inner.cache = cache
        return inner

    return wrap


@dataclass(eq=False)
class _Request:
    item: Any
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    batch: int = 1  # how many requests its batch held


class Batcher:
    """Requests for the same key that arrive within `window_s` of the first run as one call of
    `run(key, items) -> results` (one result per item, in order), at most `max_batch` at a time. The first
    caller of a batch runs it in its own thread; the others wait for their result."""

    def __init__(self, run: Callable[[Hashable, list], list], window_s: float = 0.05, max_batch: int = 32):
        self.run = run
        self.window_s = window_s
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._open: dict[Hashable, list[_Request]] = {}
        self.batches = 0  # calls of `run` so far
        self.largest = 0

    def submit(self, key: Hashable, item) -> tuple[Any, int]:
        """(this item's result, the size of the batch it ran in); raises what `run` raised."""
        req = _Request(item)
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None or len(batch) >= self.max_batch
            if leader:
                batch = self._open[key] = []
            batch.append(req)
        if not leader:
            req.done.wait()
            if req.error is not None:
                raise req.error
            return req.result, req.batch
        time.sleep(self.window_s)  # let the requests arriving meanwhile join this batch
        with self._lock:
            if self._open.get(key) is batch:
                del self._open[key]
        try:
            results = self.run(key, [r.item for r in batch])
            with self._lock:
                self.batches += 1
                self.largest = max(self.largest, len(batch))
            for r, res in zip(batch, results):
                r.result, r.batch = res, len(batch)
        except BaseException as err:  # every request of the batch gets the error
            for r in batch:
                r.error = err
        finally:
            for r in batch:
                r.done.set()
        if req.error is not None:
            raise req.error
        return req.result, req.batch


class Throttle:
    """At most one `take` per `every_s` seconds per key; what was refused is counted. Remembers the `most` keys
    seen last (an old caller's count starts again)."""

    def __init__(self, every_s: float, most: int = 10_000):
        self.every_s, self.most = float(every_s), most
        self._lock = threading.Lock()
        self._seen: OrderedDict[Hashable, list] = OrderedDict()  # key -> [last taken, taken, skipped]

    def take(self, key: Hashable, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._seen.pop(key, None) or [-float("inf"), 0, 0]
            self._seen[key] = entry
            while len(self._seen) > self.most:
                self._seen.popitem(last=False)
            if now - entry[0] < self.every_s:
                entry[2] += 1
                return False
            entry[0], entry[1] = now, entry[1] + 1
            return True

    def counts(self, key: Hashable) -> tuple[int, int]:
        """(taken, skipped) for `key`."""
        with self._lock:
            entry = self._seen.get(key)
            return (entry[1], entry[2]) if entry else (0, 0)

    def reset(self, key: Hashable) -> None:
        with self._lock:
            self._seen.pop(key, None)
