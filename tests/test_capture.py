"""Classes made with a camera (`cnncompare.capture`): a folder of class folders that trains like an upload; the
rate each visitor gets (`serving.Throttle`); the frame the page's camera sends (`ui.uploads.CameraFrame`)."""

from __future__ import annotations

import base64
import io
import zlib

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from cnncompare import capture, data
from cnncompare.errors import CNNCompareError
from cnncompare.serving import Throttle
from tests.support import scene


def _picture(kind: str, i: int = 0) -> Image.Image:
    return Image.fromarray(scene(kind, n=i + 1)[i])


@pytest.mark.parametrize("text", ["", "  ", "../etc", "a/b", "x" * 33, "-dash", "é", ".hidden", None, "a\x00b"])
def test_a_class_name_that_is_not_a_plain_name_gets_one_sentence(text):
    with pytest.raises(CNNCompareError, match="Name the class with letters"):
        capture.class_name(text)


def test_a_class_name_keeps_its_letters_and_its_spaces_become_underscores():
    assert capture.class_name("  thumbs up ") == "thumbs_up" and capture.class_name("cup-2") == "cup-2"


def test_captured_classes_load_split_and_change_identity_like_an_upload(tmp_path):
    caps = capture.Captures(tmp_path / "camera")
    assert caps.ready().startswith("Capture at least two classes")
    for i in range(capture.MIN_TO_TRAIN):
        caps.add("red", capture.encode(_picture("red", i)))
    assert "at least" in caps.ready() and "red" not in caps.ready()  # one class is not enough, whatever it holds
    for i in range(capture.MIN_TO_TRAIN - 1):
        caps.add("blue", capture.encode(_picture("blue", i)))
    assert caps.ready() == f"Each class needs at least {capture.MIN_TO_TRAIN} pictures to train and validate: blue (7)."
    before = data.source_identity(str(caps.root), None, 0)
    caps.add("blue", capture.encode(_picture("blue", 9)))
    assert caps.ready() is None and caps.counts() == {"blue": 8, "red": 8}
    assert data.source_identity(str(caps.root), None, 0) != before  # a run on fewer pictures is never reused
    with Image.open(caps.classes()["red"][0].path) as img:
        assert max(img.size) <= capture.SIDE and img.format == "JPEG"
    ds = data.load_dataset(str(caps.root), work_dir=tmp_path / "work")
    assert sorted(ds.classes) == ["blue", "red"] and len(ds.train) + len(ds.val) == 16


def test_deleting_names_only_what_the_folder_lists(tmp_path):
    caps = capture.Captures(tmp_path / "camera")
    first = caps.add("cup", capture.encode(_picture("red")))
    caps.add("cup", capture.encode(_picture("red", 1)))
    outside = tmp_path / "keep.jpg"
    outside.write_bytes(b"x")
    caps.remove("cup", "../../keep.jpg")
    caps.remove("../..", None)
    assert outside.exists() and caps.counts() == {"cup": 2}
    caps.remove("cup", first.name)
    assert caps.counts() == {"cup": 1}
    caps.remove("cup")
    assert caps.counts() == {}


def test_a_class_holds_a_bounded_number_of_pictures_and_there_are_few_classes(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "MAX_PER_CLASS", 3)
    monkeypatch.setattr(capture, "MAX_CLASSES", 2)
    caps = capture.Captures(tmp_path / "camera")
    blob = capture.encode(_picture("red"))
    for _ in range(3):
        caps.add("a", blob)
    with pytest.raises(CNNCompareError, match="has 3 pictures, the most"):
        caps.add("a", blob)
    caps.add("b", blob)
    with pytest.raises(CNNCompareError, match="At most 2 classes"):
        caps.add("c", blob)


def test_the_throttle_answers_one_frame_per_interval_per_visitor_and_counts_the_rest():
    t = Throttle(0.5)
    taken = [t.take("a", now=0.25 * i) for i in range(8)]  # a camera at four frames a second, for two seconds
    assert taken == [True, False, True, False, True, False, True, False]
    assert t.counts("a") == (4, 4)
    assert t.take("b", now=0.3)  # another visitor has their own rate
    assert t.counts("b") == (1, 0)


def _frame_payload(url: str):
    from cnncompare.ui.uploads import _ImagePayload

    return _ImagePayload(url=url, path=None)


def _data_url(img: Image.Image, fmt: str = "JPEG") -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def test_a_camera_frame_is_decoded_only_when_it_is_a_small_image_sent_inside_the_request(tmp_path):
    from cnncompare.ui.uploads import CameraFrame

    frame = CameraFrame(sources=["webcam"], streaming=True)
    img = frame.preprocess(_frame_payload(_data_url(_picture("blue"))))
    assert img.size == (320, 240) and img.mode == "RGB"
    secret = tmp_path / "secret.png"
    _picture("red").save(secret)
    for payload in (
        {"path": str(secret)},  # a file of the server
        {"path": str(secret), "url": "file://" + str(secret)},
        {"url": "data:text/plain;base64,aGVsbG8="},
    ):
        with pytest.raises(gr.Error, match="only this page's camera frames"):
            frame.preprocess(_frame_payload(payload.get("url")) if "url" in payload else _frame_payload(None))
    with pytest.raises(gr.Error, match="not a readable image"):
        frame.preprocess(_frame_payload("data:image/jpeg;base64,bm90IGFuIGltYWdl"))
    # 12,000 x 12,000 pixels declared by a PNG of a few KB: refused from its header, nothing decoded
    big = _data_url(Image.fromarray(np.zeros((1, 1, 3), np.uint8)), "PNG")
    raw = bytearray(base64.b64decode(big.split(",", 1)[1]))
    raw[16:24] = (12000).to_bytes(4, "big") + (12000).to_bytes(4, "big")
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")  # the header's checksum, so it reads as valid
    bomb = "data:image/png;base64," + base64.b64encode(bytes(raw)).decode()
    with pytest.raises(gr.Error, match="12000x12000 pixels, more than this page takes"):
        frame.preprocess(_frame_payload(bomb))
