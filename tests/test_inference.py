"""Prediction and Grad-CAM on real models."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnncompare import data, inference, models, runs, training
from cnncompare.errors import CNNCompareError
from cnncompare.settings import ModelEntry, TrainSettings

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    x, _ = data.generate_shapes(1, 96, seed=3)
    path = tmp_path_factory.mktemp("img") / "shape.png"
    Image.fromarray(x[0]).save(path)
    return path


def test_predict_gives_imagenet_top5_and_a_time(picture):
    torch.manual_seed(0)
    model = models.build("resnet18")
    p = inference.predict(model, picture, size=64)
    assert len(p.top) == 5 and all(label in inference.imagenet_labels() for label, _ in p.top)
    probs = [prob for _, prob in p.top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert p.time_ms > 0 and "random weights" in p.note
    assert p.cam.shape == (64, 64) and p.cam.min() >= 0 and p.cam.max() == pytest.approx(1)


@pytest.mark.parametrize(
    "name,size",
    [
        ("alexnet", 64),
        ("vgg11", 64),
        ("googlenet", 64),
        ("inception_v3", 80),
        ("densenet121", 64),
        ("efficientnet_b0", 64),
    ],
)
def test_grad_cam_works_for_every_family(name, size, picture):
    torch.manual_seed(0)
    model = models.build(name, num_classes=3)
    cam = inference.predict(model, picture, size=size, classes=["a", "b", "c"], top_k=5).cam
    assert cam.shape == (size, size) and np.isfinite(cam).all()
    assert len(inference.predict(model, picture, size=size, cam=False).top) == 3  # top-k capped at the classes


def test_grad_cam_follows_the_channel_that_drives_the_score():
    # A hand-made classifier whose logit is the mean of channel 0 of the last feature map:
    # Grad-CAM's weights are then (1/HW, 0, 0, ...), so its map must be ReLU(channel 0), upsampled.
    model = models.build("resnet18", num_classes=1).eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[0, 0] = 1.0
    img = np.zeros((128, 128, 3), np.uint8)
    img[8:40, 88:120] = 255  # top-right corner
    x = inference.preprocess(Image.fromarray(img), model, 128)
    with torch.no_grad():
        feats = model.forward_features(x)
    target_map = feats[0, 0]
    cam = inference.grad_cam(model, x, 0)
    expected = torch.nn.functional.interpolate(torch.relu(target_map)[None, None], size=(128, 128), mode="bilinear")
    expected = expected[0, 0].numpy()
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert np.allclose(cam, expected, atol=1e-4)


def test_a_corrupt_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(CNNCompareError, match="Could not read the image"):
        inference.load_image(bad)


def test_overlay_is_an_image_the_size_of_the_map(picture):
    cam = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    out = inference.overlay(picture, cam)
    assert out.size == (64, 64) and out.mode == "RGB"


def test_cli_predict_with_a_fine_tuned_run(tmp_path, picture):
    ds = data.load_dataset("shapes", work_dir=tmp_path / "d", shapes_per_class=12, seed=0)
    store = runs.RunStore(tmp_path / "runs", "resnet18")
    training.fine_tune(ModelEntry("resnet18"), TrainSettings(epochs=1, size=32, device="cpu"), ds, store=store)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnncompare",
            "predict",
            str(picture),
            "--run",
            str(store.path),
            "--models",
            "alexnet",
            "--size",
            "64",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows[0]["model"] == "alexnet" and "random weights" in rows[0]["note"]  # models first, then runs
    assert {t["label"] for t in rows[1]["top"]} <= set(ds.classes) and len(rows[1]["top"]) == 5
    bad = subprocess.run(
        [sys.executable, "-m", "cnncompare", "predict", str(tmp_path / "nope.png"), "--models", "resnet18"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: Could not read the image")


def _peak_rss_of_a_prediction(path) -> int:
    code = (
        "import resource, sys; from cnncompare import inference, models; "
        "p = inference.predict(models.build('resnet18'), sys.argv[1], size=224); "
        "print(len(p.top), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-1000:]
    n, peak_mb = map(int, out.stdout.split())
    assert n == 5
    return peak_mb


def test_a_tall_thin_image_costs_what_a_square_one_costs(tmp_path):
    # 1 x 20000 pixels: resizing the short side first made it 256 x 5,120,000 (6 GB) before the crop
    Image.new("RGB", (1, 20000), (200, 30, 30)).save(tmp_path / "tall.png")
    Image.new("RGB", (300, 300), (200, 30, 30)).save(tmp_path / "square.png")
    tall, square = _peak_rss_of_a_prediction(tmp_path / "tall.png"), _peak_rss_of_a_prediction(tmp_path / "square.png")
    assert tall < square + 300, (tall, square)  # each in a fresh process: the image's cost, not the run's


def test_a_model_without_a_spatial_map_still_predicts_top5():
    model = models.build("vit_tiny_patch16_224")
    p = inference.predict(model, np.zeros((224, 224, 3), dtype=np.uint8), size=224)
    assert len(p.top) == 5 and p.cam is None and "no heat map for this architecture" in p.note
    with pytest.raises(CNNCompareError, match="at least one class"):
        inference.predict(model, np.zeros((224, 224, 3), dtype=np.uint8), size=224, top_k=0)


def test_cli_predict_refuses_a_top_below_one(picture):
    r = subprocess.run(
        [sys.executable, "-m", "cnncompare", "predict", str(picture), "--models", "resnet18", "--top", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "must be at least 1" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
