"""A class on one small server, through the launched app: interactive answers first (a training pauses for them and
resumes with the same result), latencies measured alone, and answers that are the same for everyone computed once.

Nothing here asserts a time: whether a training paused, or a latency overlapped a step, is read from the gates' own
records of what ran when (the server's `serving.GATE.intervals`; each worker's, appended to CNNCOMPARE_GATE_LOG when
its job ends: the trainings run in worker processes), and sharing from the stores' counters.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from cnncompare import compare, data, profiling  # noqa: E402
from cnncompare.serving import GATE, Batcher, BoundedCache, Gate  # noqa: E402
from cnncompare.settings import ModelEntry, TrainSettings  # noqa: E402
from tests.support import TINY_FORM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "assets" / "examples").glob("*.jpg"))
# a run long enough to be caught in the middle: ResNet-18 trained whole, 8 images a step, about 140 steps
LONG = {**TINY_FORM, "models": "resnet18@none seed=3", "max_per_class": 24, "batch_size": 8, "epochs": 6}


@pytest.fixture(scope="module")
def app(launched_app):
    return launched_app


def _client(app) -> Client:
    return Client(app.url, analytics_enabled=False, verbose=False)


def _overlaps(intervals, a: str, b: str) -> list:
    xs = [(s, e) for kind, s, e in intervals if kind == a]
    ys = [(s, e) for kind, s, e in intervals if kind == b]
    return [(x, y) for x in xs for y in ys if x[0] < y[1] and y[0] < x[1]]


def _wait_for_steps(n: int, timeout: float = 300) -> None:
    """Until the server's link has read a worker mid-step `n` times (its gate's view of the other processes).

    Reads, not rising edges: steps run back to back, and a link reading every 20 ms may never see the gap between
    two of them."""
    end, seen, last = time.monotonic() + timeout, 0, GATE.remote_at
    while time.monotonic() < end:
        if GATE.remote_at != last:
            last = GATE.remote_at
            seen += GATE.remote[2] > 0
        if seen >= n:
            return
        time.sleep(0.002)
    from cnncompare.executor import local

    rows = local._ROWS
    free = len(rows._free) if rows else None
    import faulthandler
    import tempfile

    from cnncompare.executor import choose

    links = [t.name for t in threading.enumerate() if t.name.startswith("cnncompare-link")]
    with open(Path(tempfile.gettempdir()) / "cnncompare-serving-stacks.txt", "w") as f:
        faulthandler.dump_traceback(f, all_threads=True)
    jobs = [e.running() for e in choose._MADE.values()]
    raise AssertionError(
        f"no training step seen in a worker (free link rows: {free}; own counts {GATE.counts()}, remote {GATE.remote} "
        f"read {time.monotonic() - GATE.remote_at:.1f} s ago; link threads "
        f"{links}; jobs {jobs})"
    )


def _worker_intervals(since: float) -> list[tuple[str, float, float]]:
    """What the workers ran since `since` (their gates' records; time.monotonic is one clock for all processes)."""
    log = Path(os.environ["CNNCOMPARE_GATE_LOG"])
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [(kind, start, end) for kind, start, end, _pid in rows if start >= since]


def test_a_training_pauses_for_predictions_and_ends_as_if_alone(app, tmp_path):
    GATE.intervals.clear()
    started = time.monotonic()
    trainer = _client(app)
    key = "T" * 10 + "-serving-trainer-key"
    job = trainer.submit(**LONG, visitor=key, api_name="/finetune")
    _wait_for_steps(5)
    student = _client(app)
    # three pictures made here, so that none is answered from memory: the app's examples may have been predicted
    # by an earlier test in the same process (the answers cache is the process's), and a cached answer pauses nothing
    rng = np.random.default_rng(int(time.time()))
    for i in range(3):
        image = tmp_path / f"fresh-{i}.png"
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(image)
        student.predict(
            handle_file(str(image)), ["resnet18"], [], False, "S" * 10 + "-serving-student-key", api_name="/predict"
        )
    status, _, _, table, *_ = job.result(timeout=900)
    assert "Done" in status
    assert any(kind == "step" for kind, *_ in _worker_intervals(started))  # it trained in a worker
    statuses = [o[0] for o in job.outputs() if isinstance(o, (list, tuple)) and isinstance(o[0], str)]
    assert any("paused" in s for s in statuses)  # and said so on the page
    # the same run, uninterrupted, in the engine: the same metrics to the last digit
    entry = ModelEntry("resnet18", freeze="none", pretrained=False)
    settings = TrainSettings(optimizer="adam", lr=1e-3, epochs=6, batch_size=8, size=32, schedule="cosine")
    ds = data.load_dataset("shapes", work_dir=tmp_path, max_per_class=24)
    plan = compare.Plan.parse("resnet18@none seed=3", model_defaults=entry, settings=settings)
    [alone] = compare.run_comparison(plan, ds)
    row = dict(zip(table["headers"], table["data"][0]))
    assert row["top-1 %"] == round(alone.val_top1, 1)
    from cnncompare.server.visitors import folder_id

    [served] = list((app.runs / "visitors" / folder_id(key)).glob("*/metrics.csv"))
    losses = [line.split(",")[1] for line in served.read_text().splitlines()[1:]]
    assert [float(x) for x in losses] == [h["train_loss"] for h in alone.history]


def test_a_latency_is_never_measured_while_a_training_step_runs(app):
    GATE.intervals.clear()
    started = time.monotonic()
    form = {**LONG, "models": "resnet18@none seed=4"}
    job = _client(app).submit(**form, visitor="U" * 10 + "-serving-trainer-key", api_name="/finetune")
    _wait_for_steps(5)
    note = _client(app).predict(
        ["alexnet", "googlenet"], 96, True, "V" * 10 + "-serving-profiler-key", api_name="/profile"
    )[0]
    assert "profiled" in note
    job.result(timeout=900)
    both = list(GATE.intervals) + _worker_intervals(started)
    assert sum(i[0] == "quiet" for i in GATE.intervals) >= 2  # both models' latencies, measured in the server
    assert sum(i[0] == "quiet" for i in both) >= 3  # and the training's own, at its end, in its worker
    assert sum(i[0] == "step" for i in both) >= 5
    assert _overlaps(both, "quiet", "step") == []


def test_the_same_count_prediction_and_run_are_served_from_memory(app, tmp_path):
    client = _client(app)
    key = "W" * 10 + "-serving-shared-key"
    # counting: the second identical count is kept; another size is counted
    from cnncompare.ui import figures

    hits, figure_hits = profiling.COUNTS.hits, figures.FIGURES.hits
    one = client.predict(["vgg11"], 112, False, key, api_name="/profile")
    two = client.predict(["vgg11"], 112, False, key, api_name="/profile")
    assert profiling.COUNTS.hits > hits
    # its figures too: built once, the second answer is the very same plots
    assert figures.FIGURES.hits >= figure_hits + 3 and one[2:] == two[2:]
    misses = profiling.COUNTS.misses
    client.predict(["vgg11"], 128, False, key, api_name="/profile")
    assert profiling.COUNTS.misses > misses
    # predictions: the same image again is answered from memory; another image is computed
    from cnncompare.ui import predict as predict_ui

    client.predict(handle_file(str(EXAMPLES[0])), ["resnet18"], [], False, key, api_name="/predict")
    batches = predict_ui.BATCHER.batches
    _client(app).predict(handle_file(str(EXAMPLES[0])), ["resnet18"], [], False, key + "-2", api_name="/predict")
    assert predict_ui.BATCHER.batches == batches
    from PIL import Image

    Image.new("RGB", (90, 70), (20, 160, 90)).save(tmp_path / "new.png")  # an image nobody sent before
    _client(app).predict(handle_file(str(tmp_path / "new.png")), ["resnet18"], [], False, key, api_name="/predict")
    assert predict_ui.BATCHER.batches == batches + 1
    # runs: a second visitor's identical run is a copy in their own folder; another seed is computed
    shared = app.demo.cnncompare_context.shared
    computed, copies = shared.computed, shared.copies
    first = _client(app).predict(**TINY_FORM, visitor="X" * 10 + "-serving-first-key", api_name="/finetune")
    second = _client(app).predict(**TINY_FORM, visitor="Y" * 10 + "-serving-second-key", api_name="/finetune")
    assert "Done" in first[0] and "Done" in second[0]
    assert shared.computed == computed + 1 and shared.copies == copies + 1
    assert "shared" in second[0] and rows_equal(first[3], second[3])
    other = _client(app).predict(
        **{**TINY_FORM, "models": "resnet18@head seed=7"}, visitor="Z" * 10 + "-serving-third-key", api_name="/finetune"
    )
    assert "Done" in other[0] and shared.computed == computed + 2


def rows_equal(a: dict, b: dict) -> bool:
    """The same results, apart from the run's folder (each visitor has a copy of their own)."""
    ra, rb = (dict(zip(t["headers"], t["data"][0])) for t in (a, b))
    return {k: v for k, v in ra.items() if k != "folder"} == {k: v for k, v in rb.items() if k != "folder"}


# --------------------------------------------------------------------------- the pieces, alone


def test_a_quiet_moment_waits_for_steps_and_work_and_holds_new_work_back():
    gate = Gate(max_pause_s=30)
    turn = gate.turn()
    order = []

    def train():
        for _ in range(40):
            for _ in turn.pauses():
                pass
            with turn.step():
                time.sleep(0.01)

    def measure():
        with gate.quiet():
            order.append("quiet")
            time.sleep(0.1)

    t = threading.Thread(target=train)
    t.start()
    time.sleep(0.05)
    measure()
    t.join()
    assert order == ["quiet"] and _overlaps(gate.intervals, "quiet", "step") == [] and gate.pauses >= 1


def test_a_polite_measurement_lets_new_requests_through_while_it_waits():
    """A finished run's latency (nobody waits for it) waits for a moment without requests; a request arriving
    meanwhile is not held back behind it, as it would be behind a visitor's own latency measurement."""
    gate = Gate()
    order = []
    release = threading.Event()

    def request(name: str, hold: threading.Event | None = None):
        with gate.interactive(), gate.working():
            order.append(name)
            if hold is not None:
                hold.wait(5)

    first = threading.Thread(target=request, args=("first", release))
    first.start()
    time.sleep(0.05)

    def measure():
        with gate.quiet(polite_s=5.0):
            order.append("quiet")

    m = threading.Thread(target=measure)
    m.start()
    time.sleep(0.05)
    request("second")  # not held back by the waiting measurement
    assert order == ["first", "second"]
    release.set()
    first.join()
    m.join(5)
    assert order == ["first", "second", "quiet"]


def test_a_training_under_a_constant_crowd_still_gets_a_share():
    gate = Gate(max_pause_s=0.3, burst_s=0.1)
    turn = gate.turn()
    steps = []
    with gate.interactive():  # a crowd that never leaves
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            for _ in turn.pauses():
                pass
            with turn.step():
                steps.append(time.monotonic())
    assert len(steps) >= 2  # the floor let it through, more than once


def test_a_batch_gives_each_caller_its_own_answer_and_one_computes():
    calls = []

    def run(key, items):
        calls.append(list(items))
        return [x * 10 for x in items]

    batcher = Batcher(run, window_s=0.2)
    out = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, batcher.submit("m", i))) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: r for i, (r, _) in out.items()} == {i: 10 * i for i in range(5)}
    assert len(calls) < 5 and sum(len(c) for c in calls) == 5


def test_the_response_cache_is_bounded_and_computes_once():
    cache = BoundedCache(100, size=lambda v: 40)
    n = []
    cache.get("a", lambda: n.append(1) or "A")
    cache.get("a", lambda: n.append(1) or "A")
    cache.get("b", lambda: "B")
    cache.get("c", lambda: "C")  # 120 bytes: the least recently used goes
    assert n == [1] and "a" not in cache and len(cache) == 2


def test_live_curves_are_sent_again_only_when_an_epoch_ended():
    import gradio as gr

    from cnncompare import training
    from cnncompare.ui.results import View

    view = View(["resnet18@head"], "session-curves")
    first = view.curves(changed_only=True)
    assert first is not None and not isinstance(first, type(gr.skip()))
    assert isinstance(view.curves(changed_only=True), type(gr.skip()))  # nothing new: not sent again
    epoch = training.Event("epoch", "resnet18", epoch=1, epochs=2, loss=2.0, val_top1=20.0, label="resnet18@head")
    view.event(epoch)
    again = view.curves(changed_only=True)
    assert not isinstance(again, type(gr.skip())) and again.plot != first.plot
    assert view.curves().plot == again.plot  # a full page always carries them


def test_visitors_getting_the_same_heat_map_at_once_each_get_a_whole_file_of_their_own(app):
    """gradio rewrites an image it is handed at a path made from the image's bytes: the same heat map sent to many
    visitors at once could be read half-written. Each answer carries its own file."""
    got: dict[int, list] = {}

    def visit(i: int) -> None:
        out = _client(app).predict(
            handle_file(str(EXAMPLES[0])), ["resnet18"], [], False, f"heat-{i:02d}-" + "h" * 20, api_name="/predict"
        )
        images = [item["image"] if isinstance(item, dict) else item[0] for item in out[2]]
        got[i] = [image["path"] if isinstance(image, dict) else image for image in images]

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(got) == list(range(6))
    files = [Path(paths[0]) for paths in got.values()]
    assert len({f.name for f in files}) == 6  # a file of each visitor's own
    contents = {f.read_bytes() for f in files}
    assert len(contents) == 1 and len(next(iter(contents))) > 100  # the same whole picture for everyone


def test_the_headline_says_what_a_run_does_before_its_first_step():
    """A frozen VGG16's features take a while before the first step: the headline says so, not 'starting…'."""
    from cnncompare.training import Event
    from cnncompare.ui.results import View

    view = View(["vgg16@head", "resnet50@head"], "session-headline")
    view.event(Event("start", "vgg16", label="vgg16@head", epochs=5))
    assert "starting…" in view.headline
    view.event(Event("info", "vgg16", label="vgg16@head", message="vgg16@head: everything before the classifier runs"))
    assert view.headline == "**Run 1 of 2: vgg16@head** — everything before the classifier runs", view.headline
