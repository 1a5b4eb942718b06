"""The camera's endpoints (page-only) as a stranger with a script reaches them: real HTTP to a launched app, and
the one sentence each refusal gets. The browser's own path (a fake camera) is tests/test_browser_camera.py."""

from __future__ import annotations

import base64
import dataclasses
import io
import uuid

import httpx
import pytest
from PIL import Image

from cnncompare import capture
from cnncompare.server import ledger, visitors
from tests.support import TINY_FORM, raw_call, scene

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

KEY = "C" * 12 + "-camera-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def app(launched_app):
    return launched_app


def _event(app, elem_id: str, event: str) -> str:
    """The api_name gradio gave the page-only event `event` of the component `elem_id`."""
    config = httpx.get(app.url + "config", timeout=30).json()
    ids = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id}
    return next(
        d["api_name"] for d in config["dependencies"] if any(t == [i, event] for i in ids for t in d["targets"])
    )


def _frame(img: Image.Image) -> dict:
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return {"url": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), "path": None}


def _upload(app, paths) -> list[dict]:
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    served = httpx.post(app.url + "gradio_api/upload", files=files, timeout=60).json()
    return [{"path": s, "meta": {"_type": "gradio.FileData"}, "orig_name": p.name} for s, p in zip(served, paths)]


def _mine(app):
    who = visitors.Visitor(visitors.folder_id(KEY), visitors.folder_id(KEY))
    return capture.Captures(ledger.camera_dir(app.demo.cnncompare_context, who))


def test_a_frame_that_names_a_server_file_is_refused_by_both_cameras(app, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    for elem in ("cam-video", "live-cam"):
        name = _event(app, elem, "stream")
        data = [{"path": str(secret)}, "red", True, KEY]  # without meta: gradio itself would not check it
        if elem == "live-cam":
            data = [data[0], ["resnet18"], [], False, KEY]
        ok, out = raw_call(app.url, name, data, session_hash=uuid.uuid4().hex)
        assert not ok and "only this page's camera frames are accepted" in str(out), (elem, out)
    assert _mine(app).counts() == {}


def test_a_frame_that_declares_too_many_pixels_is_refused_from_its_header(app):
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = (8000).to_bytes(4, "big") + (8000).to_bytes(4, "big")
    import zlib

    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
    frame = {"url": "data:image/png;base64," + base64.b64encode(bytes(raw)).decode(), "path": None}
    ok, out = raw_call(app.url, _event(app, "cam-video", "stream"), [frame, "red", True, KEY], session_hash="bomb")
    assert not ok and "8000x8000 pixels, more than this page takes" in str(out), out


def test_a_class_name_cannot_name_a_folder_and_uploads_are_counted_before_they_are_written(app, tmp_path):
    pictures = []
    for i, kind in enumerate(["red", "red"]):
        pictures.append(tmp_path / f"p{i}.png")
        Image.fromarray(scene(kind, n=i + 1)[i]).save(pictures[-1])
    upload = _event(app, "cam-upload", "upload")
    for bad in ("../../runs", "/etc", "a/b"):
        ok, out = raw_call(app.url, upload, [_upload(app, pictures), bad, KEY], session_hash=uuid.uuid4().hex)
        assert "Name the class with letters" in str(out), out
    ok, out = raw_call(app.url, upload, [[{"path": "/etc/hostname"}], "red", KEY], session_hash=uuid.uuid4().hex)
    assert not ok and "only files uploaded to this page are accepted" in str(out), out
    assert _mine(app).counts() == {}
    ctx = app.demo.cnncompare_context
    env = ctx.env
    try:
        ctx.env = dataclasses.replace(env, visitor_quota_mb=0.001)  # 1 KB: less than one picture
        ok, out = raw_call(app.url, upload, [_upload(app, pictures), "red", KEY], session_hash=uuid.uuid4().hex)
        assert "The picture needs about" in str(out) and "of your" in str(out), out
        assert sum(_mine(app).counts().values()) == 0  # refused before anything was written
    finally:
        ctx.env = env
    ok, out = raw_call(app.url, upload, [_upload(app, pictures), "red", KEY], session_hash=uuid.uuid4().hex)
    assert ok and "Added 2 picture(s) to **red**" in str(out), out
    assert _mine(app).counts() == {"red": 2}


def test_training_on_the_camera_needs_the_visitors_own_ready_classes(app):
    client = Client(app.url, analytics_enabled=False, verbose=False)
    other = "D" * 12 + "-camera-" + uuid.uuid4().hex[:12]  # a visitor who captured nothing
    status = client.predict(**{**TINY_FORM, "dataset": "camera"}, visitor=other, api_name="/finetune")[0]
    assert "Your camera's classes are not ready: capture at least two classes" in status, status
