"""Worker processes on this machine: a fresh process per job (forked from a fork server that imported the engine
once; spawned where the system has no fork server), so what a job takes goes back to the system when it ends, a
job past its memory is ended alone, and a `kill -9` fails one job, not the server.

A worker has the engine imported before it is given a job (one spare is kept started), names itself in `ps`
(`cnnc-spare`, then `cnnc-<kind>`), runs one job, sends what it yields over a pipe, and exits. The server watches each
busy worker's memory (its resident set, from /proc) against what the job was admitted with (`Job.memory_mb` x slack,
over the worker's own size when it became ready) and ends it past that.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import CNNCompareError
from ..serving import GATE, Gate
from .base import Executor, Job, JobEnded, outcomes
from .link import Rows, share_counts

__all__ = ["LocalExecutor", "descendants", "rss_mb", "worker_threads", "allowed_mb", "FRESH_PROCESS_MB"]

READY_TIMEOUT_S = 180.0
WATCH_EVERY_S = 0.2
GRACE_S = 60.0  # a stopped job that nobody reads any more saves its finished epochs within this, or is ended


# What a fresh worker takes on its first model beyond what the count covers (the count was fitted on a warm server):
# the allocator's arenas, oneDNN's kernels and scratch buffers. VGG-11@head at 64 px measured 2,056 MB in a fresh
# worker against a count near 950 MB over the worker's own 500 MB; in the warm server the same run fits its count.
FRESH_PROCESS_MB = 1024.0


def allowed_mb(ready_mb: float, memory_mb: float, slack: float) -> float | None:
    """What a worker may hold before it is ended: its own size when it became ready, plus (the job's counted memory
    and `FRESH_PROCESS_MB`) x slack; None when the job was admitted without a count."""
    if memory_mb <= 0:
        return None
    return ready_mb + (memory_mb + FRESH_PROCESS_MB) * slack


def worker_threads(slots: int) -> int:
    """CPU threads for one worker: the cores shared by the jobs that may run at once."""
    return max(1, (os.cpu_count() or 1) // max(1, slots))


def descendants(pid: int) -> Iterator[int]:
    """`pid` and every process under it (a local worker is the fork server's child, the server's grandchild)."""
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        yield p
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue


def rss_mb(pid: int) -> float:
    """The resident memory of a process and its children, in MB (0 when it is gone)."""
    total = 0.0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:")), 0.0)
        except (OSError, ValueError):
            continue
    return total


def _name(title: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(title[:15])
    except OSError:
        pass


def _worker_main(conn, stop, array, row: int, threads: int) -> None:
    """A worker's life: import the engine, say ready, run one job, send what it yields, exit."""
    _name("cnnc-spare")
    import torch

    torch.set_num_threads(threads)  # before the engine reads torch's default (runtime.DEFAULT_THREADS)
    from . import work  # noqa: F401  (the engine, imported before a job arrives)

    if row >= 0:
        share_counts(GATE, array, row)
    conn.send(("ready", rss_mb(os.getpid())))
    try:
        msg = conn.recv()
    except EOFError:
        return
    if msg is None:
        return
    job, gpu, environ = msg
    os.environ.clear()  # the server's environment when the job started (a forked worker has the fork server's)
    os.environ.update(environ)
    if gpu is not None:  # one GPU per worker on a multi-GPU box: "cuda" means this one from here on
        torch.cuda.set_device(gpu)
    _name(f"cnnc-{job.kind}")
    last = ("error", "The job ended without an answer.")
    for kind, value in outcomes(job, stop.is_set):
        if kind == "item":
            conn.send((kind, value))
        else:
            last = (kind, value)
    _log_gate()  # before the last word: whoever reads the log after the job's answer finds it complete
    conn.send(last)
    conn.close()


def _log_gate() -> None:
    """Append this worker's record of steps and measurements to CNNCOMPARE_GATE_LOG (when set)."""
    from ..env import Env

    path = Env.read().gate_log
    if path:
        with open(path, "a") as f:
            f.writelines(json.dumps([kind, start, end, os.getpid()]) + "\n" for kind, start, end in GATE.intervals)


def _context():
    """Workers are forked from a fork server that imported the engine once ("forkserver", where the system has it):
    a worker is ready in a fraction of a second instead of importing torch anew (seconds of CPU per job), and it is
    still a fresh process of its own, from a parent that never ran a model, so nothing a job does stays behind.
    Elsewhere each worker is spawned and imports the engine itself."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, f"{__package__}.work"])
    return ctx


_ROWS: Rows | None = None
_ROWS_LOCK = threading.Lock()


def _server_rows(mp_context, gate: Gate) -> Rows:
    """The one shared array of this server process (row 0 is its own), made and linked once however many
    executors it has."""
    global _ROWS
    with _ROWS_LOCK:
        if _ROWS is None:
            _ROWS = Rows(mp_context)
            share_counts(gate, _ROWS.array, 0)
        return _ROWS


@dataclass(eq=False)
class _Worker:
    proc: Any
    conn: Any
    stop: Any
    row: int
    ready_mb: float = 0.0
    job: Job | None = None
    gpu: int | None = None
    why: str = ""  # why the server ended it
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid


class LocalExecutor(Executor):
    """Jobs in fresh worker processes on this machine (the module's docstring)."""

    name = "local"

    def __init__(self, *, spare: int = 1, slack: float = 1.5, threads: int | None = None, gate: Gate = GATE):
        self._mp = _context()
        self.rows = _server_rows(self._mp, gate)
        self.spare = max(0, int(spare))
        self.slack = float(slack)
        self.threads = threads or worker_threads(1)
        self.gpus = _gpu_count()
        self._lock = threading.Lock()
        self._spares: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._closed = threading.Event()
        self._filling = False
        atexit.register(self.close)

    # ------------------------------------------------------------------ workers

    def _spawn(self) -> _Worker:
        parent, child = self._mp.Pipe()
        stop = self._mp.Event()
        row = self.rows.take()
        proc = self._mp.Process(
            target=_worker_main, args=(child, stop, self.rows.array, row, self.threads), name="cnncompare-worker"
        )
        proc.start()
        child.close()
        w = _Worker(proc, parent, stop, row)
        if not parent.poll(READY_TIMEOUT_S):
            self._end(w)
            raise CNNCompareError("A worker process did not start in time: the server is overloaded; try again.")
        try:
            _, w.ready_mb = parent.recv()
        except EOFError as err:
            self._end(w)
            raise CNNCompareError("A worker process could not start: see the server's log.") from err
        return w

    def _refill(self) -> None:
        # one filler at a time: two jobs taken together would otherwise each start the missing spare
        with self._lock:
            if not self.spare or self._filling:
                return
            self._filling = True
        threading.Thread(target=self._fill, name="cnncompare-spare", daemon=True).start()

    def _fill(self) -> None:
        w = None
        try:
            while True:
                with self._lock:
                    if w is not None and not self._closed.is_set():
                        self._spares.append(w)
                        w = None
                    if self._closed.is_set() or len(self._spares) >= self.spare:
                        self._filling = False  # with the count read: a job taken from now on starts a new filler
                        break
                w = self._spawn()
        except CNNCompareError:
            with self._lock:
                self._filling = False
        if w is not None:
            # closed while it started (at exit, say): a spare nobody ends would keep the interpreter waiting on it
            # for ever in multiprocessing's exit handler, which joins every child
            self._end(w)

    def _take(self) -> _Worker:
        with self._lock:
            while self._spares:
                w = self._spares.pop(0)
                if w.proc.is_alive():
                    break
                self._end(w)
            else:
                w = None
        if w is None:
            w = self._spawn()
        self._refill()
        return w

    def _end(self, w: _Worker) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        self.rows.give(w.row)
        w.row = -1
        try:
            w.conn.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ a job

    def limit_mb(self, w: _Worker, job: Job) -> float | None:
        return allowed_mb(w.ready_mb, job.memory_mb, self.slack)

    def _watch(self, w: _Worker, job: Job, should_stop: Callable[[], bool] | None) -> None:
        limit = self.limit_mb(w, job)
        while w.proc.is_alive():
            if should_stop is not None and not w.stop.is_set() and should_stop():
                w.stop.set()
            if limit is not None and (used := rss_mb(w.pid)) > limit:
                w.why = (
                    f"{job.what.capitalize()} used {used:,.0f} MB, more than the {limit:,.0f} MB it was admitted with, "
                    "and was ended alone (nothing else on the server was touched): try a smaller batch or input size."
                )
                w.proc.kill()
                return
            w.proc.join(WATCH_EVERY_S)

    def stream(self, job: Job, should_stop: Callable[[], bool] | None = None) -> Iterator[Any]:
        w = self._take()
        w.job = job
        with self._lock:
            w.gpu = self._free_gpu()
            self._busy[w.pid] = w
        finished = False
        try:
            w.conn.send((job, w.gpu, dict(os.environ)))
            threading.Thread(target=self._watch, args=(w, job, should_stop), daemon=True).start()
            while True:
                if not w.conn.poll(WATCH_EVERY_S):
                    if w.proc.is_alive():
                        continue
                    if not w.conn.poll(0):
                        break
                try:
                    kind, value = w.conn.recv()
                except (EOFError, OSError):
                    break
                if kind == "item":
                    yield value
                elif kind == "return":
                    finished = True
                    return value
                else:
                    finished = True
                    raise CNNCompareError(value)
            raise JobEnded(w.why or _ended(job, _exitcode(w.proc)))
        finally:
            if finished or not w.proc.is_alive():
                self._close_worker(w)
            else:  # the reader went away mid-job (a closed page): stop it, let it save, then end it
                w.stop.set()
                threading.Thread(target=self._drain, args=(w,), daemon=True).start()

    def _drain(self, w: _Worker) -> None:
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and w.proc.is_alive():
            try:
                if w.conn.poll(0.2):
                    if w.conn.recv()[0] in ("return", "error"):
                        break
            except (EOFError, OSError):
                break
        self._close_worker(w)

    def _close_worker(self, w: _Worker) -> None:
        w.proc.join(5)
        self._end(w)
        with self._lock:
            self._busy.pop(w.pid, None)

    def _free_gpu(self) -> int | None:  # lock held
        if self.gpus < 2:
            return None
        used = {w.gpu for w in self._busy.values()}
        return next((i for i in range(self.gpus) if i not in used), 0)

    def running(self) -> list[dict]:
        with self._lock:
            busy = list(self._busy.values())
        return [
            {"kind": w.job.kind, "label": w.job.label, "pid": w.pid, "gpu": w.gpu, "rss_mb": round(rss_mb(w.pid))}
            for w in busy
            if w.job
        ]

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            workers = self._spares + list(self._busy.values())
            self._spares, self._busy = [], {}
        for w in workers:
            self._end(w)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _exitcode(proc, wait_s: float = 5.0) -> int | None:
    """The worker's exit code once the system has it: its pipes close a moment before it can be reaped, so a
    single `join` may still read None (and the watcher thread may be reaping it at the same moment)."""
    deadline = time.monotonic() + wait_s
    while proc.exitcode is None and time.monotonic() < deadline:
        proc.join(0.05)
    return proc.exitcode


def _ended(job: Job, code: int | None) -> str:
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"ended with exit status {code}"
    if code is None:
        how = "ended (the system did not say how)"
    elif -code == signal.SIGKILL:
        how = "killed (signal 9: by the system's out-of-memory killer or an operator)"
    return (
        f"{job.what.capitalize()} ended before it finished: its worker process was {how}. What finished before is "
        "kept; start it again."
    )
