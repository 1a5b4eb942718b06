"""A fair queue in front of the app's work, per visitor: one client can never fill it for everybody.

Gradio's queue (`demo.queue(max_size=N)`) is one line for everyone: N calls from one client
fill it and every other visitor is told "Queue is full". So the app's events start at once in
gradio's terms and wait here instead, in lanes (train, profile, predict, estimate, blocks),
each with its own number of slots, under these rules:

- a visitor has at most one training running or waiting, and one address at most `per_address` places in the
  training line (a script with fresh keys from one machine cannot push an honest visitor back by more than that;
  following a run identical to another's takes no place of the machine and is not counted);
- a visitor has at most `max_waiting` other jobs waiting (one more may run in each lane);
- a visitor runs at most one job per lane at a time, so a second visitor's job takes the next
  free slot instead of waiting behind the first visitor's burst;
- at most `max_queued` jobs wait in all, over all visitors.

What is over a limit is refused at once, with one sentence (`Refused`), so it never occupies
a place in gradio's queue. A waiting job sees its place in line and an estimated wait, from
the average length of the lane's recent jobs. Handlers are generators: they `join`, yield a
waiting page from `waits(ticket)` about once a second (a cancelled or closed page closes the
generator there), run, and `leave` in `finally`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ..errors import CNNCompareError
from ..serving import GATE

__all__ = ["FairQueue", "Ticket", "Refused", "wait_text", "queued"]


class Refused(CNNCompareError):
    """A job over one of the queue's limits; the message says which and what to do."""


@dataclass(eq=False)
class Ticket:
    lane: str
    visitor: str
    address: str = ""
    joined: float = field(default_factory=time.monotonic)
    started: float | None = None  # when it got a slot
    left: bool = False

    @property
    def granted(self) -> bool:
        return self.started is not None


LANE_WORDS = {
    "train": "training",
    "watch": "following a run identical to yours",
    "profile": "profiling",
    "predict": "predictions",
    "estimate": "estimates",
    "blocks": "quick jobs (counting, block views)",
}


class FairQueue:
    """Lanes of work with a number of slots each, and per-visitor limits (see the module's docstring)."""

    def __init__(
        self,
        lanes: Mapping[str, int],
        *,
        max_waiting: int = 2,
        max_queued: int = 64,
        exclusive: Iterable[str] = ("train", "watch"),
        per_address: int = 0,
    ):
        self.slots = dict(lanes)
        self.max_waiting = max(0, int(max_waiting))
        self.max_queued = max(1, int(max_queued))
        self.exclusive = set(exclusive)
        self.per_address = max(0, int(per_address))  # places in the training line per address (0: none)
        self._cond = threading.Condition()
        self._waiting: dict[str, list[Ticket]] = {lane: [] for lane in self.slots}
        self._running: dict[str, list[Ticket]] = {lane: [] for lane in self.slots}
        self._avg_s: dict[str, float | None] = dict.fromkeys(self.slots)  # moving average of job lengths
        self.refused = 0

    # ------------------------------------------------------------------ joining and leaving

    def join(self, visitor: str, lane: str, address: str = "") -> Ticket:
        """A ticket in `lane`: granted at once when a slot is free, else waiting.

        Raises:
            Refused: over the visitor's share or the queue's size (nothing is queued).
        """
        if lane not in self.slots:
            raise KeyError(f"no lane {lane!r}")
        with self._cond:
            ticket = Ticket(lane, visitor, address)
            # one training per visitor, followed or computed: the exclusive lanes count together
            mine = [t for x in self.exclusive if x in self.slots for t in self._tickets(x) if t.visitor == visitor]
            if lane in self.exclusive and mine:
                self.refused += 1
                raise Refused(
                    f"You already have {self._word(lane)} running or waiting: wait for it to finish "
                    "(or press Stop) before starting another."
                )
            if lane == "train" and address and self.per_address:  # followers of an identical run ("watch") cost none
                here = sum(1 for t in self._tickets("train") if t.address == address)
                if here >= self.per_address:
                    self.refused += 1
                    raise Refused(
                        f"Your network address already has {here} trainings running or waiting, this server's limit "
                        "per address: wait for one of them to finish before starting another."
                    )
            if self._can_start(ticket):
                self._grant(ticket)
                return ticket
            waiting_mine = sum(
                1
                for lane_ in self.slots
                if lane_ not in self.exclusive
                for t in self._waiting[lane_]
                if t.visitor == visitor
            )
            if lane not in self.exclusive and waiting_mine >= self.max_waiting:
                self.refused += 1
                raise Refused(
                    f"You already have {waiting_mine} request(s) waiting, this server's limit per visitor: "
                    "wait for them to finish before sending more."
                )
            total = sum(len(w) for w in self._waiting.values())
            if total >= self.max_queued:
                self.refused += 1
                raise Refused(f"The server is busy ({total} requests waiting): try again in a minute.")
            self._waiting[lane].append(ticket)
            return ticket

    def leave(self, ticket: Ticket) -> None:
        """The job is over (done, failed, cancelled, or never started): free its place or slot."""
        with self._cond:
            if ticket.left:
                return
            ticket.left = True
            if ticket in self._waiting[ticket.lane]:
                self._waiting[ticket.lane].remove(ticket)
            if ticket in self._running[ticket.lane]:
                self._running[ticket.lane].remove(ticket)
                took = time.monotonic() - (ticket.started or ticket.joined)
                avg = self._avg_s[ticket.lane]
                self._avg_s[ticket.lane] = took if avg is None else 0.7 * avg + 0.3 * took
            self._dispatch()
            self._cond.notify_all()

    def wait(self, ticket: Ticket, timeout: float) -> bool:
        """Block up to `timeout` seconds for a slot; True once the ticket has one."""
        with self._cond:
            if not ticket.granted:
                self._cond.wait_for(lambda: ticket.granted, timeout=timeout)
            return ticket.granted

    def waits(self, ticket: Ticket, every: float = 1.0) -> Iterator[tuple[int, float | None]]:
        """(place in line, estimated wait in seconds or None) about every `every` seconds until the ticket
        has a slot; nothing when it got one at once."""
        while not self.wait(ticket, 0 if ticket.granted else every):
            yield self.position(ticket), self.eta_s(ticket)

    # ------------------------------------------------------------------ what a waiting visitor sees

    def position(self, ticket: Ticket) -> int:
        """1 for the next in line (0 once running)."""
        with self._cond:
            if ticket.granted:
                return 0
            line = self._waiting[ticket.lane]
            return line.index(ticket) + 1 if ticket in line else 0

    def eta_s(self, ticket: Ticket) -> float | None:
        """Estimated seconds until `ticket` starts, from the lane's average job length (None before any ended)."""
        with self._cond:
            avg = self._avg_s[ticket.lane]
            if avg is None or ticket.granted:
                return None
            now = time.monotonic()
            slots = self.slots[ticket.lane]
            free = sorted(max(avg - (now - (t.started or now)), 0.1 * avg) for t in self._running[ticket.lane])
            free = [0.0] * max(0, slots - len(free)) + free
            ahead = self._waiting[ticket.lane].index(ticket) if ticket in self._waiting[ticket.lane] else 0
            for _ in range(ahead):  # each job ahead takes the earliest free slot
                free.sort()
                free[0] += avg
            return min(free)

    def waiting(self, lane: str | None = None) -> int:
        with self._cond:
            lanes = [lane] if lane else list(self.slots)
            return sum(len(self._waiting[x]) for x in lanes)

    def running(self, lane: str | None = None) -> int:
        with self._cond:
            lanes = [lane] if lane else list(self.slots)
            return sum(len(self._running[x]) for x in lanes)

    # ------------------------------------------------------------------ inside (lock held)

    def _tickets(self, lane: str) -> list[Ticket]:
        return self._waiting[lane] + self._running[lane]

    def _can_start(self, ticket: Ticket) -> bool:
        running = self._running[ticket.lane]
        return len(running) < self.slots[ticket.lane] and all(t.visitor != ticket.visitor for t in running)

    def _grant(self, ticket: Ticket) -> None:
        ticket.started = time.monotonic()
        self._running[ticket.lane].append(ticket)

    def _dispatch(self) -> None:
        for lane, line in self._waiting.items():
            for ticket in list(line):
                if len(self._running[lane]) >= self.slots[lane]:
                    break
                if self._can_start(ticket):
                    line.remove(ticket)
                    self._grant(ticket)

    @staticmethod
    def _word(lane: str) -> str:
        return "a training" if lane in ("train", "watch") else f"a job ({LANE_WORDS.get(lane, lane)})"


def wait_text(lane: str, position: int, eta_s: float | None) -> str:
    """'⏳ Waiting: number 2 in line for training, about 3 min.' for a waiting page."""
    eta = ""
    if eta_s is not None:
        eta = f", about {round(eta_s)} s" if eta_s < 90 else f", about {round(eta_s / 60)} min"
    return (
        f"⏳ **Waiting for the machine**: number {position} in line for {LANE_WORDS.get(lane, lane)}{eta}. "
        "Other visitors' jobs are running; yours starts by itself."
    )


def queued(
    queue: FairQueue,
    visitor: str,
    lane: str,
    work: Callable[[], Iterator],
    *,
    refused: Callable[[str], object],
    waiting: Callable[[str], object],
    computes: bool = True,
    address: str = "",
) -> Iterator:
    """Generator, for every tab's interactive handlers: wait in `lane` of the fair queue, then run `work()`
    (trainings pause meanwhile: `serving.Gate`).

    Yields `waiting(sentence)` about once a second while in line, then whatever `work()` yields; a job over
    one of the queue's limits yields `refused(sentence)` once and never takes a place. The place is given
    back however the job ends (done, failed, cancelled by a closed page). `computes=False`: work that measures
    (a latency, an estimate) takes the machine to itself (`Gate.quiet`) for that part instead.
    """
    try:
        ticket = queue.join(visitor, lane, address)
    except CNNCompareError as err:
        yield refused(str(err))
        return
    # interactive work: a training pauses while this waits or runs (`serving.Gate`), and a latency measurement
    # (which needs the cores to itself) is not disturbed by it
    with GATE.interactive():
        try:
            for position, eta in queue.waits(ticket):
                yield waiting(wait_text(lane, position, eta))
            # counted as computing only while it computes: between two items the generator is suspended (a page
            # that went away may leave it so until it is collected), and a suspended one must not hold a latency
            # measurement (and with it every training) waiting
            items = iter(work())
            try:
                while True:
                    with GATE.working() if computes else contextlib.nullcontext():
                        try:
                            item = next(items)
                        except StopIteration:
                            break
                    yield item
            finally:
                if hasattr(items, "close"):  # a closed page closes the work too, as `yield from` did
                    items.close()
        finally:
            queue.leave(ticket)
