"""What a stranger sends that the page never would, through the launched app: each is refused in one sentence
before it can take the server's memory, disk or queue, or reach anyone else's runs.

The memory checks compare the growth of this process's peak memory (the app runs in it) with a bound, never a
time: the machines are shared and noisy.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import subprocess
import sys
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from tests.support import BIG_PTH, TINY_FORM, peak_rss_mb, raw_call, reset_peak_rss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAR = ROOT / "assets" / "examples" / "star.jpg"
KEY_A = "A" * 10 + "-hardening-key-of-alice"
KEY_B = "B" * 10 + "-hardening-key-of-bobby"


@pytest.fixture(scope="module")
def app(launched_app):
    return launched_app


def _client(app) -> Client:
    return Client(app.url, analytics_enabled=False, verbose=False)


# --------------------------------------------------------------------------- memory


def test_a_training_that_cannot_fit_in_memory_is_refused_before_it_queues(app):
    """batch 1024 at 512 px on a CPU: counted on the meta device and refused with what fits, not run."""
    reset_peak_rss()
    before = peak_rss_mb()
    form = {**TINY_FORM, "models": "resnet18@none", "batch_size": 1024, "size": 512, "max_per_class": 60}
    status = _client(app).predict(**form, api_name="/finetune")[0]
    assert "needs about" in status and "one run may use on this machine" in status
    assert "use a batch of at most" in status and "px at batch" in status
    assert peak_rss_mb() - before < 400  # today: 2.0 -> 7.0 GB in 9 s and rising


def test_the_cli_refuses_the_same_run_with_a_sentence_instead_of_being_killed(tmp_path, monkeypatch, capsys):
    from cnncompare.cli import main

    monkeypatch.setenv("CNNCOMPARE_RUNS", str(tmp_path / "runs"))
    args = ["finetune", "--models", "resnet18@none", "--batch", "1024", "--size", "512", "--epochs", "1"]
    assert main([*args, "--max-per-class", "60", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "use a batch of at most" in err and "every model failed" in err


# --------------------------------------------------------------------------- weights files


@pytest.fixture(scope="module")
def amplified_pth(tmp_path_factory) -> Path:
    """A resnet18 .pth of about 1 MB on disk whose deflated members unpack to over 1 GB (made in a subprocess,
    so the 1 GB tensor never sits in this process)."""
    path = tmp_path_factory.mktemp("amplified") / "resnet18.pth"
    subprocess.run([sys.executable, "-c", BIG_PTH, str(path)], check=True, timeout=600, cwd=ROOT)
    Path(str(path) + ".raw").unlink()
    assert path.stat().st_size < 60 * 2**20  # the 44 MB of resnet18 weights; the 1 GB deflates to 1 MB
    return path


def test_an_amplified_weights_file_is_refused_before_it_is_read(app, amplified_pth):
    reset_peak_rss()
    before = peak_rss_mb()
    status, _ = _client(app).predict("resnet18", handle_file(str(amplified_pth)), KEY_A, api_name="/upload_weights")
    assert "unpacks to" in status and "more than the model's own weights could take" in status
    assert peak_rss_mb() - before < 300  # today: +1.5 GB, then 1.12 GB written under a 500 MB quota
    assert not list((app.runs / "visitors").glob("*/weights/*.safetensors"))


def test_only_the_checked_tensors_are_stored_and_counted(app, tmp_path):
    import timm
    import torch
    from safetensors import safe_open

    sd = timm.create_model("resnet18").state_dict()
    sd["aux1.fc.weight"] = torch.zeros(1000, 1024)  # an auxiliary classifier: allowed in a file, not kept
    torch.save(sd, tmp_path / "resnet18.pth")
    status, _ = _client(app).predict(
        "resnet18", handle_file(str(tmp_path / "resnet18.pth")), KEY_B, api_name="/upload_weights"
    )
    assert "Stored" in status
    [stored] = list((app.runs / "visitors").glob("*/weights/resnet18.safetensors"))
    with safe_open(str(stored), "pt") as f:
        keys = set(f.keys())
    assert (
        "aux1.fc.weight" not in keys
        and "fc.weight" in keys
        and len(keys) == len(timm.create_model("resnet18").state_dict())
    )
    assert stored.stat().st_size < 48 * 2**20  # 11.7 M weights, not the file's 15.8 M


# --------------------------------------------------------------------------- images


def _huge_png_data_url() -> str:
    from PIL import Image

    img = Image.new("1", (12000, 12000))  # 18 MB in this mode; 432 MB once decoded to RGB
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_an_image_inside_the_request_is_refused_before_gradio_decodes_it(app):
    url = _huge_png_data_url()
    reset_peak_rss()
    before = peak_rss_mb()
    image = {"url": url, "path": None, "meta": {"_type": "gradio.FileData"}}
    ok, answer = raw_call(app.url, "predict", [image, ["resnet18"], [], False, KEY_A])
    assert not ok and "only files uploaded to this page are accepted" in str(answer)
    assert peak_rss_mb() - before < 300  # today: decoded and re-encoded, +2.07 GB each


def test_an_upload_with_too_many_pixels_is_refused_from_its_header(app, tmp_path):
    from PIL import Image

    path = tmp_path / "tall.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 megapixels, over the default bound of 40
    reset_peak_rss()
    before = peak_rss_mb()
    with pytest.raises(Exception, match="megapixels"):
        _client(app).predict(handle_file(str(path)), ["resnet18"], [], False, KEY_A, api_name="/predict")
    assert peak_rss_mb() - before < 200


# --------------------------------------------------------------------------- the queue


def test_seventy_calls_from_one_client_never_lock_out_another_visitor(app):
    flood = _client(app)
    jobs = [flood.submit("any run", "a", "b", KEY_A, api_name="/confusion_images") for _ in range(70)]
    other = _client(app).predict(KEY_B, api_name="/runs")  # another visitor, during the flood
    assert "error" not in other and "runs" in other
    answers = [job.result(timeout=120) for job in jobs]
    texts = [a[1] for a in answers]
    assert any("request(s) waiting" in t for t in texts)  # the flood is refused at once beyond its share
    assert not any("Queue is full" in t for t in texts)


def test_a_call_outside_the_queue_or_without_a_session_is_refused(app):
    import httpx

    r = httpx.post(app.url + "gradio_api/run/runs", json={"data": [None]}, timeout=30)
    assert r.status_code == 404  # api_open=False: nothing skips the queue
    ok, answer = raw_call(app.url, "runs", [None], session_hash=None)
    assert ok and answer[0]["runs"] == [] and "error" not in answer[0]  # a session of its own: nothing shared
    assert not (app.runs / "visitors" / "local").exists()


# --------------------------------------------------------------------------- workspaces


def test_workspace_codes_are_made_by_the_server_and_guessing_is_limited(app):
    ctx = app.demo.cnncompare_context
    code = ctx.workspaces.create()
    assert len(code) == 16  # 96 random bits
    client = _client(app)
    ok = client.predict({"key": KEY_A, "code": code}, api_name="/runs")
    assert "error" not in ok
    chosen = client.predict({"key": KEY_A, "code": "cnnclass2024"}, api_name="/runs")
    assert "not a workspace code of this server" in chosen["error"] and chosen["runs"] == []

    def guess(i: int) -> dict:
        return _client(app).predict({"key": KEY_B, "code": f"guess{i:011d}"}, api_name="/runs")

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(guess, range(60)))
        refused = sum("Too many wrong workspace codes" in a.get("error", "") for a in answers)
        assert refused >= 60 - ctx.env.code_attempts  # one key: stopped after its share of guesses
        member = client.predict({"key": KEY_B, "code": code}, api_name="/runs")
        assert "error" not in member  # the right code still works: members are never locked out by a guesser
    finally:
        ctx.workspaces._failures.clear()  # the other tests come from the same address


def test_a_members_quota_never_evicts_another_members_runs(app, tmp_path, monkeypatch):
    """Alice trains in a workspace; Bob uploads weights and trains there with a tiny quota: only Bob's runs go."""
    import dataclasses

    ctx = app.demo.cnncompare_context
    code = ctx.workspaces.create()
    alice, bob = {"key": KEY_A, "code": code}, {"key": KEY_B, "code": code}
    client = _client(app)
    client.predict(**TINY_FORM, visitor=alice, api_name="/finetune")
    listed = client.predict(alice, api_name="/runs")["runs"]
    assert len(listed) == 1
    saved = ctx.env
    try:
        ctx.env = dataclasses.replace(saved, visitor_quota_mb=0.001)  # Bob's quota: nothing fits
        client.predict(**TINY_FORM, visitor=bob, api_name="/finetune")
    finally:
        ctx.env = saved
    after = [label for label, _ in client.predict(alice, api_name="/runs")["runs"]]
    assert listed[0][0] in after  # Alice's run survived Bob's quota


# --------------------------------------------------------------------------- training and echoes


def test_a_loss_that_explodes_ends_the_run_as_diverged(app):
    form = {**TINY_FORM, "models": "resnet18@none", "optimizer": "sgd", "lr": 10.0, "epochs": 3, "schedule": "none"}
    status, _, _, table, *_ = _client(app).predict(**form, visitor=KEY_A, api_name="/finetune")
    assert "Failed" in status and "diverged" in status and "lower the learning rate" in status


def test_echoed_text_is_cut_short(app):
    client = _client(app)
    name = "x" * 100_000
    note = client.predict([name], "", False, KEY_A, api_name="/profile")[0]
    assert len(note) < 2_000 and "x" * 200 not in note
    status = client.predict(**{**TINY_FORM, "models": name}, visitor=KEY_A, api_name="/finetune")[0]
    assert len(status) < 2_000 and "x" * 200 not in status
