"""Jobs on a Ray cluster (`CNNCOMPARE_EXECUTOR=ray`, `RAY_ADDRESS`): each job one Ray task with its resources (CPUs,
GPUs, and the memory it was admitted with), scheduled by Ray itself; its items stream back as a Ray streaming
generator. The task runs in a Ray worker process used once (`max_calls=1`: its memory goes back when the job ends).

A node does not share the server's disk: an uploaded dataset travels through Ray's object store, the task writes
its run folders in a temporary folder of its node, and each finished run folder comes back as a tar in the stream
and is unpacked into the visitor's folder, where it looks exactly like a local run's. Stop is a flag in a small
actor the task reads twice a second; past its memory the task ends itself (after leaving the sentence in that
actor); a node lost mid-run ends the stream with Ray's error, said as one sentence.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import training
from ..errors import CNNCompareError, first_line
from ..runfolder import RunFolder
from .base import Executor, Job, JobEnded, outcomes
from .local import allowed_mb, rss_mb

__all__ = ["RayExecutor", "ray_available"]

POLL_S = 0.5


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class _Signals:
    """One job's flags, in a tiny actor both sides reach: stop (server → task), why it ended (task → server)."""

    def __init__(self):
        self.stopped, self.why = False, ""

    def stop(self) -> None:
        self.stopped = True

    def is_stopped(self) -> bool:
        return self.stopped

    def note(self, why: str) -> None:
        self.why = why

    def reason(self) -> str:
        return self.why


def _localized(job: Job, tmp: Path, upload: bytes | None, upload_name: str) -> Job:
    """The job with the node's own folders: its run folders in `tmp`, an uploaded dataset written there."""
    kwargs = dict(job.kwargs)
    if kwargs.get("out_dir"):
        kwargs["out_dir"] = str(tmp / "runs")
    spec = kwargs.get("data_spec")
    if spec is not None and upload is not None:
        path = tmp / upload_name
        path.write_bytes(upload)
        kwargs["data_spec"] = dataclasses.replace(
            spec, data=dataclasses.replace(spec.data, source=str(path)), work_dir=str(tmp / "unpacked")
        )
    return dataclasses.replace(job, kwargs=kwargs)


def _task(job: Job, signals, slack: float, upload: bytes | None, upload_name: str) -> Iterator[tuple]:
    """What runs on a Ray worker: the job, its items as ("item", x), run folders as ("folder", name, tar)."""
    import ray

    stop, done = threading.Event(), threading.Event()
    limit = allowed_mb(rss_mb(os.getpid()), job.memory_mb, slack)

    def watch():
        while not done.is_set():
            try:
                if ray.get(signals.is_stopped.remote()):
                    stop.set()
            except Exception:  # the server went away: stop and save
                stop.set()
            if limit is not None and (used := rss_mb(os.getpid())) > limit:
                ray.get(
                    signals.note.remote(
                        f"{job.what.capitalize()} used {used:,.0f} MB, more than the {limit:,.0f} MB it was admitted "
                        "with, and was ended alone: try a smaller batch or input size."
                    )
                )
                os._exit(1)
            done.wait(POLL_S)

    threading.Thread(target=watch, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="cnncompare-job-") as tmp:
        try:
            for kind, value in outcomes(_localized(job, Path(tmp), upload, upload_name), stop.is_set):
                folder = _finished_folder(value) if kind == "item" else None
                if folder is not None:
                    yield ("folder", folder.name, RunFolder(folder).tar())
                yield (kind, value)
        finally:
            done.set()


def _finished_folder(item) -> Path | None:
    """The run folder a finished run's "end" event names (None for anything else)."""
    if isinstance(item, training.Event) and item.kind == "end" and item.result is not None and item.result.run_dir:
        folder = Path(item.result.run_dir)
        return folder if folder.is_dir() else None
    return None


def _relocated(item, moved: dict[str, Path]):
    """An "end" event whose run folder came back: its result names the folder in the visitor's folder."""
    if isinstance(item, training.Event) and item.result is not None and item.result.run_dir:
        dst = moved.get(Path(item.result.run_dir).name)
        if dst is not None:
            item.result.run_dir = str(dst)
    return item


class RayExecutor(Executor):
    """Jobs as Ray tasks (the module's docstring)."""

    name = "ray"

    def __init__(self, *, address: str | None = None, slack: float = 1.5, **init):
        try:
            import ray
        except ImportError as err:
            raise CNNCompareError(
                "CNNCOMPARE_EXECUTOR=ray needs Ray: pip install 'cnncompare[cluster]' (or CNNCOMPARE_EXECUTOR=local)."
            ) from err
        self.ray = ray
        self.slack = float(slack)
        if not ray.is_initialized():
            try:
                ray.init(
                    address=address or os.environ.get("RAY_ADDRESS") or None,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="WARNING",
                    **init,
                )
            except Exception as err:
                raise CNNCompareError(
                    f"Could not reach the Ray cluster ({type(err).__name__}: {first_line(err)[:120]}): check "
                    "RAY_ADDRESS, or set CNNCOMPARE_EXECUTOR=local."
                ) from err
        self._task = ray.remote(max_calls=1, num_returns="streaming", max_retries=0)(_task)
        self._signals = ray.remote(num_cpus=0)(_Signals)
        self._lock = threading.Lock()
        self._busy: dict[int, Job] = {}

    def slots(self) -> int:
        """Jobs the cluster can run at once, one CPU (or one GPU) each."""
        res = self.ray.cluster_resources()
        return max(1, int(res.get("GPU", 0)) or int(res.get("CPU", 1)))

    def stream(self, job: Job, should_stop: Callable[[], bool] | None = None) -> Iterator[Any]:
        ray = self.ray
        signals = self._signals.remote()
        upload, name = None, ""
        spec = job.kwargs.get("data_spec")
        if spec is not None and Path(spec.source).is_file():
            upload, name = ray.put(Path(spec.source).read_bytes()), Path(spec.source).name
        opts: dict = {"num_cpus": job.cpus, "num_gpus": self._gpus(job)}
        if job.memory_mb > 0:
            opts["memory"] = int(job.memory_mb * 2**20)
        refs = self._task.options(**opts).remote(job, signals, self.slack, upload, name)
        out_dir = Path(job.kwargs["out_dir"]) if job.kwargs.get("out_dir") else None
        done = threading.Event()
        threading.Thread(target=self._relay_stop, args=(signals, should_stop, done), daemon=True).start()
        moved: dict[str, Path] = {}
        key = id(refs)
        with self._lock:
            self._busy[key] = job
        try:
            for ref in refs:
                try:
                    msg = ray.get(ref)
                except ray.exceptions.RayError as err:
                    raise JobEnded(self._why(signals, job, err)) from None
                if msg[0] == "folder":
                    if out_dir is not None:
                        moved[msg[1]] = RunFolder.unpack(msg[2], out_dir, msg[1]).path
                elif msg[0] == "item":
                    yield _relocated(msg[1], moved)
                elif msg[0] == "return":
                    return msg[1]
                else:
                    raise CNNCompareError(msg[1])
            raise JobEnded(self._why(signals, job, None))
        finally:
            done.set()
            with self._lock:
                self._busy.pop(key, None)
            try:
                ray.cancel(refs, force=True)
            except Exception:
                pass
            ray.kill(signals)

    def _gpus(self, job: Job) -> float:
        """A training asks for one GPU where the cluster has any (unless its plan says cpu): Ray then places it on
        a GPU machine, or queues it until one is free."""
        if job.gpus or job.kind != "train" or not self.ray.cluster_resources().get("GPU", 0):
            return job.gpus
        plan = job.kwargs.get("plan")
        return 0.0 if plan is not None and str(plan.settings.device).startswith("cpu") else 1.0

    def _relay_stop(self, signals, should_stop, done: threading.Event) -> None:
        while should_stop is not None and not done.wait(0.2):
            if should_stop():
                signals.stop.remote()
                return

    def _why(self, signals, job: Job, err) -> str:
        try:
            why = self.ray.get(signals.reason.remote(), timeout=5)
        except Exception:
            why = ""
        if why:
            return why
        lost = "its node was lost" if err is not None and "Node" in type(err).__name__ else "its Ray worker ended"
        return (
            f"{job.what.capitalize()} ended before it finished: {lost}. What finished before is kept; start it again."
        )

    def running(self) -> list[dict]:
        with self._lock:
            return [{"kind": j.kind, "label": j.label, "pid": None} for j in self._busy.values()]
