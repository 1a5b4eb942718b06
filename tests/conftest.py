"""Shared test setup: fully offline, no telemetry, quiet."""

import os
import sys
from pathlib import Path

# Set before gradio / huggingface_hub are imported anywhere.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CNNCOMPARE_OFFLINE", "1")
os.environ.setdefault("GRADIO_SERVER_NAME", "127.0.0.1")
# gradio's upload folder (and the app's downloads in it) of this test session alone: a rerun, or a benchmark running
# beside the tests, never shares files or disk caps with it
os.environ.setdefault("GRADIO_TEMP_DIR", __import__("tempfile").mkdtemp(prefix="cnncompare-tests-gradio-"))
# each worker process appends its record of training steps and timed measurements here (tests/test_serving.py)
os.environ.setdefault("CNNCOMPARE_GATE_LOG", os.path.join(os.environ["GRADIO_TEMP_DIR"], "gate.jsonl"))

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import socket  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched_app(tmp_path_factory):
    """The real app on a free local port (module-scoped): .url, .runs, .demo."""
    from cnncompare.ui import build_app, launch

    runs = tmp_path_factory.mktemp("runs")
    demo = build_app(runs)
    port = free_port()
    launch(
        demo,
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=port,
        ssr_mode=False,
        show_error=True,
        quiet=True,
    )
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", runs=runs, demo=demo)
    finally:
        demo.close()


def pytest_sessionfinish(session, exitstatus):
    """Let interactive work that an in-process app still computes for a closed page (a gallery's heat maps, say)
    finish before the interpreter exits: a daemon thread ended inside torch's C++ aborts the process (rc 134,
    'terminate called without an active exception') after every test passed."""
    import time

    from cnncompare.serving import GATE

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(GATE.counts()[:2]):
        time.sleep(0.1)
