"""The app as a shared public server, attacked and crowded through its real API (gradio_client and plain HTTP).

One test per finding of the hostile-visitor review (docs/SERVER.md): a server path given as a
file, other visitors' runs, a giant model name, a flood from one client, a full disk, a
damaged run folder; plus the server's limits and the fair queue's rules.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from cnncompare import runfolder  # noqa: E402
from cnncompare.server import ledger, visitors  # noqa: E402
from cnncompare.server.fairqueue import FairQueue, Refused  # noqa: E402
from tests.support import TINY_FORM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAR = ROOT / "assets" / "examples" / "star.jpg"
TINY = TINY_FORM
KEY_A = "A" * 10 + "-visitor-key-of-alice"
KEY_B = "B" * 10 + "-visitor-key-of-bobby"


@pytest.fixture(scope="module")
def app(launched_app):
    return launched_app


def _client(app) -> Client:
    return Client(app.url, analytics_enabled=False, verbose=False)


def rows_of(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def folder_of(app, key: str) -> Path:
    return app.runs / "visitors" / visitors.folder_id(key)


def call_raw(app, api_name: str, data: list) -> tuple[str, object]:
    """POST /gradio_api/call/<api_name> with a raw payload (no gradio_client upload), then read the event stream:
    ('complete', outputs) or ('error', message)."""
    base = f"{app.url}gradio_api/call/{api_name}"
    req = urllib.request.Request(
        base, data=json.dumps({"data": data}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        event_id = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{base}/{event_id}", timeout=120) as r:
        text = r.read().decode()
    kind, payload = None, None
    for line in text.splitlines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and kind in ("complete", "error"):
            body = json.loads(line.split(":", 1)[1])
            payload = body.get("error") if isinstance(body, dict) and kind == "error" else body
    return kind, payload


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def finetune(client: Client, key: str | None = None, **changes):
    extra = {"visitor": key} if key else {}
    return client.predict(**{**TINY, **changes}, **extra, api_name="/finetune")


# --------------------------------------------------------------------------- 1. no server file by its path


def test_a_server_path_given_as_a_file_is_refused_without_telling_anything(app):
    meta = {"_type": "gradio.FileData"}
    answers = {}
    for name, payload in {
        "file": {"path": "/etc/passwd"},
        "missing": {"path": "/nonexistent/x.jpg"},
        "folder": {"path": "/etc"},
        "string": "/etc/passwd",
        "runs": {"path": str(app.runs)},
        "url only": {"url": "file:///etc/passwd"},
    }.items():
        kind, text = call_raw(app, "predict", [payload, ["resnet18"], [], False, None])
        assert kind == "error", (name, text)
        answers[name] = text
    # one sentence for all of them: nothing tells whether the file exists, is a folder or is no image
    assert len(set(answers.values())) == 1, answers
    (text,) = set(answers.values())
    assert "only files uploaded" in text
    for word in ("No such file", "Is a directory", "cannot identify", "/etc", str(app.runs)):
        assert word not in text
    # with gradio's 'meta', gradio itself refuses what was not uploaded, the same way for a file that exists or not
    kinds = [
        call_raw(app, "predict", [{"path": p, "meta": meta}, ["resnet18"], [], False, None])
        for p in ("/etc/passwd", "/nonexistent/x.jpg")
    ]
    assert [k for k, _ in kinds] == ["error", "error"]
    assert all("not uploaded by a user" in str(t) for _, t in kinds)

    # the dataset zip of /finetune: the same refusal
    client = _client(app)
    names = [
        p["parameter_name"]
        for p in client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/finetune"]["parameters"]
    ]
    for payload in ({"path": "/etc/passwd"}, "/etc/hostname", {"path": "/etc/passwd", "meta": meta}):
        values = {**TINY, "dataset": "zip", "zip_file": payload, "visitor": None}
        kind, text = call_raw(app, "finetune", [values[n] for n in names])
        assert kind == "error" and ("only files uploaded" in text or "not uploaded by a user" in text), text


def test_an_upload_that_is_no_image_is_named_by_its_own_file_name(app, tmp_path):
    broken = tmp_path / "holiday.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 50)
    note, *_ = _client(app).predict(handle_file(str(broken)), ["resnet18"], [], False, api_name="/predict")
    assert "Could not read the image 'holiday.jpg'" in note
    assert "/tmp" not in note and "gradio" not in note


# --------------------------------------------------------------------------- 2. private runs


def test_visitors_see_use_and_download_only_their_own_runs(app):
    alice, bob = _client(app), _client(app)
    status, *_, table, _, _, files = finetune(alice, KEY_A)
    assert "Done" in status, status
    (row,) = rows_of(table)
    folder = row["folder"]
    run_dir = folder_of(app, KEY_A) / folder
    assert (run_dir / "weights.safetensors").is_file()  # under visitors/<sha256(key)[:16]>, never the key itself
    assert KEY_A not in str(run_dir)

    # list: Alice's run is hers; Bob sees nothing, a new page of Alice (same key) sees it again
    assert [v for _, v in alice.predict(KEY_A, api_name="/runs")["runs"]] == [folder]
    assert bob.predict(KEY_B, api_name="/runs")["runs"] == []
    assert bob.predict(api_name="/runs")["runs"] == []  # no key: one visitor per session
    assert [v for _, v in _client(app).predict(KEY_A, api_name="/runs")["runs"]] == [folder]  # a refresh keeps them

    # predict: Alice can, Bob cannot (the same sentence as for a run that does not exist)
    note, _, _, details = alice.predict(handle_file(str(STAR)), [], [folder], True, KEY_A, api_name="/predict")
    assert details and details[0]["weights"].startswith("fine-tuned")
    for who, key in ((bob, KEY_B), (bob, None)):
        note, _, _, details = who.predict(handle_file(str(STAR)), [], [folder], True, key, api_name="/predict")
        assert details == [] and f"No fine-tuned run called '{folder}'" in note
    note, *_ = bob.predict(handle_file(str(STAR)), [], ["shared:" + folder], True, KEY_B, api_name="/predict")
    assert "No fine-tuned run called" in note  # shared examples are off, and only top-level runs would be shared

    # download: the run folder is not served by its path; the downloads are copies in a random folder
    for name in ("weights.safetensors", "config.json", "results.json"):
        assert http_status(f"{app.url}gradio_api/file={run_dir / name}") in (403, 404)
    assert http_status(f"{app.url}gradio_api/file={app.runs}") in (403, 404)
    assert not any(str(app.runs) in Path(f).read_text(errors="ignore") for f in files if not f.endswith(".zip"))

    # a key is never a path
    note, *_ = bob.predict(handle_file(str(STAR)), [], [folder], True, "../../" + KEY_A, api_name="/predict")
    assert "visitor key must be" in note


def test_a_workspace_code_shares_runs_and_the_queue_still_counts_each_browser(app, tmp_path):
    spaces = visitors.Workspaces(tmp_path, attempts=3)
    code = spaces.create()  # made by the server: 96 random bits
    state = visitors.join_workspace({"key": KEY_A}, code, spaces)
    shared = visitors.resolve(state, None, spaces)
    assert shared.folder == visitors.folder_id(f"workspace:{code}")
    assert shared.id == visitors.folder_id(KEY_A)  # its queue share stays its own
    other = visitors.resolve(visitors.join_workspace({"key": KEY_B}, code, spaces), None, spaces)
    assert other.folder == shared.folder and other.id != shared.id
    with pytest.raises(Exception, match="not a workspace code of this server"):
        visitors.join_workspace({"key": KEY_A}, "class-7b-shapes-2026", spaces)  # a visitor cannot choose one
    assert code not in (tmp_path / ".workspaces").read_text()  # only its hash is kept
    assert visitors.join_workspace(state, "")["code"] == ""  # back to one's own runs


# --------------------------------------------------------------------------- 3. a fair queue


def test_a_flood_from_one_client_does_not_lock_out_another(app):
    flooder, other = _client(app), _client(app)
    jobs = [flooder.submit(["resnet18"], 64, True, api_name="/profile") for _ in range(20)]
    time.sleep(1.0)
    note, table, *_ = other.predict(["alexnet"], 64, False, api_name="/profile")  # answers: no "Queue is full"
    assert [r["model"] for r in rows_of(table)] == ["alexnet"] and rows_of(table)[0]["params"] == 61.1
    notes = [job.result(timeout=180)[0] for job in jobs]  # no "Queue is full": every call answers
    refused = [n for n in notes if "request(s) waiting" in n]
    profiled = [n for n in notes if "profiled" in n]
    assert len(refused) >= 20 - 1 - app.demo.cnncompare_context.env.max_waiting
    assert len(refused) + len(profiled) == 20

    # trainings: one per visitor, running or waiting; more are refused at once
    long_run = {**TINY, "models": "resnet18@none", "epochs": 30, "max_per_class": 20, "batch_size": 8}
    first = flooder.submit(**long_run, api_name="/finetune")
    time.sleep(1.0)
    more = [flooder.submit(**TINY, api_name="/finetune") for _ in range(3)]
    assert all("already have a training" in job.result(timeout=60)[0] for job in more)
    note, table, *_ = other.predict(["resnet18"], 64, False, api_name="/profile")  # still answering
    assert rows_of(table)[0]["params"] == 11.69
    flooder.predict(api_name="/stop")
    assert "Stopped" in first.result(timeout=90)[0]


def _until(condition, what: str, timeout_s: float = 180) -> None:
    """Wait for a state of the server (not a time): a busy 2-core machine may need long to get there."""
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, f"waited {timeout_s:.0f} s for {what}"
        time.sleep(0.2)


def test_stop_while_waiting_in_line_takes_the_job_out(app):
    running, waiting = _client(app), _client(app)
    queue = app.demo.cnncompare_context.queue
    _until(lambda: queue.running("train") == 0 and queue.waiting("train") == 0, "an earlier test's training to end")
    long_run = {**TINY, "models": "resnet18@none", "epochs": 30, "max_per_class": 20, "batch_size": 8}
    first = running.submit(**long_run, api_name="/finetune")
    _until(lambda: queue.running("train") == 1, "the first training to start")
    second = waiting.submit(**{**TINY, "models": "resnet18@head seed=22"}, api_name="/finetune")  # not a copy
    _until(lambda: any("number 1 in line" in str(o[0]) for o in second.outputs()), "the second training to wait")
    assert queue.waiting("train") == 1
    assert "Stopping" in waiting.predict(api_name="/stop")
    assert "Stopped** before the run started" in second.result(timeout=30)[0]
    assert queue.waiting("train") == 0 and not first.done()  # out of the line; the other run goes on
    running.predict(api_name="/stop")
    assert "Stopped" in first.result(timeout=90)[0]
    assert queue.running("train") == 0


def test_fair_queue_rules():
    q = FairQueue({"train": 1, "profile": 2}, max_waiting=2, max_queued=5)
    a1 = q.join("a", "profile")
    assert a1.granted
    a2 = q.join("a", "profile")  # a second slot is free, but one visitor runs one job per lane
    assert not a2.granted and q.position(a2) == 1
    b1 = q.join("b", "profile")
    assert b1.granted  # another visitor takes the free slot at once
    a3 = q.join("a", "profile")
    with pytest.raises(Refused, match="2 request"):
        q.join("a", "profile")
    t = q.join("a", "train")
    assert t.granted
    with pytest.raises(Refused, match="already have a training"):
        q.join("a", "train")
    c = [q.join(f"c{i}", "train") for i in range(3)]  # waiting: a2, a3 and these three = 5
    with pytest.raises(Refused, match="busy"):
        q.join("d", "train")
    q.leave(a1)
    assert a2.granted and not a3.granted  # first in line
    assert q.eta_s(a3) is not None and q.position(a3) == 1
    q.leave(t)
    assert c[0].granted and q.position(c[2]) == 2
    for ticket in (a2, a3, b1, *c):
        q.leave(ticket)
    assert q.running() == 0 and q.waiting() == 0


# --------------------------------------------------------------------------- 4. limits on what a visitor asks


def test_a_giant_model_name_is_refused_quickly_and_not_kept(app):
    from cnncompare.ui.common import MODELS

    before = len(MODELS)
    note, table, gallery, details = _client(app).predict(
        handle_file(str(STAR)), ["vit_giant_patch14_224"], [], False, api_name="/predict"
    )
    assert "more than this server allows" in note and details == []
    assert len(MODELS) == before
    note, table, *_ = _client(app).predict(["vit_giant_patch14_224"], 224, False, api_name="/profile")
    assert "more than this server allows" in note


def test_a_model_without_a_spatial_map_still_predicts_top5(app):
    note, table, gallery, details = _client(app).predict(
        handle_file(str(STAR)), ["vit_tiny_patch16_224"], [], False, api_name="/predict"
    )
    (d,) = details
    assert len(d["top"]) == 5 and d["heat_map"] is False
    assert "no heat map for this architecture" in note and gallery == []


def test_model_cache_is_bounded_in_bytes():
    import torch

    from cnncompare import models
    from cnncompare.serving import BoundedCache

    cache = BoundedCache(3000, size=models.model_bytes)
    cache.get("a", lambda: torch.nn.Linear(10, 30))  # 330 floats = 1320 bytes
    cache.get("b", lambda: torch.nn.Linear(10, 30))
    assert len(cache) == 2 and cache.bytes == 2640
    cache.get("c", lambda: torch.nn.Linear(10, 30))  # over 3000: the least recently used goes
    assert "a" not in cache and cache.bytes == 2640
    big = cache.get("big", lambda: torch.nn.Linear(100, 100))  # larger than the budget: used, not kept
    assert isinstance(big, torch.nn.Linear) and "big" not in cache and cache.bytes <= 3000


def test_server_limits_on_a_comparison(app):
    client = _client(app)
    ctx = app.demo.cnncompare_context
    text = client.predict(**{**TINY, "epochs": ctx.env.max_epochs + 1}, api_name="/estimate")
    assert f"at most {ctx.env.max_epochs} epochs per run" in text
    text = client.predict(
        **{**TINY, "models": ", ".join(["resnet18@head"] * (ctx.env.max_runs + 1))}, api_name="/estimate"
    )
    assert f"At most {ctx.env.max_runs} runs" in text
    # each run's time budget: min(the visitor's, CNNCOMPARE_MAX_RUN_S)
    from cnncompare import compare
    from cnncompare.settings import TrainSettings

    plan = compare.Plan.parse(
        "resnet18@head, resnet18@none time_budget_s=50000, resnet18@head time_budget_s=5",
        settings=TrainSettings(),
        limits=ctx.limits,
    )
    assert [r.settings.time_budget_s for r in plan.runs()] == [ctx.env.max_run_s, ctx.env.max_run_s, 5]
    # dataset pixels (images x size^2): lowered for this test on the running app
    saved = ctx.env
    try:
        ctx.env = dataclasses.replace(saved, max_dataset_mpix=0.05)
        status = finetune(client)[0]
        assert "megapixels, more than this server's limit" in status
    finally:
        ctx.env = saved


# --------------------------------------------------------------------------- 5. bounded disk


def test_a_visitor_over_quota_loses_the_oldest_runs(app):
    client = _client(app)
    key = "Q" * 10 + "-visitor-with-a-quota"
    first = rows_of(finetune(client, key)[3])[0]["folder"]
    size = runfolder.folder_bytes(folder_of(app, key) / first)
    ctx = app.demo.cnncompare_context
    saved = ctx.env
    try:  # room for one run and a half
        ctx.env = dataclasses.replace(saved, visitor_quota_mb=1.5 * size / 2**20)
        status, *_, table, _, _, _ = finetune(client, key)
    finally:
        ctx.env = saved
    second = rows_of(table)[0]["folder"]
    assert "quota" in status and first in status
    kept = [d.name for d in folder_of(app, key).iterdir() if not d.name.startswith(".")]  # .gallery: not a run
    assert kept == [second]
    assert [v for _, v in client.predict(key, api_name="/runs")["runs"]] == [second]


def test_pruning_at_start_removes_leftovers_and_expired_runs(tmp_path):
    from cnncompare.env import Env
    from cnncompare.ui.common import Context

    ctx = Context.from_env(tmp_path, dataclasses.replace(Env.read(), run_expiry_h=1.0))
    old = ctx.runs_root / "visitors" / "0123456789abcdef" / "20200101-000000-resnet18"
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    (old / "results.json").write_text("{}")
    stamp = time.time() - 2 * 3600
    import os

    os.utime(old / "config.json", (stamp, stamp))
    (ctx.runs_root / "half-written.json.tmp").write_text("x")
    ledger.at_start(ctx)
    assert not old.exists() and not (ctx.runs_root / "half-written.json.tmp").exists()


# --------------------------------------------------------------------------- 6. a damaged run folder


def test_a_damaged_run_folder_is_skipped_with_a_note(app):
    client = _client(app)
    key = "D" * 10 + "-visitor-with-damage"
    good = rows_of(finetune(client, key)[3])[0]["folder"]
    damaged = folder_of(app, key) / "20200101-000000-broken"
    damaged.mkdir()
    (damaged / "config.json").write_text(json.dumps({"dataset": {"name": "shapes", "classes": ["a", "b"]}}))
    (damaged / "weights.safetensors").write_bytes(b"")
    unreadable = folder_of(app, key) / "20200101-000001-garbled"
    unreadable.mkdir()
    (unreadable / "config.json").write_text("{not json")
    listed = client.predict(key, api_name="/runs")
    assert [v for _, v in listed["runs"]] == [good]
    assert "2 run folder(s) could not be read" in listed["skipped"]
    assert "20200101-000000-broken" in listed["skipped"] and str(app.runs) not in listed["skipped"]
    # other visitors are not affected, and the good run still predicts
    assert _client(app).predict(api_name="/runs")["runs"] == []
    note, _, _, details = client.predict(handle_file(str(STAR)), [], [good], True, key, api_name="/predict")
    assert details and details[0]["run"] == good


def test_shared_examples_are_offered_read_only(tmp_path):
    from cnncompare.env import Env
    from cnncompare.ui.common import Context

    ctx = Context.from_env(tmp_path, dataclasses.replace(Env.read(), shared_examples=True))
    example = ctx.runs_root / "20260101-120000-resnet18"
    example.mkdir()
    (example / "config.json").write_text(
        json.dumps({"train": {"model": "resnet18"}, "dataset": {"name": "shapes", "classes": ["a", "b"]}})
    )
    (example / "weights.safetensors").write_bytes(b"")
    anyone = visitors.resolve({"key": "E" * 10 + "-visitor-key-of-anyone"})
    choices, notes = visitors.visible_runs(ctx, anyone)
    assert [(c.value, c.shared) for c in choices] == [("shared:20260101-120000-resnet18", True)] and not notes
    assert visitors.find_run(ctx, anyone, "shared:20260101-120000-resnet18").path == example
    # pruning never touches them: only visitors/ is pruned
    ctx_off = Context.from_env(tmp_path, dataclasses.replace(Env.read(), runs_cap_mb=1e-9, run_expiry_h=1e-9))
    ledger.prune_all(ctx_off)
    assert example.is_dir()
    assert visitors.visible_runs(ctx_off, anyone) == ([], [])


def test_image_files_still_work_through_upload(app, tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (400, 60), (200, 40, 40)).save(path)
    note, table, gallery, details = _client(app).predict(
        handle_file(str(path)), ["resnet18"], [], False, api_name="/predict"
    )
    assert details and len(details[0]["top"]) == 5


def test_upload_components_reach_the_browser_as_plain_image_and_file():
    """The checked components send the browser exactly what gr.Image / gr.File send (their type and props)."""
    import gradio as gr

    from cnncompare.ui.uploads import UploadedFile, UploadedImage

    with gr.Blocks() as demo:
        pairs = [
            (
                gr.Image(type="filepath", label="x", sources=["upload"], height=300),
                UploadedImage(type="filepath", label="x", sources=["upload"], height=300),
            ),
            (gr.File(type="filepath", file_types=[".zip"]), UploadedFile(type="filepath", file_types=[".zip"])),
        ]
    config = {c["id"]: c for c in demo.get_config_file()["components"]}
    for plain, checked in pairs:
        assert config[checked._id]["type"] == config[plain._id]["type"]
        assert config[checked._id]["props"] == config[plain._id]["props"]
    assert not list((ROOT / "cnncompare" / "ui").glob("*.pyi"))  # no stub written into the package


def test_predict_survives_another_visitors_mac_counting():
    """Counting MACs (a profile) runs in its own thread's dispatch mode: a Grad-CAM gradient in another thread at the
    same moment is unaffected (torch's FlopCounterMode hooked every module of the process and broke it)."""
    import threading

    from cnncompare import inference, models, profiling

    model = models.build("resnet18").eval()
    image = Image.new("RGB", (80, 80), (200, 30, 30))
    end = time.monotonic() + 6
    counting = threading.Thread(
        target=lambda: [profiling.count_macs("alexnet", 64) for _ in iter(lambda: time.monotonic() < end, False)],
        daemon=True,
    )
    counting.start()
    answers = []
    while time.monotonic() < end:
        answers += inference.predict_batch(model, [image, image], top_k=5)
    counting.join()
    assert answers and all(len(p.top) == 5 and p.cam is not None for p in answers)
