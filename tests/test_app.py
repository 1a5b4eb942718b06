"""The Gradio app, driven through its named API endpoints with gradio_client (real engine, no mocks)."""

from __future__ import annotations

import csv
import json
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from cnncompare import data, inference, models, profiling  # noqa: E402
from tests.support import TINY_FORM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAR = ROOT / "assets" / "examples" / "star.jpg"
TINY = {**TINY_FORM, "size": 48, "pretrained": True}


@pytest.fixture(scope="module")
def app(launched_app):
    return launched_app


def _client(app) -> Client:
    return Client(app.url, analytics_enabled=False, verbose=False)


@pytest.fixture(scope="module")
def client(app):
    return _client(app)


def runs_of(app, client: Client) -> Path:
    """The runs folder of a client that sends no visitor key: one visitor per gradio session."""
    from cnncompare.server.visitors import folder_id

    return app.runs / "visitors" / folder_id(f"session:{client.session_hash}")


def rows_of(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def plot_of(value: dict) -> dict:
    assert value["type"] == "plotly"
    return json.loads(value["plot"])


def _picture(path: Path) -> Path:
    img = Image.new("RGB", (160, 120), (30, 90, 200))
    ImageDraw.Draw(img).ellipse((40, 20, 120, 100), fill=(250, 200, 40))
    img.save(path)
    return path


# --------------------------------------------------------------------------- the Fine-tune form


@pytest.fixture(scope="module")
def ft_form(tmp_path_factory):
    """The Fine-tune tab built for real (gradio components, no server): its form, name -> component."""
    import gradio as gr

    from cnncompare.ui import finetune
    from cnncompare.ui.common import Context

    with gr.Blocks():
        ft = finetune.build(Context.from_env(tmp_path_factory.mktemp("form-runs")))
    return ft.form


def test_finetune_form_widgets_carry_the_schema(ft_form):
    import gradio as gr

    from cnncompare.settings import ModelEntry, TrainSettings, settings_of

    schema = {s.name: s for cls in (ModelEntry, TrainSettings) for s in settings_of(cls)}
    shown = [name for name in ft_form if name in schema]
    assert shown == [
        "freeze",
        "optimizer",
        "lr",
        "epochs",
        "schedule",
        "warmup_epochs",
        "batch_size",
        "size",
        "pretrained",
        "augment",
        "init",
        "head",
        "time_budget_s",
    ]  # the page's order; the schedule and warm-up beside the learning-rate curve they draw
    for name in shown:
        s, comp = schema[name], ft_form[name]
        if name == "freeze":  # free text with suggestions, labelled as the default for models without @
            assert isinstance(comp, gr.Dropdown) and comp.allow_custom_value and comp.value == s.default
            assert "head" in [c[1] for c in comp.choices]
            continue
        if name == "pretrained":  # the one page default that differs from the CLI's: start from ImageNet
            assert isinstance(comp, gr.Checkbox) and comp.value is True and comp.label == s.label
            continue
        assert comp.label == s.label and comp.info and s.help in comp.info, name
        if s.choices:
            assert isinstance(comp, gr.Dropdown) and [c[1] for c in comp.choices] == list(s.choices)
            assert comp.value == s.default
        elif s.kind is bool:
            assert isinstance(comp, gr.Checkbox) and comp.value == s.default
        else:
            assert isinstance(comp, gr.Number)
            assert comp.precision == (0 if s.kind is int else None), name
            assert (comp.minimum, comp.maximum) == (s.low, s.high), name
            assert comp.value == (0 if s.default is None else s.default), name
    assert ft_form["time_budget_s"].value == 0 and "0 = none" in ft_form["time_budget_s"].info
    assert ft_form["batch_size"].value == 0 and "auto" in ft_form["batch_size"].info
    # the page's own fields stay page fields
    assert isinstance(ft_form["dataset"], gr.Radio) and isinstance(ft_form["zip_file"], gr.File)
    assert isinstance(ft_form["models"], gr.Textbox) and ft_form["max_per_class"].minimum == 0


def test_form_values_read_back_through_the_schema(ft_form):
    from cnncompare.errors import CNNCompareError
    from cnncompare.settings import TrainSettings
    from cnncompare.ui import forms

    start = forms.values_of(ft_form)
    # keyed by component (a set of components as inputs) or by name (inputs_kwargs): the same settings
    entry, settings = forms.read_form({comp: start[name] for name, comp in ft_form.items()}, ft_form)
    assert (entry, settings) == forms.read_form(start)
    assert settings == TrainSettings() and entry.pretrained is True and entry.freeze == "head"
    assert settings.time_budget_s is None  # 0 = none
    entry, settings = forms.read_form({**start, "epochs": "7", "lr": 0.01, "time_budget_s": 30, "freeze": "stages:2"})
    assert (settings.epochs, settings.lr, settings.time_budget_s, entry.freeze) == (7, 0.01, 30.0, "stages:2")
    for bad, words in (
        (dict(epochs=2.5), "whole number"),
        (dict(lr=float("nan")), "finite"),
        (dict(size=8), "Input size"),
        (dict(optimizer="lbfgs"), "not one of"),
    ):
        with pytest.raises(CNNCompareError, match=words):
            forms.read_form({**start, **bad})


def test_learn_presets_fill_the_finetune_form(ft_form):
    from cnncompare.ui import learn

    for preset in learn.PRESETS:
        out = learn.apply_preset(preset.key, ft_form)
        by_name = {name: out[comp] for name, comp in ft_form.items() if comp in out}
        assert set(by_name) == set(ft_form) - {"zip_file"}  # every field but the visitor's upload
        assert {k: by_name[k] for k in preset.form()} == preset.form()
        untouched = set(ft_form) - set(preset.form()) - {"zip_file"}
        assert all(by_name[k] == ft_form[k].value for k in untouched)  # the form's starting values
    # the optimizer preset leaves the batch size to the schema's default (0 = auto)
    out = learn.apply_preset("optimizers", ft_form)
    assert out[ft_form["batch_size"]] == 0 and out[ft_form["dataset"]] == "shapes"


# --------------------------------------------------------------------------- /profile and /blocks


def test_profile_counts_match_the_engine(client):
    note, table, acc, lat, stages, rank, rank_note = client.predict(
        ["resnet18", "alexnet"], 224, False, api_name="/profile"
    )
    rows = {r["model"]: r for r in rows_of(table)}
    assert list(rows) == ["resnet18", "alexnet"]
    for name, row in rows.items():
        p = profiling.profile(name, 224, latency=False)
        assert row["params"] == pytest.approx(p.params / 1e6, abs=0.006)
        assert row["MACs"] == pytest.approx(p.macs / 1e9, abs=6e-4)
        assert row["FLOPs"] == pytest.approx(2 * p.macs / 1e9, abs=6e-4)
        assert row["top-1"] == pytest.approx(p.ref_top1, abs=0.006)
        assert row["latency"] is None
    # the published numbers (torchvision: 61.1 M parameters, 0.714 GMACs for AlexNet)
    assert rows["alexnet"]["params"] == 61.1 and rows["alexnet"]["MACs"] == 0.714
    assert "counting only" in note
    assert [t["name"] for t in plot_of(acc)["data"]] == ["resnet18", "alexnet"]
    assert "not measured" in json.dumps(plot_of(lat))
    stage_names = [t["name"] for t in plot_of(stages)["data"]]
    assert stage_names[0] == "stem" and "pre-logits" in stage_names and stage_names[-1] == "head"
    # the ranking comes with the answer, from the profiles (not read back from the rounded table)
    ranked = json.dumps(plot_of(rank))
    assert "resnet18" in ranked and "alexnet" in ranked and "Measure latency" in rank_note


def test_profile_measures_latency_at_a_tiny_size(client):
    note, table, _, lat, *_ = client.predict(["resnet18"], 32, True, api_name="/profile")
    (row,) = rows_of(table)
    assert row["px"] == 32
    assert 0 < row["latency"] <= row["p90"]
    assert row["img/s"] > 0
    assert "cpu" in note or "cuda" in note
    assert plot_of(lat)["data"][0]["y"][0] == pytest.approx(row["latency"], abs=0.051)
    assert re.search(r"resnet18 measured at \d\d:\d\d:\d\d UTC", note), note
    # asked again (by anyone): the same figure, reused rather than measured again
    note2, table2, *_ = client.predict(["resnet18"], 32, True, api_name="/profile")
    assert rows_of(table2)[0]["latency"] == row["latency"] and "resnet18 reused, measured at" in note2


def test_blocks_show_what_a_freeze_policy_freezes(client):
    md, table = client.predict(["vgg16"], 224, "layers:10", api_name="/blocks")
    rows = rows_of(table)
    state = {r["block"]: r["state"] for r in rows}
    assert state == {
        "stem": "frozen",
        "stage1": "frozen",
        "stage2": "frozen",
        "stage3": "frozen",
        "stage4": "trains",
        "pre-logits": "trains",
        "head": "trains",
    }
    model = models.build("vgg16", device="meta")
    models.freeze(model, "layers:10", 224)
    total, trainable = models.count_params(model)
    assert sum(r["trainable"] for r in rows) == trainable
    assert sum(r["params"] for r in rows) == total
    assert f"{trainable / 1e6:.2f} M of {total / 1e6:.2f} M" in md
    assert next(r for r in rows if r["block"] == "stage4")["output (C×H×W)"] == "512×14×14"


def test_a_policy_that_does_not_fit_gets_the_same_sentence_from_the_cli_and_the_app(client, capsys):
    """AlexNet has three stages: `stages:4` is shown unfrozen with one sentence, the same on the page, in its diagram
    and from `cnncompare blocks` / `cnncompare diagram` (which exit with status 2)."""
    from cnncompare.cli import main

    md, table = client.predict(["alexnet"], 224, "stages:4", api_name="/blocks")
    assert all(r["state"] in ("trains", "–") for r in rows_of(table))  # shown unfrozen
    report = models.freeze_report("alexnet", "stages:4", 224)
    assert report.problem and report.summary() in md
    assert main(["blocks", "alexnet", "--size", "224", "--freeze", "stages:4"]) == 2
    out = capsys.readouterr()
    assert "frozen" not in out.out.split("freeze=")[0] and report.summary() in out.err
    assert main(["diagram", "alexnet", "--size", "224", "--freeze", "stages:4"]) == 2
    assert f"Not frozen as asked: {report.summary()}" in capsys.readouterr().err
    fig = client.predict(["alexnet"], "224", "stages:4", api_name="/diagram")
    assert f"Not frozen as asked: {report.summary()}" in json.dumps(fig)


# --------------------------------------------------------------------------- /predict


def test_predict_a_generated_image(client, tmp_path):
    note, table, gallery, details = client.predict(
        handle_file(str(_picture(tmp_path / "sun.png"))), ["resnet18"], [], True, api_name="/predict"
    )
    (d,) = details
    assert d["model"] == "resnet18"
    probs = [t["prob"] for t in d["top"]]
    assert len(probs) == 5 and all(0 <= p <= 1 for p in probs)
    assert sum(probs) <= 1 + 1e-6 and probs == sorted(probs, reverse=True)
    assert all(t["label"] in inference.imagenet_labels() for t in d["top"])
    assert d["time_ms"] > 0
    if d["weights"] == "random weights":  # offline (the tests' default): the page must say so
        assert "random weights" in note and "meaningless" in note
    rows = rows_of(table)
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5", "time (ms)", "weights"]
    assert rows[0]["resnet18"].startswith(d["top"][0]["label"] + " — ")
    assert float(rows[5]["resnet18"]) == pytest.approx(d["time_ms"], abs=0.06)
    assert len(gallery) == 1 and gallery[0]["caption"].startswith("resnet18: ")
    assert Image.open(gallery[0]["image"]).size == (224, 224)  # Grad-CAM overlay at the input size


# --------------------------------------------------------------------------- /finetune


def test_finetune_tiny_run_then_predict_with_it(client, app):
    status, progress, curves, table, confusion, acc_lat, files = client.predict(
        **{**TINY, "models": "resnet18@head, alexnet@head"}, api_name="/finetune"
    )
    rows = rows_of(table)
    assert [r["run"] for r in rows] == ["resnet18@head", "alexnet@head"]
    r18, alex = rows
    assert r18["epochs"] == 1 and 0 <= r18["top-1 %"] <= 100
    assert r18["trainable params"] == 512 * 8 + 8  # only the new linear head trains
    assert r18["cache"] == "yes" and r18["latency ms"] > 0
    # AlexNet cannot take 48 px: the status says so (the page's note under the table too), the other run finished
    assert "alexnet@head**: failed" in status and "at least 63" in status
    assert alex["epochs"] == 0 and alex["top-1 %"] is None
    assert "Done: 1 of 2 runs trained, 1 failed" in status
    # Stop after the run ended: nothing to stop, and the finished run's status (its reading) stays as it was
    assert client.predict(api_name="/stop") == status
    if r18["start"] == "random init":  # offline: a warning, not a failure: the run trained, the status says why
        assert "random weights" in status and "resnet18@head**: failed" not in status
    assert "100 %" in progress
    curve = plot_of(curves)["data"]
    assert curve[0]["name"] == "resnet18@head" and curve[0]["x"] == [1]
    heat = plot_of(confusion)["data"]
    assert len(heat) == 1 and heat[0]["x"] == list(data.SHAPE_CLASSES)
    assert sum(map(sum, heat[0]["z"])) == 16  # 2 validation images x 8 classes
    # downloads: results as CSV and JSON, and a zip of the run folders with their weights
    paths = [Path(f) for f in files]
    assert [p.name for p in paths][:2] == ["results.csv", "results.json"] and paths[2].suffix == ".zip"
    with paths[0].open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["run"] for r in csv_rows] == ["resnet18@head", "alexnet@head"]
    assert float(csv_rows[0]["val_top1"]) == pytest.approx(r18["top-1 %"], abs=0.06)
    assert json.loads(paths[1].read_text())[0]["classes"] == list(data.SHAPE_CLASSES)
    with zipfile.ZipFile(paths[2]) as zf:
        assert f"{r18['folder']}/weights.safetensors" in zf.namelist()
    run_dir = runs_of(app, client) / r18["folder"]  # the client's own folder
    assert (run_dir / "results.json").is_file() and (run_dir / "weights.safetensors").is_file()

    # the fine-tuned run predicts with its own classes
    note, table, gallery, details = client.predict(
        handle_file(str(STAR)), [], [r18["folder"]], True, api_name="/predict"
    )
    (d,) = details
    assert d["weights"].startswith("fine-tuned")
    assert {t["label"] for t in d["top"]} <= set(data.SHAPE_CLASSES) and len(d["top"]) == 5
    assert "8 classes" in note


def test_finetune_on_an_uploaded_zip(client, tmp_path):
    archive = tmp_path / "mine.zip"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(archive, "w") as zf:
        for cls, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            for i in range(6):
                arr = np.clip(np.array(colour) + rng.integers(-30, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                path = tmp_path / f"{cls}{i}.png"
                Image.fromarray(arr).save(path)
                zf.write(path, f"mine/{cls}/{i}.png")
    status, *_, table, _, _, files = client.predict(
        **{**TINY, "dataset": "zip", "zip_file": handle_file(str(archive)), "max_per_class": 0, "size": 32},
        api_name="/finetune",
    )
    (row,) = rows_of(table)
    assert row["epochs"] == 1 and row["top-1 %"] is not None
    assert "2 classes" in status and "Done" in status


def test_downloads_name_the_runs_and_hold_no_server_paths(client, app):
    """The CSV/JSON of a comparison (written by the engine's export) carry the run labels, folder names only."""
    models_text = "resnet18@head\nresnet18@head lr=0.01\nresnet18@head"
    status, *_, table, _, _, files = client.predict(
        **{**TINY, "models": models_text, "pretrained": False}, api_name="/finetune"
    )
    labels = ["resnet18@head", "resnet18@head lr=0.01", "resnet18@head #2"]  # unique labels, made by the engine
    assert [r["run"] for r in rows_of(table)] == labels
    paths = [Path(f) for f in files]
    csv_path, json_path, zip_path = paths
    text = csv_path.read_text()
    # each comparison's downloads are copies in a folder of their own, with a random name, in gradio's upload
    # folder: never in (nor served from) the runs folder
    from cnncompare.ui.uploads import upload_folder

    served = [f for f in (upload_folder() / "cnncompare-downloads").glob("v-*/*/results.csv") if f.read_text() == text]
    assert len(served) == 1 and {f.name for f in served[0].parent.iterdir()} == {p.name for p in paths}
    assert len(served[0].parent.name) == 32 and not (app.runs / "_comparisons").exists()
    with csv_path.open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["run"] for r in csv_rows] == labels
    assert [float(r["lr"]) for r in csv_rows] == [1e-3, 0.01, 1e-3]
    assert [r["run_dir"] for r in csv_rows] == [r["folder"] for r in rows_of(table)]
    assert all(r["run_dir"] and "/" not in r["run_dir"] for r in csv_rows)
    for written in (text, json_path.read_text()):
        assert str(app.runs) not in written and str(app.runs.resolve()) not in written
        assert "/tmp" not in written and "/home" not in written and "/root" not in written
    assert [r["label"] for r in json.loads(json_path.read_text())] == labels
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert "results.csv" in names and all(not n.startswith("/") for n in names)


def test_finetune_and_estimate_take_named_parameters(client):
    """The API's parameters are the form's field names (the settings' names), each with the page's default."""
    from cnncompare.settings import TrainSettings, settings_of

    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for endpoint in ("/finetune", "/estimate"):
        params = {p["parameter_name"]: p for p in info[endpoint]["parameters"]}
        # + the caller's key (optional: one visitor per session) and the schedule's fields (optional, added later)
        assert set(params) == set(TINY) | {"visitor", "schedule", "warmup_epochs"}
        assert params["visitor"]["parameter_has_default"] and params["visitor"]["parameter_default"] is None
        # every field has the page's value as its default, except the upload (required, None for no file, as before)
        assert [n for n, p in params.items() if not p["parameter_has_default"]] == ["zip_file"]
        defaults = {s.name: s.default for s in settings_of(TrainSettings)}
        for name in ("optimizer", "lr", "epochs", "batch_size", "size", "augment", "schedule", "warmup_epochs"):
            assert params[name]["parameter_default"] == defaults[name], name
        assert params["time_budget_s"]["parameter_default"] == 0  # None shown as "0 = none"
    # a client may leave out everything but what it changes
    text = client.predict(zip_file=None, models="resnet18@head", max_per_class=4, size=32, api_name="/estimate")
    assert "| resnet18@head |" in text and "at 32 px" in text
    # a bad value gets the schema's one-sentence message
    text = client.predict(zip_file=None, models="resnet18@head", lr=0, api_name="/estimate")
    assert "Learning rate must be above 0" in text


def test_estimate_before_start(client):
    text = client.predict(
        **{**TINY, "models": "resnet18@head\nresnet18@none optimizer=sgd lr=0.05"}, api_name="/estimate"
    )
    assert "| resnet18@head |" in text and "| resnet18@none optimizer=sgd lr=0.05 |" in text
    assert "frozen part run once" in text and "Total: about" in text


# --------------------------------------------------------------------------- serving


def _wait(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_clients_training_does_not_block_profile_and_stops_stay_separate(app):
    a, b = _client(app), _client(app)
    long_run = {
        **TINY,
        "models": "resnet18@none",
        "epochs": 40,
        "max_per_class": 20,
        "batch_size": 8,
        "size": 32,
        "pretrained": False,
    }
    job_a = a.submit(**long_run, api_name="/finetune")
    _wait(lambda: any("step" in str(o[0]) for o in job_a.outputs()), 90, "A's run to start training")

    note, table, *_ = b.predict(["resnet50", "vgg16"], 224, False, api_name="/profile")
    assert [r["model"] for r in rows_of(table)] == ["resnet50", "vgg16"]
    assert not job_a.done(), "the profile call must answer while the fine-tune is still running"

    # B pressing Stop does not touch A's run
    assert b.predict(api_name="/stop") == "Nothing is running."
    time.sleep(1.5)
    assert not job_a.done()
    # B's own fine-tune waits for the machine (one training run at a time), and sees its place in line
    # (its own seed: a run identical to one this server finished would be a copy, with no place in line)
    job_b = b.submit(**{**TINY, "models": "resnet18@head seed=21"}, api_name="/finetune")
    _wait(lambda: any("number 1 in line" in str(o[0]) for o in job_b.outputs()), 20, "B to wait in line")

    assert "Stopping" in a.predict(api_name="/stop")
    out_a = job_a.result(timeout=60)
    (row_a,) = rows_of(out_a[3])
    assert row_a["epochs"] < 40
    assert "Stopped in run 1/1, epoch" in out_a[0] and "stopped in run 1/1" in out_a[1]
    # ... and A's stop did not stop B's waiting run, which now runs to the end
    out_b = job_b.result(timeout=120)
    (row_b,) = rows_of(out_b[3])
    assert "Stopped" not in out_b[0] and row_b["epochs"] == 1


def test_bad_input_gives_a_readable_message_and_the_app_keeps_serving(client, tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a zip")
    with pytest.raises(AppError, match="zip"):  # refused by the upload component itself
        client.predict(**{**TINY, "dataset": "zip", "zip_file": handle_file(str(text_file))}, api_name="/finetune")
    fake_zip = tmp_path / "photos.zip"
    fake_zip.write_text("this is no zip archive")
    status = client.predict(**{**TINY, "dataset": "zip", "zip_file": handle_file(str(fake_zip))}, api_name="/finetune")[
        0
    ]
    assert "not a valid zip" in status
    assert "Upload a .zip" in client.predict(**{**TINY, "dataset": "zip"}, api_name="/finetune")[0]
    assert "CIFAR-10" in client.predict(**{**TINY, "dataset": "cifar10"}, api_name="/finetune")[0]
    assert "Unknown freeze policy" in client.predict(**{**TINY, "models": "resnet18@sideways"}, api_name="/finetune")[0]

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 50)
    note, *_ = client.predict(handle_file(str(broken)), ["resnet18"], [], True, api_name="/predict")
    assert "Could not read the image" in note

    note, table, *_ = client.predict(["alexnet", "resnet18", "resnet5O"], 48, False, api_name="/profile")
    rows = {r["model"]: r for r in rows_of(table)}
    assert "at least 63" in note and rows["alexnet"]["params"] is None
    assert "Did you mean resnet50" in note
    assert rows["resnet18"]["params"] == 11.69
    assert "at least 63" in note

    # still serving
    note, table, *_ = client.predict(["resnet18"], 64, False, api_name="/profile")
    assert rows_of(table)[0]["params"] == 11.69


def test_the_cli_and_the_app_give_the_same_estimate_from_the_same_call(client, tmp_path, monkeypatch, capsys):
    """`estimate.estimate_plan(...).text()` is what both faces show: the app's (timed in a worker process) and the
    CLI's (timed here) are the same text, number for number where the numbers are not timings."""
    from cnncompare.cli import main

    form = {**TINY_FORM, "models": "resnet18@head, resnet18@none"}
    page = client.predict(**form, api_name="/estimate")
    monkeypatch.setenv("CNNCOMPARE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CNNCOMPARE_MAX_RUN_S", "900")
    args = ["finetune", "--dataset", "shapes", "--max-per-class", "8", "--models", "resnet18@head", "resnet18@none"]
    args += ["--epochs", "1", "--size", "32", "--batch", "16", "--optimizer", "adam", "--time-budget", "900"]
    assert main([*args, "--json", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    start, end = page.index("Estimate for"), page.index("±25 % of it.") + len("±25 % of it.")
    shown = page[start:end]
    assert "| resnet18@head | ~" in shown and "| resnet18@none | ~" in shown and "Total: about" in shown
    # measured times differ between two processes, and may cross a unit ("less than 1 s", "under 0.1 s", "1 min 05 s")
    timings = re.compile(r"~?(less than 1 s|under \d+(\.\d+)? s|\d+ min \d+ s|\d+(\.\d+)?\s*(ms|s|min|h)?)")
    if timings.sub("#", shown) not in timings.sub("#", err):  # say which lines differ
        import difflib

        cli = err[err.index("Estimate for") :] if "Estimate for" in err else err
        diff = difflib.unified_diff(shown.splitlines(), cli.splitlines()[: len(shown.splitlines())], lineterm="")
        raise AssertionError("the page's estimate differs from the CLI's:\n" + "\n".join(diff))
