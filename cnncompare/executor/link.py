"""The `Gate` across processes: interactive work first still holds when trainings run in worker processes.

The server and each worker hold one row of a shared array: their own (demand, busy, stepping, quiet) counts
(`Gate.counts`). A thread in each process writes its row and hands the sum of the other rows to its own gate
(`Gate.set_remote`) every `EVERY_S`: a worker's training pauses at its next step boundary while a visitor's
prediction waits or runs in the server, and a latency measurement (in either) waits for the other processes'
steps. A row is zeroed when its worker ends, however it ends (a `kill -9` mid-step must not leave a step counted).
"""

from __future__ import annotations

import threading
import time

from ..serving import Gate

__all__ = ["Rows", "share_counts", "EVERY_S", "FIELDS"]

EVERY_S = 0.02
FIELDS = 4


class Rows:
    """The shared array and which rows are free (row 0: the server). Made by the server before it spawns."""

    def __init__(self, mp_context, rows: int = 64):
        self.array = mp_context.Array("q", rows * FIELDS, lock=False)
        self._free = list(range(1, rows))
        self._lock = threading.Lock()

    def take(self) -> int:
        """A free row for a new worker; -1 when none is (the worker then runs without pausing for others)."""
        with self._lock:
            return self._free.pop(0) if self._free else -1

    def give(self, row: int) -> None:
        if row <= 0:
            return
        for k in range(FIELDS):
            self.array[row * FIELDS + k] = 0
        with self._lock:
            self._free.append(row)


def share_counts(gate: Gate, array, row: int, stop: threading.Event | None = None) -> threading.Thread:
    """Start the thread that keeps `row` of `array` and the gate's view of the other rows up to date."""

    def loop():
        n = len(array) // FIELDS
        while stop is None or not stop.is_set():
            own = gate.counts()
            base = row * FIELDS
            for k in range(FIELDS):
                array[base + k] = own[k]
            total = [0] * FIELDS
            for r in range(n):
                if r != row:
                    for k in range(FIELDS):
                        total[k] += array[r * FIELDS + k]
            gate.set_remote(tuple(max(0, v) for v in total), EVERY_S)
            time.sleep(EVERY_S)

    t = threading.Thread(target=loop, name=f"cnncompare-link-{row}", daemon=True)
    t.start()
    return t
