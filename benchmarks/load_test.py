"""Load test: 30 simulated visitors on one app for 2 minutes; errors, time per endpoint, memory and disk.

    .venv/bin/python benchmarks/load_test.py [--visitors 30] [--seconds 120] [--no-append]

Starts the app in a child process on a free port of 127.0.0.1 (offline: random weights, the generated
`shapes` data; its own runs folder and gradio upload folder, both temporary), then runs the visitors,
each a gradio_client Client with its own key, as threads. Each visitor loops until the time is up,
with a pause of 1-4 s between actions, picking one of:

    profile     /profile of one or two catalog models at 64 px (latency measured half the time)
    predict     /predict of an uploaded image with one or two models (and one of its own runs, if any)
    finetune    a small /finetune (shapes, 8 images per class, 32 px, 1 epoch, frozen backbone)
    stop        a longer /finetune, stopped with /stop after a few seconds
    disconnect  a /finetune or /profile abandoned after a few seconds (the job cancelled: a closed tab)
    runs        /runs, the visitor's own runs

A probe visitor asks for a counting-only /profile every 5 s all along, and GETs /gradio_api/info: their
times show whether quick requests, and the web server itself, keep answering while the machine trains.
Bounded in count (visitors) and time (the run, then at most `--drain` seconds for what is still running,
then everything is stopped).

An answer is an error when the call raises or its page shows a warning that is not one of the
documented refusals (docs/SERVER.md: a second training, too many waiting jobs, server busy).
Prints, and appends to benchmarks/RESULTS.md: calls, refusals and errors per endpoint, p50/p95
time per endpoint (waiting in line included), the server's peak RSS (VmHWM of its process) and
the disk it gained (runs folder and upload folder).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for key, value in dict(
    GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", CNNCOMPARE_OFFLINE="1"
).items():
    os.environ.setdefault(key, value)

from benchmarks._results import report  # noqa: E402
from tests.support import TINY_FORM  # noqa: E402

IMAGE = ROOT / "assets" / "examples" / "star.jpg"
MODELS = ["resnet18", "alexnet", "googlenet", "mobilenetv3_small_100", "vgg11"]
SMALL = TINY_FORM  # a small /finetune: one frozen ResNet-18, 8 shapes per class, 32 px, one epoch
LONG = {**SMALL, "models": "resnet18@none", "epochs": 20, "max_per_class": 20, "batch_size": 8}
ACTIONS = [("profile", 30), ("predict", 30), ("finetune", 14), ("stop", 8), ("disconnect", 8), ("runs", 10)]
# Documented refusals (docs/SERVER.md, "Running a public server"): not errors.
REFUSALS = ("already have a training", "request(s) waiting", "The server is busy")
SERVER = """
import sys
from cnncompare.ui import build_app, launch
demo = build_app(sys.argv[1])
launch(demo, server_name="127.0.0.1", server_port=int(sys.argv[2]), quiet=True, show_error=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Tally:
    """Times, refusals and errors per endpoint, from all visitor threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.refused: dict[str, int] = defaultdict(int)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)
        self.t0 = time.monotonic()
        self.in_flight = 0  # actions started and not yet recorded
        self.closed = False  # set when the drain ends: what is still running then is "unfinished", not an error

    def begin(self) -> None:
        with self.lock:
            self.in_flight += 1

    def record(self, endpoint: str, seconds: float, text: str | None = None, error: str | None = None) -> None:
        with self.lock:
            if self.closed:
                return
            self.in_flight = max(0, self.in_flight - 1)
            self.calls[endpoint] += 1
            if error is not None:
                self.errors[endpoint].append(f"{error[:200]} (at {time.monotonic() - self.t0:.0f} s)")
            elif text and any(r in text for r in REFUSALS):
                self.refused[endpoint] += 1
            elif text and "⚠️" in text.split("\n", 1)[0]:  # the page's headline is a warning
                self.errors[endpoint].append(text.split("\n", 1)[0][:200])
            else:
                self.times[endpoint].append(seconds)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class Visitor(threading.Thread):
    def __init__(self, n: int, url: str, deadline: float, tally: Tally, seed: int):
        super().__init__(name=f"visitor-{n}", daemon=True)
        self.url, self.deadline, self.tally = url, deadline, tally
        self.rng = random.Random(seed)
        self.key = f"load-test-visitor-{n:03d}-" + "".join(self.rng.choices("abcdefghijklmnop", k=12))
        self.client = None
        self.folders: list[str] = []

    def run(self) -> None:
        from gradio_client import Client

        try:
            self.client = Client(self.url, analytics_enabled=False, verbose=False)
        except Exception as err:  # noqa: BLE001 - a visitor that cannot even connect is an error
            self.tally.record("connect", 0.0, error=f"{type(err).__name__}: {err}")
            return
        time.sleep(self.rng.uniform(0, 5))  # visitors arrive over a few seconds
        while time.monotonic() < self.deadline:
            action = self.rng.choices([a for a, _ in ACTIONS], [w for _, w in ACTIONS])[0]
            self.tally.begin()
            try:
                getattr(self, action)()
            except Exception as err:  # noqa: BLE001
                self.tally.record(action, 0.0, error=f"{type(err).__name__}: {str(err)[:150]}")
            time.sleep(self.rng.uniform(1, 4))

    def leave(self) -> None:
        try:
            self.client.predict(api_name="/stop")
        except Exception:  # noqa: BLE001 - leaving is best effort
            pass

    def timed(self, endpoint: str, *args, **kwargs):
        t0 = time.monotonic()
        out = self.client.predict(*args, **kwargs, api_name=f"/{endpoint}")
        first = out[0] if isinstance(out, (list, tuple)) else None
        self.tally.record(endpoint, time.monotonic() - t0, text=first if isinstance(first, str) else None)
        return out

    def models(self) -> list[str]:
        return self.rng.sample(MODELS, self.rng.choice([1, 2]))

    def profile(self) -> None:
        self.timed("profile", self.models(), 64, self.rng.random() < 0.5, self.key)

    def predict(self) -> None:
        from gradio_client import handle_file

        if self.folders and self.rng.random() < 0.5:  # one of its own fine-tuned runs
            self.timed("predict", handle_file(str(IMAGE)), [], [self.rng.choice(self.folders)], True, self.key)
        else:
            self.timed("predict", handle_file(str(IMAGE)), self.models(), [], True, self.key)

    def finetune(self) -> None:
        out = self.timed("finetune", **SMALL, visitor=self.key)
        table = out[3] if isinstance(out, (list, tuple)) and len(out) > 3 else None
        if isinstance(table, dict):
            self.folders += [row[-1] for row in table.get("data", []) if row and row[-1]]

    def runs(self) -> None:
        t0 = time.monotonic()
        listed = self.client.predict(self.key, api_name="/runs")
        ok = isinstance(listed, dict) and "runs" in listed
        self.tally.record("runs", time.monotonic() - t0, error=None if ok else f"unexpected answer {listed!r}"[:200])

    def stop(self) -> None:
        t0 = time.monotonic()
        job = self.client.submit(**LONG, visitor=self.key, api_name="/finetune")
        time.sleep(self.rng.uniform(3, 8))
        self.client.predict(api_name="/stop")  # Stop: a running training stops within a step, a waiting one leaves
        out = job.result(timeout=300)
        self.tally.record("finetune+stop", time.monotonic() - t0, text=out[0])

    def disconnect(self) -> None:
        t0 = time.monotonic()
        if self.rng.random() < 0.5:
            job = self.client.submit(**LONG, visitor=self.key, api_name="/finetune")
        else:
            job = self.client.submit(self.models(), 64, True, self.key, api_name="/profile")
        time.sleep(self.rng.uniform(1, 5))
        # like a closed tab: the server closes the job's generator at its next yield. A tab does not wait for an
        # answer, so neither does this visitor (gradio answers the cancel once the generator can be closed).
        threading.Thread(target=job.cancel, name="cancel", daemon=True).start()
        self.tally.record("disconnect", time.monotonic() - t0)


class Probe(threading.Thread):
    """A visitor asking a quick question (counting-only /profile) every 5 s: does the server keep answering?"""

    def __init__(self, url: str, deadline: float, tally: Tally):
        super().__init__(name="probe", daemon=True)
        self.url, self.deadline, self.tally = url, deadline, tally

    def run(self) -> None:
        from gradio_client import Client

        client = Client(self.url, analytics_enabled=False, verbose=False)
        while time.monotonic() < self.deadline:
            t0 = time.monotonic()
            self.tally.begin()
            try:  # the web server itself: a plain GET
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=60) as r:
                    r.read()
                self.tally.record("probe GET /info", time.monotonic() - t0)
            except Exception as err:  # noqa: BLE001
                self.tally.record("probe GET /info", 0.0, error=f"{type(err).__name__}: {err}")
            t0 = time.monotonic()
            self.tally.begin()
            try:
                out = client.predict(["resnet18"], 64, False, api_name="/profile")
                self.tally.record("probe profile", time.monotonic() - t0, text=out[0])
            except Exception as err:  # noqa: BLE001
                self.tally.record("probe profile", 0.0, error=f"{type(err).__name__}: {err}")
            time.sleep(5)


def after_check(url: str, timeout_s: float = 240.0) -> str:
    """After the crowd: a new visitor's small fine-tune and counting-only profile still answer."""
    from gradio_client import Client

    t0 = time.monotonic()
    try:
        client = Client(url, analytics_enabled=False, verbose=False)
        job = client.submit(**SMALL, api_name="/finetune")
        status = job.result(timeout=timeout_s)[0]
        note = client.predict(["resnet18"], 64, False, api_name="/profile")[0]
    except Exception as err:  # noqa: BLE001
        return f"FAILED ({type(err).__name__}: {str(err)[:120]})"
    ok = "Done" in status and "profiled" in note
    return f"{'ok' if ok else 'FAILED'} in {time.monotonic() - t0:.0f} s" + ("" if ok else f": {status[:120]}")


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the app did not start")


class Server:
    """The app in a child process on a free port of 127.0.0.1, with its own runs and upload folders."""

    def __init__(self, work: Path, proc: subprocess.Popen, url: str):
        self.work, self.proc, self.url = work, proc, url

    def cpu_s(self) -> float:
        """CPU seconds the server process has used (user + system), from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def disk(self) -> int:
        """Bytes in its runs and upload folders (runs, downloads, uploads)."""
        return folder_bytes(self.work / "runs") + folder_bytes(self.work / "gradio")


@contextlib.contextmanager
def serve(extra_env: dict | None = None):
    """Start the app (offline: random weights, generated data) and stop it afterwards."""
    work = Path(tempfile.mkdtemp(prefix="cnncompare-load-"))
    (work / "gradio").mkdir()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(work / "gradio"), "PYTHONPATH": str(ROOT), **(extra_env or {})}
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = (work / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(work / "runs"), str(port)],
        cwd=str(ROOT),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_up(url, proc)
        # The simulated visitors share this machine's cores with the server; a Space's visitors are on their own
        # machines. Lower this process's priority (the server child keeps its own) so the server gets the cores
        # first; what the visitors' side still costs shows in their times, and the server's CPU is reported.
        with contextlib.suppress(OSError):
            os.nice(10)
        yield Server(work, proc, url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--drain", type=float, default=90.0, help="seconds left for running jobs after the run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    visitors_n = max(1, min(args.visitors, 100))
    seconds = max(10.0, min(args.seconds, 1800.0))

    with serve() as server:
        url = server.url
        disk0 = server.disk()
        rss0 = peak_rss_mb(server.proc.pid)
        cpu0 = server.cpu_s()
        tally = Tally()
        started = time.monotonic()
        deadline = started + seconds
        threads = [Visitor(i, url, deadline, tally, args.seed * 1000 + i) for i in range(visitors_n)]
        threads.append(Probe(url, deadline, tally))
        for t in threads:
            t.start()
        print(f"{visitors_n} visitors on {url} for {seconds:.0f} s …", flush=True)
        for t in threads:
            t.join(timeout=max(0.0, deadline + args.drain - time.monotonic()))
        with tally.lock:  # what has not answered by now is left unfinished (the server stops next)
            tally.closed = True
            unfinished = tally.in_flight
        for t in threads:  # the visitors still waiting leave: Stop ends their running or waiting training
            if t.is_alive() and isinstance(t, Visitor):
                t.leave()
        after = after_check(url)  # no place in line or slot leaked: a new visitor still trains
        hung = [t.name for t in threads if t.is_alive()]
        wall = time.monotonic() - started
        rss = peak_rss_mb(server.proc.pid)
        cpu = server.cpu_s() - cpu0
        disk = server.disk() - disk0

    endpoints = sorted(set(tally.calls) | set(tally.errors))
    rows = []
    for ep in endpoints:
        times = tally.times.get(ep, [])
        p50, p95 = pct(times, 50), pct(times, 95)
        rows.append(
            [
                ep,
                tally.calls.get(ep, 0),
                tally.refused.get(ep, 0),
                len(tally.errors.get(ep, [])),
                "–" if p50 is None else f"{p50:.2f}",
                "–" if p95 is None else f"{p95:.2f}",
            ]
        )
    errors = sum(len(v) for v in tally.errors.values())
    refused = sum(tally.refused.values())
    rows.append(["all", sum(tally.calls.values()), refused, errors, "", ""])
    notes = [
        f"{visitors_n} visitors + 1 probe for {seconds:.0f} s (wall {wall:.0f} s with the drain); app in a child "
        f"process, offline (random weights), default limits of settings.Env.",
        f"Server peak RSS (VmHWM): {rss:,.0f} MB (at start {rss0:,.0f} MB); disk gained (runs + downloads + "
        f"uploads): {disk / 2**20:,.1f} MB.",
        "Times include waiting in the fair queue (one training at a time); refusals are the documented ones "
        "(docs/SERVER.md).",
        f"Server CPU: {cpu:,.0f} s in {wall:.0f} s of wall time (2 cores = {2 * wall:,.0f} s at most). The visitors "
        "(gradio_client threads) run on the same cores at lower priority (nice 10): their own work is in their "
        "times, not in the server's CPU.",
        f"After the crowd (unfinished trainings stopped), a new visitor's small fine-tune and profile: {after}.",
    ]
    if hung or unfinished:
        notes.append(
            f"Unfinished when the drain ended (not counted; stopped with the server): {unfinished} "
            f"call(s), of {', '.join(hung) or 'no visitor'}."
        )
    if errors:
        seen: dict[str, int] = defaultdict(int)
        for ep, msgs in tally.errors.items():
            for m in msgs:
                seen[f"{ep}: {m}"] += 1
        notes.append("Errors: " + "; ".join(f"{m} (×{n})" for m, n in sorted(seen.items(), key=lambda x: -x[1])[:10]))
    header = ["endpoint", "calls", "refused", "errors", "p50 s", "p95 s"]
    title = f"Load test: {visitors_n} visitors for {seconds:.0f} s (benchmarks/load_test.py)"
    if args.no_append:
        from benchmarks._results import markdown_table

        print(markdown_table(header, rows) + "\n\n" + "\n".join(notes))
    else:
        report(
            title,
            header,
            rows,
            notes="\n".join(f"- {n}" for n in notes),
            command=f"python benchmarks/load_test.py --visitors {visitors_n} --seconds {seconds:.0f}",
        )
    return 1 if errors or not after.startswith("ok") else 0


if __name__ == "__main__":
    sys.exit(main())
