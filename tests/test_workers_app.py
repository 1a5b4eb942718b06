"""Jobs in worker processes, through the launched app (issue 22): a training runs in a process of its own, the
server's memory stays small while a ResNet-50 run and two VGG exports run, a job over its memory or a `kill -9` of
its worker fails that job alone with a sentence while the server keeps answering, and the line moves on.

The app is launched in this test process, so this process is the web server: its resident memory is read from
/proc, its children are the workers (named `cnnc-<kind>` in /proc). Nothing asserts a time.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.support import TINY_FORM, children  # noqa: E402

KEY = "W" * 10 + "-workers-visitor-"


def _client(url: str) -> Client:
    return Client(url, analytics_enabled=False, verbose=False)


def _rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def _launch(runs, monkeypatch=None, **env):
    from cnncompare.ui import build_app, launch

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    demo = build_app(runs)
    port = free_port()
    launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app(launched_app):
    return launched_app


def _wait(cond, what: str, timeout: float = 300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = cond()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"never saw {what}")


class _Peak:
    """The largest resident memory of the server process `pid` alone (its workers are its children) while it runs."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _own_rss(self.pid))
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _own_rss(pid: int) -> float:
    """The process alone, read from its own /proc status (rss_mb counts its children too, and subtracting them read
    a moment later counts a worker that ended in between as the server's own)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0


def test_a_training_runs_in_a_worker_and_the_server_stays_small():
    """The app served from a process of its own (as `python app.py`): nothing else in it but the server."""
    from benchmarks.load_test import serve

    with serve() as server:
        pid, client = server.proc.pid, _client(server.url)
        client.predict(**TINY_FORM, visitor=KEY + "warm", api_name="/finetune")  # the server's own first-use costs
        before = _own_rss(pid)
        with _Peak(pid) as peak:
            job = client.submit(
                **{**TINY_FORM, "models": "resnet50@none", "size": 96, "batch_size": 16, "epochs": 1},
                visitor=KEY + "r50",
                api_name="/finetune",
            )
            training = _wait(lambda: [p for p, n in children(pid).items() if n == "cnnc-train"], "the worker")
            assert pid not in training
            status, _, _, table, *_ = job.result(timeout=900)
            assert "Done" in status, status
            vgg = client.predict(
                **{**TINY_FORM, "models": "vgg11@head, vgg11@head lr=0.01", "size": 64},
                visitor=KEY + "vgg",
                api_name="/finetune",
            )
            assert "Done" in vgg[0], vgg[0]
            folders = [row["folder"] for row in _rows(vgg[3])]
            assert all(folders), _rows(vgg[3])
            for folder in folders:
                path, text = client.predict(folder, ["safetensors"], KEY + "vgg", api_name="/export_run")
                assert path and "exported" in text, text
        after = _own_rss(pid)
    assert peak.peak - before < 400, (before, peak.peak, after)  # a VGG-11 alone is 507 MB of weights
    assert after - before < 300, (before, after)


def test_a_killed_worker_fails_its_run_keeps_the_finished_one_and_the_line_moves_on(app):
    a, b = _client(app.url), _client(app.url)
    job = a.submit(
        **{**TINY_FORM, "models": "resnet18@head seed=41, resnet18@none seed=41 epochs=40", "max_per_class": 20},
        visitor=KEY + "killed",
        api_name="/finetune",
    )
    _wait(lambda: any("run 2/2" in str(o[0]) or "run 2/2" in str(o[1]) for o in job.outputs()), "the second run")
    [worker] = _wait(lambda: [p for p, n in children(os.getpid()).items() if n == "cnnc-train"], "its worker")
    waiting = b.submit(**{**TINY_FORM, "models": "resnet18@head seed=42"}, visitor=KEY + "next", api_name="/finetune")
    os.kill(worker, signal.SIGKILL)
    status, _, _, table, *_ = job.result(timeout=300)
    first, second = _rows(table)
    assert first["epochs"] == 1 and not first.get("error")  # the finished run is kept
    assert "1 of 2 runs trained" in status, status
    text = str(table) + status
    assert "worker process was killed (signal 9" in text, text
    out = waiting.result(timeout=300)  # the next in line starts and finishes
    assert "Done" in out[0], out[0]


def test_a_job_over_its_memory_is_ended_alone_and_the_server_keeps_answering(tmp_path, monkeypatch):
    # a slack of 0: the worker may not grow past its size when it became ready, so any training is over its memory
    demo, url = _launch(tmp_path / "runs", monkeypatch, CNNCOMPARE_WORKER_SLACK="0")
    try:
        client = _client(url)
        status, _, _, table, *_ = client.predict(**TINY_FORM, visitor=KEY + "over", api_name="/finetune")
        text = status + str(table)
        assert "The training used" in text and "more than the" in text and "ended alone" in text, text
        note, table, *_ = client.predict(["resnet18"], 64, False, KEY + "over", api_name="/profile")
        assert _rows(table)[0]["params"] == 11.69  # still serving
    finally:
        demo.close()
