"""Exporting real (tiny) fine-tuned runs: strict loading into timm/torchvision, ONNX checked in onnxruntime."""

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from cnncompare import data, export, runs, training
from cnncompare.errors import CNNCompareError
from cnncompare.settings import ModelEntry, TrainSettings


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return data.load_dataset("shapes", work_dir=tmp_path_factory.mktemp("data"), shapes_per_class=8, shapes_size=32)


def _run(shapes, root: Path, size: int, **entry) -> Path:
    settings = TrainSettings(epochs=1, size=size, batch_size=16, lr=1e-4, device="cpu")
    result = training.fine_tune(ModelEntry(**entry), settings, shapes, store=runs.RunStore(root, entry["model"]))
    assert result.error is None, result.error
    return Path(result.run_dir)


@pytest.fixture(scope="module")
def resnet_run(shapes, tmp_path_factory):
    """A head-only timm run: only the classifier (and the buffers) are stored in the run."""
    return _run(shapes, tmp_path_factory.mktemp("runs"), 32, model="resnet18", freeze="head")


@pytest.fixture(scope="module")
def alexnet_run(shapes, tmp_path_factory):
    """A full run of the torchvision-built AlexNet."""
    return _run(shapes, tmp_path_factory.mktemp("runs"), 64, model="alexnet", freeze="none")


@pytest.fixture(scope="module")
def resnet_export(resnet_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "resnet18"
    return export.export_run(resnet_run, out), out


@pytest.fixture(scope="module")
def alexnet_export(alexnet_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "alexnet"
    return export.export_run(alexnet_run, out, "safetensors,onnx"), out


def _outputs(model, size: int, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return x, model.eval()(x)


def _check_onnx(out: Path, x: torch.Tensor, expected: torch.Tensor) -> None:
    ort = pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install -r requirements-dev.txt)"
    )
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # a dynamic batch axis; the export's example had 2
    got = session.run(None, {"input": x.numpy()})[0]
    assert got.shape == tuple(expected.shape)
    assert np.abs(got - expected.numpy()).max() <= 1e-4


def test_a_head_only_timm_run_loads_strictly_into_timm_with_identical_outputs(resnet_run, resnet_export, shapes):
    import timm

    with safe_open(str(resnet_run / "weights.safetensors"), "pt") as f:
        assert f.metadata()["cnncompare"] == "trained-only"  # the run itself keeps only its classifier
    result, out = resnet_export
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["backend"] == "timm" and cfg["architecture"].split(".")[0] == "resnet18"
    assert cfg["classes"] == shapes.classes and cfg["input_size"] == [3, 32, 32]
    assert len(cfg["mean"]) == len(cfg["std"]) == 3 and cfg["interpolation"] in ("bilinear", "bicubic")
    assert cfg["head"] == {"kind": "linear"} and cfg["cnncompare_version"] == export.__version__
    assert {p.name for p in result.files} == {"model.safetensors", "model.onnx", "config.json", "README.md"}
    assert not list(out.glob("*.tmp")) and not list(out.glob(".onnx-*"))

    sd = load_file(str(out / "model.safetensors"))
    assert any(k.endswith("num_batches_tracked") for k in sd)  # frozen BatchNorm written as plain BatchNorm
    model = timm.create_model(cfg["architecture"], num_classes=len(cfg["classes"]))
    model.load_state_dict(sd, strict=True)
    x, theirs = _outputs(model, 32)
    _, ours = _outputs(runs.load_run(resnet_run).load_model(), 32)
    assert torch.allclose(theirs, ours, rtol=0, atol=1e-6)
    assert result.torch_max_abs_diff <= 1e-6
    _check_onnx(out, x, theirs)
    assert result.onnx_written and result.opset == export.OPSET and result.onnx_max_abs_diff <= 1e-4
    assert cfg["onnx"]["dynamic_batch"] and cfg["onnx"]["checked"]


def test_a_full_torchvision_alexnet_run_loads_strictly_into_torchvision(alexnet_run, alexnet_export, shapes):
    import torchvision

    result, out = alexnet_export
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["backend"], cfg["architecture"], cfg["input_size"]) == ("torchvision", "alexnet", [3, 64, 64])
    model = torchvision.models.alexnet(num_classes=len(cfg["classes"]))
    model.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    x, theirs = _outputs(model, 64)
    _, ours = _outputs(runs.load_run(alexnet_run).load_model(), 64)
    assert torch.equal(theirs, ours)
    _check_onnx(out, x, theirs)
    assert "within" in result.onnx and "onnxruntime" in result.onnx


def test_the_readme_lines_load_and_run_the_export(resnet_export, monkeypatch):
    result, out = resnet_export
    readme, cfg = (out / "README.md").read_text(), json.loads((out / "config.json").read_text())
    # what the README says of the start is true of the run: random weights here, never "fine-tuned" then
    assert ("trained from random weights" in readme) == (not cfg["run"]["pretrained"]) != ("fine-tuned" in readme)
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) == (3 if result.onnx_written else 2)  # timm's Hub loader, PyTorch, ONNX Runtime
    if result.onnx_written:
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -r requirements-dev.txt)")
    work = out.parent / "readme-run"
    work.mkdir()
    for name in ("config.json", "model.safetensors", "model.onnx"):
        (work / name).symlink_to(out / name)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)).save(work / "image.jpg")
    monkeypatch.chdir(work)
    printed = []
    for block in blocks:
        assert len(block.strip().splitlines()) <= 7  # a handful of lines, imports included
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(block, "README.md", "exec"), {})
        printed.append(buf.getvalue().strip())
    classes = json.loads((out / "config.json").read_text())["classes"]
    assert printed[0] in classes and len(set(printed)) == 1  # PyTorch and ONNX Runtime name the same class


def test_load_export_rebuilds_the_model_without_the_run(resnet_export, resnet_run):
    _, out = resnet_export
    model, cfg = export.load_export(out)
    _, theirs = _outputs(model, 32)
    _, ours = _outputs(runs.load_run(resnet_run).load_model(), 32)
    assert torch.allclose(theirs, ours, rtol=0, atol=1e-6) and cfg["num_classes"] == 8


def test_a_model_that_does_not_export_to_onnx_says_why_and_keeps_the_safetensors(alexnet_run, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::frobnicate\nlong trace ...")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    result = export.export_run(alexnet_run, tmp_path)
    assert not result.onnx_written and result.onnx_max_abs_diff is None
    assert "does not export to ONNX" in result.onnx and "aten::frobnicate" in result.onnx and "\n" not in result.onnx
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "model.onnx").exists()
    assert json.loads((tmp_path / "config.json").read_text())["onnx"] is None
    assert "onnxruntime" not in (tmp_path / "README.md").read_text().split("ONNX:")[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_missing_optional_packages_are_named(alexnet_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_have", lambda module: module not in ("onnxscript",))
    result = export.export_run(alexnet_run, tmp_path / "a", ["onnx", "safetensors"])
    assert "onnxscript" in result.onnx and "pip install" in result.onnx and not result.onnx_written

    class Program:  # what the exporter returns; writing the real one is tested above
        def save(self, path, external_data=False):
            Path(path).write_bytes(b"onnx")

    monkeypatch.setattr(export, "_have", lambda module: module != "onnxruntime")
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: Program())
    result = export.export_run(alexnet_run, tmp_path / "b", "onnx")
    assert result.onnx_written and result.onnx_max_abs_diff is None and "not checked" in result.onnx
    assert "onnxruntime is not installed" in (tmp_path / "b" / "README.md").read_text()
    assert not json.loads((tmp_path / "b" / "config.json").read_text())["onnx"]["checked"]
    assert not (tmp_path / "b" / "model.safetensors").exists()


def test_an_export_never_replaces_the_run_s_own_files(alexnet_run):
    with pytest.raises(CNNCompareError, match="another folder"):
        export.export_run(alexnet_run, alexnet_run)


def test_formats_and_bad_run_folders_are_one_sentence(tmp_path):
    assert export.parse_formats("onnx, safetensors") == ("safetensors", "onnx")
    assert export.parse_formats(["safetensors"]) == ("safetensors",)
    for bad in ("tflite", "", ","):
        with pytest.raises(CNNCompareError, match="safetensors, onnx"):
            export.parse_formats(bad)
    with pytest.raises(CNNCompareError, match="not a cnncompare run"):
        export.export_run(tmp_path, tmp_path / "out")
    with pytest.raises(CNNCompareError, match="not a cnncompare export"):
        export.load_export(tmp_path)


def test_export_module_does_not_import_gradio():
    assert "gradio" not in Path(export.__file__).read_text()


def test_timm_loads_the_export_like_a_hub_model(resnet_export, resnet_run, shapes):
    """`timm.create_model("local-dir:…", pretrained=True)` (what `hf-hub:` gives once uploaded): the run's logits,
    its class names, and a data config whose transform is the training's preprocessing (whole image, no crop)."""
    import timm

    from cnncompare import inference

    _, out = resnet_export
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    ours_model = runs.load_run(resnet_run).load_model()
    _, theirs = _outputs(model, 32)
    _, ours = _outputs(ours_model, 32)
    assert torch.allclose(theirs, ours, rtol=0, atol=1e-6)
    assert list(model.pretrained_cfg["label_names"]) == shapes.classes
    cfg = timm.data.resolve_data_config({}, model=model)
    assert (cfg["input_size"], cfg["crop_pct"], cfg["crop_mode"]) == ((3, 32, 32), 1.0, "squash")
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 40, 3), dtype=np.uint8))
    timm_x = timm.data.create_transform(**cfg)(image)
    assert torch.allclose(timm_x, inference.preprocess(image, ours_model, 32, fit="squash")[0], atol=1e-6)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\nlicense: ") and "- image-classification\n- timm\n" in card
    assert "Validation top-1" in card and "trained from random weights" in card
    hub = json.loads((out / "config.json").read_text())
    assert "tag" not in hub["pretrained_cfg"] and hub["format"] == "cnncompare-export"  # ours kept beside timm's


def test_a_torchvision_export_says_why_timm_cannot_load_it(alexnet_export):
    _, out = alexnet_export
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: pytorch\n") and "- timm" not in card.split("---")[1]
    assert "timm cannot load this export: alexnet is built by torchvision" in card
    assert "torchvision.models.alexnet" in card and "pretrained_cfg" not in json.loads(
        (out / "config.json").read_text()
    )


def test_an_export_goes_into_a_fresh_folder_or_over_an_earlier_export(resnet_export, alexnet_run, tmp_path):
    import shutil
    import stat

    _, earlier = resnet_export
    out = tmp_path / "again"
    shutil.copytree(earlier, out)
    assert (out / "model.onnx").is_file()
    export.export_run(alexnet_run, out, "safetensors")  # over an earlier export: none of its files is left
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text())["architecture"] == "alexnet"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in out.iterdir())  # readable by whoever gets it
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(CNNCompareError, match="already holds other files"):
        export.export_run(alexnet_run, mine, "safetensors")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_the_cli_exits_non_zero_when_an_asked_format_cannot_be_written(alexnet_run, tmp_path, monkeypatch, capsys):
    from cnncompare.cli import main

    monkeypatch.setattr(export, "_have", lambda module: module != "onnxscript")
    assert main(["export", str(alexnet_run), "--out", str(tmp_path / "o"), "--format", "safetensors,onnx"]) == 2
    err = capsys.readouterr().err
    assert "onnxscript" in err and "cnncompare[onnx]" in err and err.count("\n") == 1
    assert (tmp_path / "o" / "model.safetensors").is_file()  # what could be written is kept


def test_fine_tune_export_and_fine_tune_again_from_the_export(resnet_export, tmp_path, capsys):
    """The round trip: a run exported, a new run started from the export (`local-dir:PATH@policy`, as from
    `hf-hub:OWNER/NAME` once uploaded), and that run exported again for timm."""
    import timm

    from cnncompare.cli import main

    _, first = resnet_export
    args = ["--epochs", "1", "--size", "32", "--batch", "16", "--max-per-class", "8", "--out", str(tmp_path / "runs")]
    assert main(["finetune", "--models", f"local-dir:{first}@head", *args, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["error"] is None and row["name"] == "resnet18" and "file: model.safetensors" in row["weights"]
    again = runs.load_run(row["run_dir"])
    assert again.entry.pretrained and again.entry.weights_file == "model.safetensors"  # its name, not its path
    exported = load_file(str(first / "model.safetensors"))
    started = again.load_model().state_dict()
    assert torch.equal(started["conv1.weight"], exported["conv1.weight"])  # the frozen backbone is the export's
    second = tmp_path / "second"
    export.export_run(again.path, second, "safetensors")
    model = timm.create_model(f"local-dir:{second}", pretrained=True).eval()
    _, theirs = _outputs(model, 32)
    _, ours = _outputs(again.load_model(), 32)
    assert torch.allclose(theirs, ours, rtol=0, atol=1e-6)


def test_hub_references_say_what_to_do_offline(alexnet_run, tmp_path, monkeypatch, capsys):
    from cnncompare.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["finetune", "--models", "hf-hub:someone/resnet18-shapes@head", "--epochs", "1"]) == 2
    assert "downloads are off" in capsys.readouterr().err
    assert main(["finetune", "--models", f"local-dir:{tmp_path / 'nothing'}@head", "--epochs", "1"]) == 2
    assert "is not an export" in capsys.readouterr().err
    out = tmp_path / "pushed"
    assert (
        main(["export", str(alexnet_run), "--out", str(out), "--format", "safetensors", "--push-to-hub", "me/x"]) == 2
    )
    err = capsys.readouterr().err
    assert "Not pushed to me/x" in err and "offline" in err and (out / "model.safetensors").is_file()  # kept
    assert main(["export", str(alexnet_run), "--out", str(out), "--push-to-hub", "not a repo"]) == 2
    assert "OWNER/NAME" in capsys.readouterr().err
