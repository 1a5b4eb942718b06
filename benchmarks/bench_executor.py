"""Jobs in worker processes (issue 22): what the web server keeps, what a job's start costs, and a class of 30.

    .venv/bin/python benchmarks/bench_executor.py [--part all|start|rss|class] [--students 30] [--no-append]

- start: a job that does nothing (`os.getpid`), run inline, in a local worker (a spare already started; and
  spawned for the job), and as a Ray task on a local cluster of 2 CPUs: the median of 5.
- rss:   the app in a child process (the server), 20 mixed jobs through its API from 4 visitors (8 small
  fine-tunes, a ResNet-50 fine-tune, 4 estimates, 2 VGG-11 trainings and their 5 exports): the server's own resident
  memory idle before, at its peak, and idle after (its workers are not counted: they are other processes). The
  same with CNNCOMPARE_EXECUTOR=inline (everything in the server's process, as before issue 22) as the baseline.
- class: 30 visitors each start a distinct small fine-tune at once (resnet18@head, 8 shapes per class, 32 px, one
  epoch, each its own seed: nothing is shared) and predict their own picture every few seconds while they wait:
  the makespan (first Start to last finished page) and the predictions' p50/p95, with 1 and 2 local training
  slots and on a local Ray cluster of 2 nodes (one CPU each: `ray.cluster_utils.Cluster`).

Appends each part's table to benchmarks/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# offline, no telemetry: benchmarks.load_test sets those defaults when it is imported, below
os.environ["PYTHONPATH"] = str(ROOT)  # Ray's workers (and the app's) import cnncompare from this checkout

from benchmarks._results import report  # noqa: E402
from benchmarks.load_class import picture  # noqa: E402
from benchmarks.load_test import pct, serve  # noqa: E402
from tests.support import TINY_FORM, children  # noqa: E402

APPEND = True


def _emit(title, header, rows, notes, command):
    if APPEND:
        report(title, header, rows, notes, command)
    else:
        from benchmarks._results import markdown_table

        print(f"\n## {title}\n\n{markdown_table(header, rows)}\n\n{notes}\n")


def _client(url: str):
    from gradio_client import Client

    return Client(url, analytics_enabled=False, verbose=False)


def own_rss_mb(pid: int) -> float:
    """The resident memory of the server process alone (its workers are its children)."""
    from cnncompare.executor.local import rss_mb

    return rss_mb(pid) - sum(rss_mb(c) for c in children(pid))


# --------------------------------------------------------------------------- start overhead


def _median_call(executor, job, n: int = 5, between=None) -> float:
    times = []
    for _ in range(n):
        if between:
            between()
        t = time.perf_counter()
        executor.call(job)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def part_start() -> None:
    import ray

    from cnncompare.executor import Job
    from cnncompare.executor.cluster import RayExecutor
    from cnncompare.executor.inline import InlineExecutor
    from cnncompare.executor.local import LocalExecutor

    job = Job("os:getpid", kind="decode")
    rows = [["inline (in the server's process)", f"{_median_call(InlineExecutor(), job) * 1000:.2f} ms"]]
    cold = LocalExecutor(spare=0)
    rows.append(["local, a worker started for the job (no spare)", f"{_median_call(cold, job):.2f} s"])
    warm = LocalExecutor(spare=1)
    warm.call(job)

    def spare_ready():
        while not warm._spares:
            time.sleep(0.05)

    rows.append(
        ["local, a spare worker already started", f"{_median_call(warm, job, between=spare_ready) * 1000:.0f} ms"]
    )
    warm.close()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        on_ray = RayExecutor()
        on_ray.call(job)  # the cluster's first task
        rows.append(
            [
                "ray, a task on a local cluster (a fresh Ray worker each: max_calls=1)",
                f"{_median_call(on_ray, job):.2f} s",
            ]
        )
    finally:
        ray.shutdown()
    _emit(
        "Executor: job start overhead",
        ["where", "median of 5 (a job that does nothing)"],
        rows,
        "A local worker is forked from a fork server that imported torch, timm and the engine once (a spawned "
        "worker imported them anew: 2.9 s a job on 2026-12-07 13:51, when this machine ran Ray's row in 2.7 s); "
        "one spare kept started (CNNCOMPARE_SPARE_WORKERS=1) takes the fork off a job's start.",
        "benchmarks/bench_executor.py --part start",
    )


# --------------------------------------------------------------------------- the server's memory


def _mixed_jobs(url: str) -> list[str]:
    """20 jobs from 4 visitors; returns the errors."""
    errors: list[str] = []

    def visitor(i: int):
        c = _client(url)
        key = f"bench-exec-{i}-" + "k" * 16
        try:
            for j in range(2):  # 8 small fine-tunes, each its own
                out = c.predict(
                    **{**TINY_FORM, "models": f"resnet18@head seed={10 * i + j}"}, visitor=key, api_name="/finetune"
                )
                if "Done" not in out[0]:
                    errors.append(out[0][:120])
            c.predict(**{**TINY_FORM, "models": f"resnet18@none seed={i}"}, visitor=key, api_name="/estimate")
            if i == 0:
                out = c.predict(
                    **{**TINY_FORM, "models": "resnet50@none", "size": 96, "batch_size": 16},
                    visitor=key,
                    api_name="/finetune",
                )
                if "Done" not in out[0]:
                    errors.append(out[0][:120])
            if i == 1:
                out = c.predict(
                    **{**TINY_FORM, "models": "vgg11@head, vgg11@head lr=0.01", "size": 64},
                    visitor=key,
                    api_name="/finetune",
                )
                table = out[3]
                folders = [row[table["headers"].index("folder")] for row in table["data"]]
                for folder, fmts in [
                    (folders[0], ["safetensors"]),
                    (folders[1], ["safetensors"]),
                    (folders[0], ["safetensors", "onnx"]),
                ]:
                    path, text = c.predict(folder, fmts, key, api_name="/export_run")
                    if not path:
                        errors.append(text[:120])
        except Exception as err:
            errors.append(f"{type(err).__name__}: {str(err)[:120]}")

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _rss_run(executor: str) -> list:
    with serve({"CNNCOMPARE_EXECUTOR": executor, "CNNCOMPARE_TRAIN_PER_ADDRESS": "0"}) as server:
        pid = server.proc.pid
        _client(server.url).predict(["resnet18"], 64, False, "bench-exec-warm-" + "w" * 12, api_name="/profile")
        time.sleep(5)
        before = own_rss_mb(pid)
        peak, done = before, threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, own_rss_mb(pid))
                time.sleep(0.1)

        t = threading.Thread(target=sample)
        t.start()
        started = time.monotonic()
        errors = _mixed_jobs(server.url)
        took = time.monotonic() - started
        done.set()
        t.join()
        time.sleep(10)
        after = own_rss_mb(pid)
    return [
        executor,
        f"{before:,.0f}",
        f"{peak:,.0f}",
        f"{after:,.0f}",
        f"{after - before:+,.0f}",
        f"{took:.0f} s",
        f"{len(errors)}" + (f" ({'; '.join(e[:100] for e in errors)})" if errors else ""),
    ]


def part_rss() -> None:
    rows = [_rss_run("inline"), _rss_run("local")]
    _emit(
        "Executor: the server's memory around 20 mixed jobs",
        ["executor", "idle before (MB)", "peak (MB)", "idle after (MB)", "after − before", "20 jobs took", "errors"],
        rows,
        "The server process alone (its workers are other processes, not counted). Jobs: 9 fine-tunes (one a "
        "ResNet-50 at 96 px), 4 estimates, 2 VGG-11 trainings and 3 exports (one with ONNX), from 4 visitors at once. "
        "inline is the path before issue 22 (every job in the server's process). Goal: idle after within +300 MB.",
        "benchmarks/bench_executor.py --part rss",
    )


# --------------------------------------------------------------------------- a class of 30


def _class(url: str, students: int, work: Path) -> tuple[float, list[float], int]:
    pictures = [picture(work / f"student-{i}.png", i) for i in range(students)]
    times: list[float] = []
    lock = threading.Lock()
    failed = []
    finished = threading.Event()
    start = time.monotonic()
    ends: list[float] = []

    def student(i: int):
        from gradio_client import handle_file

        c = _client(url)
        key = f"student-{i:03d}-" + "s" * 20
        job = c.submit(**{**TINY_FORM, "models": f"resnet18@head seed={100 + i}"}, visitor=key, api_name="/finetune")
        while not job.done():
            t = time.monotonic()
            try:
                c.predict(handle_file(str(pictures[i])), ["resnet18"], [], False, key, api_name="/predict")
                with lock:
                    times.append(time.monotonic() - t)
            except Exception as err:
                failed.append(str(err)[:100])
            time.sleep(3)
        out = job.result()
        with lock:
            ends.append(time.monotonic())
            if "Done" not in out[0]:
                failed.append(out[0][:100])

    threads = [threading.Thread(target=student, args=(i,)) for i in range(students)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished.set()
    return max(ends) - start, times, len(failed)


def part_class(students: int) -> None:
    rows = []
    work = Path(tempfile.mkdtemp(prefix="cnncompare-bench-exec-"))
    base = {"CNNCOMPARE_TRAIN_PER_ADDRESS": "0", "CNNCOMPARE_QUEUE_SIZE": "256", "CNNCOMPARE_MAX_WAITING": "4"}
    per_run = None
    for name, env in [
        ("local, 1 slot", {"CNNCOMPARE_TRAIN_SLOTS": "1"}),
        ("local, 2 slots", {"CNNCOMPARE_TRAIN_SLOTS": "2"}),
    ]:
        with serve({**base, **env}) as server:
            makespan, times, failed = _class(server.url, students, work)
        if per_run is None:
            per_run = makespan / students
        rows.append(
            [name, f"{makespan:.0f} s", f"{pct(times, 50):.2f} s", f"{pct(times, 95):.2f} s", len(times), failed]
        )
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        env = {"CNNCOMPARE_EXECUTOR": "ray", "RAY_ADDRESS": cluster.address, "CNNCOMPARE_TRAIN_SLOTS": "2"}
        with serve({**base, **env}) as server:
            makespan, times, failed = _class(server.url, students, work)
        rows.append(
            [
                "ray, 2 nodes of 1 CPU",
                f"{makespan:.0f} s",
                f"{pct(times, 50):.2f} s",
                f"{pct(times, 95):.2f} s",
                len(times),
                failed,
            ]
        )
    finally:
        cluster.shutdown()
    _emit(
        f"Executor: a class of {students} distinct small fine-tunes",
        ["where the trainings run", "makespan", "predict p50", "predict p95", "predictions", "failed"],
        rows,
        f"Each visitor: resnet18@head, 8 shapes per class, 32 px, 1 epoch, its own seed (nothing shared), and a "
        f"prediction of their own picture every 3 s while waiting. One slot: {per_run:.1f} s per run end to end "
        "(worker start, decoding, training, evaluation, the final page). All on the same 2 cores, so 2 slots and 2 "
        "Ray nodes share them.",
        f"benchmarks/bench_executor.py --part class --students {students}",
    )


def main(argv=None) -> int:
    global APPEND
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["all", "start", "rss", "class"], default="all")
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args(argv)
    APPEND = not args.no_append
    if args.part in ("all", "start"):
        part_start()
    if args.part in ("all", "rss"):
        part_rss()
    if args.part in ("all", "class"):
        part_class(args.students)
    return 0


if __name__ == "__main__":
    sys.exit(main())
