"""Jobs in worker processes (issue 22): the same job gives the same answer inline, in a local worker and on a Ray
cluster; a job past its memory, a killed worker, a Stop end that job alone, with one sentence.

Real processes throughout: a local executor spawns workers, and a local Ray cluster (`ray.init(num_cpus=2)`) runs
tasks in its own worker processes. Nothing asserts a time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnncompare import compare
from cnncompare.env import Env
from cnncompare.executor import Job, JobEnded
from cnncompare.executor.inline import InlineExecutor
from cnncompare.executor.local import LocalExecutor
from cnncompare.executor.work import FN, DataInfo, DataSpec
from cnncompare.settings import DataSettings, ModelEntry, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'cnncompare[cluster]')")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs; its workers import cnncompare and tests.support from this checkout."""
    from cnncompare.executor.cluster import RayExecutor

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "CNNCOMPARE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}},
    )
    try:
        yield RayExecutor(slack=1.0)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local():
    ex = LocalExecutor(spare=0, slack=1.0)
    yield ex
    ex.close()


@pytest.fixture(params=["local", "ray"])
def executor(request):
    return request.getfixturevalue("cluster" if request.param == "ray" else "local")


def _job(tmp_path: Path, name: str) -> Job:
    entry = ModelEntry("resnet18", freeze="head", pretrained=False)
    settings = TrainSettings(optimizer="adam", lr=1e-3, epochs=2, batch_size=16, size=32, seed=5)
    plan = compare.Plan.parse("resnet18@head, resnet18@stages:1", model_defaults=entry, settings=settings)
    spec = DataSpec(DataSettings("shapes", 8), Env.read(), seed=0, size=32)
    out = tmp_path / name
    out.mkdir()
    labels = [r.label for r in plan.runs()]
    return Job(FN + "fine_tune", dict(plan=plan, data_spec=spec, labels=labels, out_dir=str(out), owner="t"))


def _results(executor, job: Job):
    stream = executor.stream(job)
    info = next(stream)
    assert isinstance(info, DataInfo) and info.n_train == 48 and len(info.classes) == 8
    return [ev.result for ev in stream if ev.kind == "end"]


def test_the_same_comparison_gives_the_same_metrics_inline_local_and_on_ray(tmp_path, local, cluster):
    runs = {
        name: _results(ex, _job(tmp_path, name))
        for name, ex in (("inline", InlineExecutor()), ("local", local), ("ray", cluster))
    }
    for name, results in runs.items():
        assert [r.error for r in results] == [None, None], name
        for r in results:  # the run folder is in the asked folder (from a Ray node: it came back), complete
            folder = Path(r.run_dir)
            assert folder.parent == tmp_path / name
            assert {"config.json", "metrics.csv", "results.json", "weights.safetensors"} <= {
                f.name for f in folder.iterdir()
            }
    metrics = {
        name: [(r.label, r.val_top1, [h["train_loss"] for h in r.history]) for r in results]
        for name, results in runs.items()
    }
    assert metrics["local"] == metrics["inline"]
    assert metrics["ray"] == metrics["inline"]


def test_a_worker_runs_in_a_process_of_its_own(local, cluster):
    here = os.getpid()
    for ex in (local, cluster):
        pid = ex.call(Job("os:getpid", kind="decode"))
        assert isinstance(pid, int) and pid != here


def test_a_job_over_its_memory_is_ended_alone_with_a_sentence(executor):
    # allowed: (100 MB + 1 GB for a fresh process) x slack 1.0 over the worker's own size; it takes 1.5 GB
    job = Job("tests.support:hog", {"mb": 1500}, kind="decode", memory_mb=100, label="the test's decoder")
    with pytest.raises(JobEnded) as err:
        executor.call(job)
    assert "The test's decoder used" in str(err.value) and "more than the" in str(err.value)
    assert "ended alone" in str(err.value)
    # and the executor goes on: the next job runs
    assert executor.call(Job("tests.support:ticks", {"most": 3}, kind="decode")) == 3


def test_a_killed_worker_fails_its_job_and_the_next_one_runs(executor):
    with pytest.raises(JobEnded) as err:
        executor.call(Job("tests.support:crash", kind="train"))
    assert "The training ended before it finished" in str(err.value)
    assert "start it again" in str(err.value)
    assert executor.call(Job("tests.support:ticks", {"most": 2}, kind="train")) == 2


def test_stop_ends_the_workers_job_at_its_next_step(executor):
    stop = {"now": False}
    stream = executor.stream(Job("tests.support:ticks", {"most": 600}, kind="train"), lambda: stop["now"])
    seen = []
    while True:
        try:
            seen.append(next(stream))
        except StopIteration as done:
            returned = done.value
            break
        if len(seen) == 5:
            stop["now"] = True
    assert 5 <= returned < 600  # it stopped, well before its end, and said how far it got
    assert seen == list(range(1, len(seen) + 1))


def test_a_job_that_cannot_read_its_data_says_why_in_one_sentence(executor, tmp_path):
    bad = tmp_path / "not-a-zip.zip"
    bad.write_bytes(b"this is not a zip file")
    spec = DataSpec(DataSettings(str(bad)), Env.read(), work_dir=str(tmp_path / "unpacked"))
    with pytest.raises(Exception) as err:
        executor.call(Job(FN + "decode", {"data_spec": spec}, kind="decode"))
    assert "zip" in str(err.value).lower() and "Traceback" not in str(err.value)
    assert not isinstance(err.value, JobEnded)


def test_the_local_executor_names_its_workers_and_ends_them(local):
    from tests.support import children

    stream = local.stream(Job("tests.support:ticks", {"most": 600}, kind="export"), lambda: False)
    next(stream)
    named = children(os.getpid())
    assert "cnnc-export" in named.values()
    [busy] = local.running()
    assert busy["kind"] == "export" and named[busy["pid"]] == "cnnc-export"
    stream.close()  # the reader went away: the worker is stopped, then ended
    for _ in range(100):
        if busy["pid"] not in children(os.getpid()):
            break
        __import__("time").sleep(0.1)
    assert busy["pid"] not in children(os.getpid())


def test_a_server_that_exits_while_a_spare_worker_starts_does_not_wait_for_it(tmp_path):
    """The spare that a job's start begins is still importing torch when the server exits: it is ended, not joined
    for ever by multiprocessing's exit handler (a CI run once hung there after every test had passed)."""
    import subprocess
    import sys

    script = tmp_path / "server.py"
    script.write_text(
        "from cnncompare.executor import Job\n"
        "from cnncompare.executor.local import LocalExecutor\n"
        "if __name__ == '__main__':\n"
        "    ex = LocalExecutor(spare=1)\n"
        "    print(ex.call(Job('tests.support:ticks', {'most': 2}, kind='decode')), flush=True)\n"
        # the job took the first worker, so a new spare is starting now, and the interpreter exits
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as err:
        raise AssertionError("the server process never exited: a worker it started kept it waiting") from err
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr[-2000:]
