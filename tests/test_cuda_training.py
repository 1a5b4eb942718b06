"""Training, inference and the event stream on a GPU (skipped without CUDA): real models, real data.

Runs on the GPU machine only; CI has none. bf16 autocast and cuDNN autotuning are not bit-exact,
so comparisons between paths use tolerances.
"""

import json

import numpy as np
import pytest
import torch

from cnncompare import compare, data, inference, models, runs, training
from cnncompare.data import placement
from cnncompare.settings import ModelEntry, TrainSettings

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return data.load_dataset("shapes", work_dir=tmp_path_factory.mktemp("data"), shapes_per_class=60, seed=0)


def gpu(model="resnet18", freeze="none", **kw):
    base = dict(epochs=2, size=64, lr=1e-3, device="cuda")
    base.update(kw)
    return ModelEntry(model, freeze=freeze), TrainSettings(**base)


def test_full_fine_tuning_on_the_gpu_learns_with_data_on_the_device(shapes):
    r = training.fine_tune(*gpu(epochs=4), shapes)
    assert r.error is None and r.final_epoch == 4 and r.device.startswith("cuda")
    assert r.data_on_device and r.batch_size == 128  # the automatic GPU batch
    assert r.warmup_s and r.warmup_s > 0 and r.images_per_s > 0 and r.peak_mem_mb > 0
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.latency_ms and r.macs


def test_streaming_from_pinned_memory_matches_the_on_device_path(shapes, monkeypatch):
    on_device = training.fine_tune(*gpu(batch_size=32), shapes)
    monkeypatch.setattr(placement, "DEVICE_DATA_FRACTION", 0.0)  # nothing fits: pinned memory + async copies
    streamed = training.fine_tune(*gpu(batch_size=32), shapes)
    assert on_device.data_on_device and not streamed.data_on_device
    for a, b in zip(on_device.history, streamed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=3e-2)
        assert a["val_top1"] == pytest.approx(b["val_top1"], abs=5)


def test_feature_cache_on_the_gpu(shapes):
    cached = training.fine_tune(*gpu(freeze="head", epochs=3), shapes)
    plain = training.fine_tune(*gpu(freeze="head", epochs=3, feature_cache=False), shapes)
    assert cached.feature_cache and not plain.feature_cache
    for a, b in zip(cached.history, plain.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=3e-2)


def test_augmentation_and_stored_size_resizing_run_on_the_device(shapes):
    # shapes are stored at 64 px: training at 96 px resizes each batch on the GPU
    r = training.fine_tune(*gpu(size=96, augment=True, epochs=2), shapes)
    assert r.error is None and r.final_epoch == 2 and not r.feature_cache


def test_events_stream_and_a_closed_stream_saves_on_the_gpu(shapes, tmp_path):
    store = runs.RunStore(tmp_path, "resnet18")
    gen = training.run(*gpu(epochs=50, batch_size=16), shapes, store=store)
    kinds = []
    for ev in gen:
        kinds.append(ev.kind)
        if ev.kind == "epoch":
            break
    gen.close()
    saved = json.loads((store.path / "results.json").read_text())
    assert saved["stopped"] == "stopped by user" and saved["final_epoch"] == 1
    assert (store.path / "weights.safetensors").is_file()
    assert kinds[0] == "start" and "epoch" in kinds


def test_a_comparison_on_the_gpu_and_its_reload(shapes, tmp_path):
    plan = compare.Plan.parse("alexnet@head, resnet18@stages:2", settings=gpu(size=64)[1])
    results = compare.run_comparison(plan, shapes, out_dir=tmp_path)
    assert [r.error for r in results] == [None, None]
    model = runs.load_run(results[1].run_dir).load_model("cuda")
    pred = inference.predict(model, np.zeros((64, 64, 3), dtype=np.uint8), size=64, classes=shapes.classes)
    assert len(pred.top) == 5 and pred.cam is not None


def test_predict_on_the_gpu_gives_the_same_top1_as_on_the_cpu():
    torch.manual_seed(0)
    model = models.build("resnet18")
    image = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    cpu = inference.predict(model, image, size=224, top_k=5, cam=False)
    cuda = inference.predict(model.to("cuda"), image, size=224, top_k=5, cam=False)
    assert cpu.top[0][0] == cuda.top[0][0] or cpu.top[0][1] - cpu.top[1][1] < 0.02
