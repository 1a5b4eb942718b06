"""Real (tiny) fine-tuning runs on the generated shapes dataset: no mocks, real models."""

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnncompare import compare, data, estimate, models, runfolder, runs, training
from cnncompare.data import placement
from cnncompare.errors import CNNCompareError
from cnncompare.settings import ModelEntry, TrainSettings, settings_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return data.load_dataset("shapes", work_dir=tmp_path_factory.mktemp("data"), shapes_per_class=30, seed=0)


MODEL_FIELDS = {s.name for s in settings_of(ModelEntry)}


def tiny(**kw) -> tuple[ModelEntry, TrainSettings]:
    """(model entry, training settings) of a tiny CPU run, with `kw` changed in whichever they belong to."""
    base = dict(model="resnet18", freeze="head", epochs=1, size=32, batch_size=32, lr=1e-2, device="cpu")
    base.update(kw)
    return (
        ModelEntry(**{k: v for k, v in base.items() if k in MODEL_FIELDS}),
        TrainSettings(**{k: v for k, v in base.items() if k not in MODEL_FIELDS}),
    )


def _strip_times(history):
    return [{k: v for k, v in h.items() if k not in ("images_per_s", "elapsed_s")} for h in history]


@pytest.mark.slow
def test_the_loop_learns_from_scratch(tmp_path):
    ds = data.load_dataset("shapes", work_dir=tmp_path, shapes_per_class=120, seed=1)
    chance = 100 / len(ds.classes)
    cfg = tiny(freeze="none", epochs=4, size=64, lr=1e-3, optimizer="adam")
    result = training.fine_tune(*cfg, ds)
    assert result.final_epoch == 4 and not result.feature_cache
    assert result.history[-1]["train_loss"] < 0.85 * result.history[0]["train_loss"]
    assert result.val_top1 >= 1.8 * chance, result.history


def test_same_seed_same_metrics(shapes):
    cfg = tiny(freeze="stages:3", feature_cache=False, epochs=2)
    a = training.fine_tune(*cfg, shapes)
    b = training.fine_tune(*cfg, shapes)
    assert _strip_times(a.history) == _strip_times(b.history)
    assert a.confusion == b.confusion
    c = training.fine_tune(*tiny(freeze="stages:3", feature_cache=False, epochs=2, seed=1), shapes)
    assert _strip_times(c.history) != _strip_times(a.history)


@pytest.mark.parametrize("name,size", [("resnet18", 32), ("alexnet", 64), ("vgg11", 32), ("googlenet", 32)])
def test_feature_cache_gives_the_same_result_as_the_plain_frozen_path(shapes, name, size):
    # only the classifier trains: everything before it (AlexNet's and VGG's fc6/fc7, GoogLeNet's dropout) runs in
    # inference mode on both paths, and the cache stores the classifier's input
    cached = training.fine_tune(*tiny(model=name, size=size, epochs=2, lr=1e-3), shapes)
    plain = training.fine_tune(*tiny(model=name, size=size, epochs=2, lr=1e-3, feature_cache=False), shapes)
    assert cached.feature_cache and not plain.feature_cache and cached.cached_at == "pre-logits"
    assert cached.trainable_params == plain.trainable_params
    for a, b in zip(cached.history, plain.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)


def test_feature_cache_is_off_with_augmentation(shapes):
    augmented = training.fine_tune(*tiny(augment=True), shapes)
    assert not augmented.feature_cache  # augmentation changes the images, so features cannot be reused


def test_mlp_head_on_vgg_caches_features_before_fc6(shapes):
    r = training.fine_tune(*tiny(model="vgg11", head="mlp", optimizer="sgd"), shapes)
    assert r.feature_cache and r.cached_at == "features" and r.val_top1 is not None
    assert r.trainable_params == 512 * 49 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 8 + 8


@pytest.mark.parametrize("optimizer", training.OPTIMIZERS)
def test_every_optimizer_trains(shapes, optimizer):
    lr = 0.05 if optimizer in ("sgd", "momentum") else 1e-3
    r = training.fine_tune(*tiny(optimizer=optimizer, lr=lr, epochs=3, schedule="none"), shapes)
    assert r.final_epoch == 3 and r.history[2]["train_loss"] < r.history[0]["train_loss"]


def test_a_last_batch_of_one_image_is_dropped_not_fatal(shapes):
    assert len(shapes.train) % 191 == 1  # BatchNorm cannot train on a batch of one 1x1 map
    r = training.fine_tune(*tiny(freeze="stages:3", feature_cache=False, batch_size=191), shapes)
    assert r.error is None and r.final_epoch == 1


def test_schedules_warm_up_then_decay():
    _, cfg = tiny(epochs=10, schedule="cosine", warmup_epochs=1)
    f = [training.lr_factor(cfg, s, 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[-1] < 0.01 and all(a >= b for a, b in zip(f[10:], f[11:]))
    _, step = tiny(epochs=9, schedule="step")
    assert [training.lr_factor(step, e * 10, 10) for e in (0, 3, 6)] == pytest.approx([1, 0.1, 0.01])


def test_stop_flag_ends_within_one_step_and_keeps_finished_work(shapes, tmp_path):
    store = runs.RunStore(tmp_path, "resnet18")
    steps_after_stop = []
    state = {"stop": False}

    def on_event(ev):
        if state["stop"] and ev.kind == "step":
            steps_after_stop.append(ev)
        if ev.kind == "epoch" and ev.epoch == 1:
            state["stop"] = True  # ask to stop as soon as the first epoch is done

    r = training.fine_tune(
        *tiny(epochs=5, feature_cache=False, batch_size=16),
        shapes,
        on_event=on_event,
        should_stop=lambda: state["stop"],
        store=store,
    )
    assert r.stopped == "stopped by user" and r.final_epoch == 1 and len(steps_after_stop) == 0
    rows = list(csv.DictReader((store.path / "metrics.csv").open()))
    assert [int(row["epoch"]) for row in rows] == [1]
    saved = json.loads((store.path / "results.json").read_text())
    assert saved["stopped"] == "stopped by user" and saved["val_top1"] == pytest.approx(r.val_top1)
    assert (store.path / "weights.safetensors").is_file()


def test_a_mid_epoch_stop_keeps_the_weights_of_the_last_finished_epoch(shapes, tmp_path):
    store = runs.RunStore(tmp_path, "resnet18")
    state = {"steps": 0}

    def stop():
        return state["steps"] >= 15  # epoch 1 has 12 steps of 16: stop in epoch 2

    def count(ev):
        state["steps"] += ev.kind == "step"

    r = training.fine_tune(
        *tiny(freeze="stages:2", epochs=3, feature_cache=False, batch_size=16),
        shapes,
        on_event=count,
        should_stop=stop,
        store=store,
    )
    assert r.stopped == "stopped by user" and r.final_epoch == 1 and state["steps"] == 15
    model = runs.load_run(store.path).load_model()
    x, y = placement.cached_tensors(shapes.val, 32, "bilinear")
    assert _accuracy(model, x, y) == pytest.approx(r.history[0]["val_top1"], abs=1e-4)


def _accuracy(model, x, y, size: int = 32) -> float:
    from cnncompare import models

    cfg = models.data_config(model, size)
    norm = training.Normalizer(cfg["mean"], cfg["std"])
    with torch.no_grad():
        return 100 * (model(training.model_inputs(x, norm, size)).argmax(1) == y).float().mean().item()


def test_closing_the_event_stream_stops_the_run_and_saves(shapes, tmp_path):
    store = runs.RunStore(tmp_path, "resnet18")
    gen = training.run(*tiny(epochs=5, feature_cache=False, batch_size=16), shapes, store=store)
    for ev in gen:
        if ev.kind == "step" and ev.step == 2:
            break
    gen.close()  # what gradio does on Stop or when the tab closes
    saved = json.loads((store.path / "results.json").read_text())
    assert saved["stopped"] == "stopped by user" and saved["final_epoch"] == 0
    assert not (store.path / "weights.safetensors").exists()  # no finished epoch, no weights to trust


def test_time_budget_stops_the_run(shapes):
    r = training.fine_tune(*tiny(epochs=50, feature_cache=False, time_budget_s=1.0), shapes)
    assert r.stopped == "time budget" and r.final_epoch < 50


def test_compare_reports_a_failing_model_and_runs_the_others(shapes, tmp_path):
    entry, settings = tiny(size=48)
    plan = compare.Plan.parse("alexnet, resnet18@stages:4", model_defaults=entry, settings=settings)
    labels = []
    results = compare.run_comparison(plan, shapes, out_dir=tmp_path, on_event=lambda ev: labels.append(ev.label))
    rows = compare.table_rows(results)
    assert "at least 63" in rows[0]["error"] and rows[0]["run_dir"] is None
    assert rows[1]["error"] is None and rows[1]["freeze"] == "stages:4" and rows[1]["val_top1"] is not None
    assert rows[1]["macs"] > 0 and rows[1]["latency_ms"] > 0
    assert set(labels) == {"alexnet@head", "resnet18@stages:4"}  # every event names its run
    saved = runs.list_runs(tmp_path)
    assert [s.name for s in saved] == ["resnet18"]


def test_an_entry_carries_its_own_policy_and_settings():
    e = compare.Entry.parse("resnet18@none optimizer=sgd lr=0.05 init=he")
    entry, settings = e.resolve(*tiny(freeze="head", optimizer="adam"))
    assert (entry.model, entry.freeze, entry.init, settings.optimizer, settings.lr) == (
        "resnet18",
        "none",
        "he",
        "sgd",
        0.05,
    )
    assert e.label("head") == "resnet18@none optimizer=sgd lr=0.05 init=he"
    assert compare.Entry.parse("vgg11").resolve(*tiny(freeze="stages:1"))[0].freeze == "stages:1"
    for bad, msg in [
        ("resnet18 momentum=1", "per-run setting"),
        ("resnet18 lr=1e30", "at most 10"),
        ("resnet18 optimizer=lbfgs", "not one of"),
        ("resnet18 lr=fast", "not a number"),
        ("resnet18 epochs=2.5", "whole number"),
        ("resnet18 lr=nan", "finite"),
    ]:
        with pytest.raises(CNNCompareError, match=msg):
            compare.Entry.parse(bad)


def test_a_plan_gives_every_run_a_unique_label_and_checks_limits():
    plan = compare.Plan.parse(
        "resnet18@head\nresnet18\nresnet18@none lr=0.01, vgg11", limits=compare.Limits(max_runs=4)
    )
    assert [r.label for r in plan.runs()] == [
        "resnet18@head",
        "resnet18@head #2",
        "resnet18@none lr=0.01",
        "vgg11@head",
    ]
    with pytest.raises(CNNCompareError, match="At most 2 runs"):
        compare.Plan.parse("resnet18, vgg11, alexnet", limits=compare.Limits(max_runs=2))
    with pytest.raises(CNNCompareError, match="resnet"):  # unknown names fail before anything runs
        compare.Plan.parse("resnett18")
    with pytest.raises(CNNCompareError, match="at least one model"):
        compare.Plan.parse(" , ")


@pytest.fixture
def offline(monkeypatch):
    from cnncompare.models import builder as build

    monkeypatch.setenv("CNNCOMPARE_OFFLINE", "1")
    monkeypatch.setattr(build, "_WEIGHTS_OK", {})
    return build


def test_missing_weights_fall_back_to_random_with_the_reason_recorded(shapes, tmp_path, offline):
    entry, settings = tiny(pretrained=True)
    plan = compare.Plan.parse("resnet18@head, resnet18@none", model_defaults=entry, settings=settings)
    events = []
    result, scratch = compare.run_comparison(plan, shapes, out_dir=tmp_path, on_event=events.append)
    assert result.error is None and result.final_epoch == 1
    assert "random weights" in result.warnings[0] and result.weights_source.startswith("random")
    assert "frozen backbone" in result.warnings[0]
    # nothing frozen: the note says it trains from scratch, not that a frozen backbone is random
    assert "trains from scratch" in scratch.warnings[0] and "frozen" not in scratch.warnings[0]
    assert any(ev.kind == "info" and "random weights" in ev.message for ev in events)
    failing = compare.Plan.parse("resnet18@head", model_defaults=entry, settings=settings, missing_weights="fail")
    [failed] = compare.run_comparison(failing, shapes, out_dir=tmp_path)
    assert "No pretrained ImageNet weights" in failed.error and failed.run_dir is None


def test_export_writes_labelled_tables_and_a_whole_zip(shapes, tmp_path):
    import zipfile

    entry, settings = tiny()
    plan = compare.Plan.parse("resnet18@head lr=0.02, resnet18@stages:4", model_defaults=entry, settings=settings)
    results = compare.run_comparison(plan, shapes, out_dir=tmp_path / "runs")
    csv_path, json_path, zip_path = compare.export(results, tmp_path / "export")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["run"] for r in rows] == ["resnet18@head lr=0.02", "resnet18@stages:4"]
    assert rows[0]["lr"] == "0.02" and rows[1]["lr"] == "0.01"
    text = csv_path.read_text() + json_path.read_text()
    assert str(tmp_path) not in text  # no absolute server paths in what a visitor downloads
    names = zipfile.ZipFile(zip_path).namelist()
    for r in results:
        folder = r.run_dir.split("/")[-1]
        assert f"{folder}/weights.safetensors" in names and f"{folder}/config.json" in names
    assert not list((tmp_path / "export").glob("*.tmp"))


def test_a_diverging_run_is_reported_not_saved_as_normal(shapes, tmp_path):
    store = runs.RunStore(tmp_path, "alexnet")
    r = training.fine_tune(
        *tiny(
            model="alexnet",
            size=64,
            freeze="none",
            feature_cache=False,
            lr=10,
            optimizer="momentum",
            schedule="none",
            epochs=2,
            batch_size=16,
        ),
        shapes,
        store=store,
    )
    assert r.error and "diverged" in r.error and "lower the learning rate" in r.error and r.final_epoch == 0

    def no_bare_constants(name):
        raise AssertionError(f"bare {name} in results.json")

    json.loads((store.path / "results.json").read_text(), parse_constant=no_bare_constants)


@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_a_saved_run_reloads_and_predicts_like_the_trained_model(shapes, tmp_path, name):
    kw = dict(model=name, freeze="stages:2", feature_cache=False)
    if name == "googlenet":  # "pretrained" from a local file: GoogLeNet then rescales its inputs itself
        import torchvision

        tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
        torch.save(tv.state_dict(), tmp_path / "googlenet.pth")
        kw.update(pretrained=True, weights_file=str(tmp_path / "googlenet.pth"))
    store = runs.RunStore(tmp_path, name)
    result = training.fine_tune(*tiny(**kw), shapes, store=store)
    saved = runs.load_run(result.run_dir)
    model = saved.load_model()
    assert saved.classes == shapes.classes
    from safetensors import safe_open

    with safe_open(str(store.path / "weights.safetensors"), "pt") as f:
        kind, keys = f.metadata()["cnncompare"], set(f.keys())
    # random frozen layers come back from the seed, so only the trained ones are stored; a weights file may
    # go away, so a run started from one stores everything
    assert kind == ("full" if name == "googlenet" else "trained-only")
    assert (kind == "full") == any(k.startswith("conv1.") and k.endswith("weight") for k in keys)
    assert getattr(model, "transform_input", False) == (name == "googlenet")
    x, y = placement.cached_tensors(shapes.val, 32, "bilinear")
    assert _accuracy(model, x, y) == pytest.approx(result.val_top1, abs=1e-4)


def test_estimate_before_a_run(shapes):
    plain = estimate.estimate(*tiny(freeze="none"), len(shapes.train), len(shapes.val), len(shapes.classes))
    cached = estimate.estimate(*tiny(), len(shapes.train), len(shapes.val), len(shapes.classes))
    assert plain.total_s > 0 and cached.total_s > 0
    assert cached.feature_cache and not plain.feature_cache
    for e in (plain, cached):  # every part of the run's wall time is counted, and only those
        epochs = e.total_s - e.build_s - e.features_s - e.finish_s
        assert epochs == pytest.approx(e.seconds_per_epoch * 1) and min(e.build_s, e.finish_s) > 0
    assert cached.features_s > 0 and plain.features_s == 0 and "frozen part run once" in cached.note


def test_estimate_of_a_frozen_vgg_counts_fc6_and_fc7_once(shapes):
    # VGG16@head: the frozen fc6/fc7 run once with the rest of the frozen part, so an epoch is the classifier's
    from cnncompare import models

    entry, settings = tiny(model="vgg16", epochs=5)
    model = models.build_frozen(entry, len(shapes.classes), settings.size, device="meta")
    assert training.cache_point(model, settings) == "pre-logits"
    assert training.classifier_only(model) is model.get_submodule("head.fc")  # fc6/fc7 are in the frozen part
    n = (len(shapes.train), len(shapes.val), len(shapes.classes))
    one = estimate.estimate(entry, dataclasses.replace(settings, epochs=1), *n)
    five = estimate.estimate(entry, settings, *n)
    assert five.feature_cache and five.features_s == one.features_s > 0  # the frozen part is counted once
    assert five.total_s - one.total_s == pytest.approx(4 * five.seconds_per_epoch)  # epochs add the classifier


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(optimizer="lbfgs"), "Optimizer"),
        (dict(epochs=0), "Epochs"),
        (dict(model="inception_v3", size=32), "at least 75"),
        (dict(freeze="stages:x"), "freeze policy"),
        (dict(lr=0), "Learning rate"),
    ],
)
def test_bad_settings_are_clear_errors(kw, msg):
    with pytest.raises(CNNCompareError, match=msg):
        entry, settings = tiny(**kw)  # a bad field fails here, when the settings are made
        models.check_entry(entry, settings.size)  # a model that cannot take the input size, here


def test_cli_finetune_json(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnncompare",
            "finetune",
            "--models",
            "resnet18",
            "alexnet@head",
            "--dataset",
            "shapes",
            "--freeze",
            "head",
            "--epochs",
            "1",
            "--size",
            "40",
            "--json",
            "--out",
            str(tmp_path),
            "--max-per-class",
            "12",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    keys = {
        "name",
        "val_top1",
        "train_time_s",
        "trainable_params",
        "params",
        "macs",
        "latency_ms",
        "run_dir",
        "feature_cache",
        "error",
    }
    assert keys <= set(rows[0]) and rows[0]["name"] == "resnet18" and rows[0]["feature_cache"] is True
    assert rows[0]["error"] is None and 0 <= rows[0]["val_top1"] <= 100
    assert "at least 63" in rows[1]["error"]
    assert (tmp_path / rows[0]["run_dir"] / "weights.safetensors").is_file()


def test_cli_reproduces_a_comparison_with_labels_fallback_and_export(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnncompare",
            "finetune",
            "--models",
            "resnet18@head lr=0.02",
            "resnet18",
            "--pretrained",
            "--epochs",
            "1",
            "--size",
            "32",
            "--max-per-class",
            "10",
            "--out",
            str(tmp_path / "runs"),
            "--export",
            str(tmp_path / "export"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "CNNCOMPARE_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert "resnet18@head lr=0.02" in r.stdout and "resnet18@head" in r.stdout
    assert "random weights" in r.stdout + r.stderr
    rows = list(csv.DictReader((tmp_path / "export" / "results.csv").open()))
    assert [row["run"] for row in rows] == ["resnet18@head lr=0.02", "resnet18@head"]
    assert all("random weights" in row["warnings"] for row in rows)
    assert len(list((tmp_path / "export").glob("cnncompare-runs-*.zip"))) == 1


def test_a_dataset_larger_than_the_memory_budget_streams_with_the_same_result(tmp_path, monkeypatch):
    # image files (not in-memory arrays), so the streamed path decodes them in DataLoader workers
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("circles", "squares", "stars"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(14):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    ds = data.load_dataset(str(tmp_path / "imgs"), work_dir=tmp_path / "work", seed=0)
    cfg = tiny(freeze="stages:3", feature_cache=False, epochs=2, batch_size=8)
    in_memory = training.fine_tune(*cfg, ds)
    placement.release_data()
    monkeypatch.setenv("CNNCOMPARE_MAX_DECODED_MB", "0")  # nothing fits: stream from the files
    events = []
    streamed = training.fine_tune(*cfg, ds, on_event=events.append)
    assert any("batch by batch" in ev.message for ev in events)
    assert _strip_times(streamed.history) == _strip_times(in_memory.history)
    assert streamed.confusion == in_memory.confusion


def _run_histories(folder) -> dict:
    out = {}
    for f in sorted(folder.glob("*/results.json")):
        r = json.loads(f.read_text())
        out[r["label"]] = r["history"]
    return out


@pytest.mark.slow
def test_torchrun_with_two_processes_matches_one_process_of_the_same_global_batch(tmp_path):
    import os
    import shutil

    args = [
        "-m",
        "cnncompare",
        "finetune",
        "--models",
        "resnet18@stages:4",
        "resnet18@stages:3 feature_cache=false",
        "--epochs",
        "2",
        "--size",
        "32",
        "--batch",
        "16",
        "--lr",
        "0.01",
        "--max-per-class",
        "20",
        "--device",
        "cpu",
        "--json",
    ]
    env = {**os.environ, "CNNCOMPARE_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    two = subprocess.run(
        [torchrun, "--nproc-per-node", "2", *args, "--out", str(tmp_path / "two")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run(
        [sys.executable, *args, "--out", str(tmp_path / "one")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    assert len(json.loads(two.stdout)) == 2  # rank 0 alone prints the table
    assert len(list((tmp_path / "two").iterdir())) == 2  # ... and writes the runs
    a, b = _run_histories(tmp_path / "two"), _run_histories(tmp_path / "one")
    assert set(a) == set(b) == {"resnet18@stages:4", "resnet18@stages:3 feature_cache=false"}
    for x, y in zip(a["resnet18@stages:4"], b["resnet18@stages:4"]):  # head only: the same arithmetic
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["val_top1"] == pytest.approx(y["val_top1"], abs=1e-6)
    # stage 4's BatchNorm normalises each process's half batch, as DistributedDataParallel does: close, not equal
    for x, y in zip(a["resnet18@stages:3 feature_cache=false"], b["resnet18@stages:3 feature_cache=false"]):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=0.15)


def test_prune_removes_expired_then_oldest_runs_and_keeps_a_run_in_progress(shapes, tmp_path):
    import os
    import time

    root = tmp_path / "visitors" / "abc"
    done = [training.fine_tune(*tiny(), shapes, store=runs.RunStore(root, "resnet18")).run_dir for _ in range(3)]
    in_progress = runs.RunStore(root, "resnet18")
    in_progress.start({"model": "resnet18"}, shapes, training.RunResult("resnet18", {}, shapes.classes))
    (root / "x.safetensors.tmp").write_bytes(b"half")
    assert runfolder.clean_tmp(tmp_path) == 1
    old = time.time() - 3 * 86400
    os.utime(f"{done[0]}/config.json", (old, old))
    removed = runfolder.prune(tmp_path, max_age_s=86400)
    assert [str(p) for p in removed] == [done[0]]
    size = runfolder.folder_bytes(done[2]) + runfolder.folder_bytes(in_progress.path)
    removed = runfolder.prune(tmp_path, max_bytes=size)  # room for the newest finished run and the one in progress
    assert [str(p) for p in removed] == [done[1]]
    assert in_progress.path.is_dir() and runs.load_run(done[2]).load_model() is not None


def test_a_shared_gpu_request_is_sized_from_the_plan_and_refused_when_it_cannot_fit():
    small = compare.Plan.parse("alexnet@head, resnet50@none", settings=TrainSettings(epochs=3, size=224))
    need = estimate.gpu_seconds(small, 2000, 500, 10)
    assert need > 2 * estimate.GPU_RUN_OVERHEAD_S  # two runs, each with real work
    assert estimate.gpu_duration(small, 2000, 500, 10, limit_s=300) == int(max(30, 1.25 * need))
    more_epochs = compare.Plan.parse("alexnet@head, resnet50@none", settings=TrainSettings(epochs=6, size=224))
    assert estimate.gpu_seconds(more_epochs, 2000, 500, 10) > need  # the full run scales with epochs
    # 'Head' is head: a frozen backbone pays its forward pass once, whatever the spelling
    head = compare.Plan.parse("resnet50@Head", settings=TrainSettings(epochs=6, size=224))
    full = compare.Plan.parse("resnet50@none", settings=TrainSettings(epochs=6, size=224))
    work = lambda plan: estimate.gpu_seconds(plan, 2000, 500, 10) - estimate.GPU_RUN_OVERHEAD_S  # noqa: E731
    assert work(head) < work(full) / 5
    big = compare.Plan.parse("vgg16@none, vgg19@none", settings=TrainSettings(epochs=50, size=224))
    with pytest.raises(CNNCompareError, match="fewer epochs"):
        estimate.gpu_duration(big, 50_000, 10_000, 10, limit_s=300)


def test_decoded_images_are_released_when_a_comparison_ends(shapes, tmp_path):
    plan = compare.Plan.parse("resnet18@head", model_defaults=tiny()[0], settings=tiny()[1])
    compare.run_comparison(plan, shapes, out_dir=tmp_path)
    assert placement._TENSOR_CACHE == {}  # a module-level cache once kept 8.66 GB after the run


def test_epoch_events_carry_steady_state_speed_and_warm_up_apart(shapes):
    events = []
    r = training.fine_tune(*tiny(freeze="stages:3", feature_cache=False, batch_size=16), shapes, on_event=events.append)
    [epoch] = [ev for ev in events if ev.kind == "epoch"]
    assert epoch.warmup_s == r.warmup_s and epoch.warmup_s > 0
    assert epoch.images_per_s == pytest.approx(r.images_per_s)


def test_a_freeze_depth_sweep_is_recognised_and_charted(shapes):
    plan = compare.Plan.parse(
        "resnet18@none, resnet18@stages:2, resnet18@head", model_defaults=tiny()[0], settings=tiny()[1]
    )
    results = compare.run_comparison(plan, shapes)
    rows = compare.freeze_sweep_rows(results)
    assert [r["freeze"] for r in rows] == ["none", "stages:2", "head"]
    trainable = [r["trainable"] for r in rows]
    assert trainable == sorted(trainable, reverse=True) and trainable == [r.trainable_params for r in results]
    assert all(0 <= r["val_acc"] <= 1 and r["train_s"] > 0 for r in rows)
    from cnncompare import plots

    fig = plots.freeze_sweep(rows)
    # each point is labelled with its freeze policy (an annotation placed beside the bubble)
    assert [a for a in fig.layout.annotations if "stages:2" in str(a.text)]
    # two models, or a setting that differs besides the freeze policy, is not a sweep
    other = compare.Plan.parse(
        "resnet18@none, resnet18@stages:2 lr=0.05, resnet18@head", model_defaults=tiny()[0], settings=tiny()[1]
    )
    assert compare.freeze_sweep_rows(compare.run_comparison(other, shapes)) is None
    assert compare.freeze_sweep_rows(results[:2]) is None


def test_a_visitors_weights_file_is_used_and_never_shown_as_a_path(shapes, tmp_path):
    from safetensors.torch import save_file

    from cnncompare import models

    source = models.build(models.ModelSpec("resnet18", num_classes=1000))
    path = tmp_path / "secret-folder" / "resnet18.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    entry, settings = tiny(pretrained=True)
    plan = compare.Plan.parse("resnet18@head, resnet18@none", model_defaults=entry, settings=settings)
    plan.weights_files = {"resnet18": str(path)}
    assert all(r.entry.weights_file == str(path) for r in plan.runs())
    results = compare.run_comparison(plan, shapes, out_dir=tmp_path / "runs")
    assert [r.label for r in results] == ["resnet18@head", "resnet18@none"]
    for r in results:
        assert r.error is None and not r.warnings  # the file, not random weights: no fallback note
        assert r.config["weights_file"] == "resnet18.safetensors"
        saved = json.loads((Path(r.run_dir) / "config.json").read_text())
        assert "secret-folder" not in json.dumps(saved) and "secret-folder" not in r.weights_source
