"""Feature maps (`cnncompare.featuremaps`): each stage's strongest channels for one image, from a real forward pass,
the same through the command line (PNG files) and the page."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from cnncompare import featuremaps, inference
from cnncompare.cli import main


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (80, 60, 3), dtype=np.uint8))


def test_each_stage_s_strongest_channels_from_one_real_pass():
    loaded = inference.imagenet_model("resnet18", pretrained=False, device="cpu")
    model = loaded.model
    fm = featuremaps.feature_maps(_image(), loaded, size=64, top=4)
    # the stages the model names, with their real shapes at 64 px
    assert [s.name for s in fm.stages] == [f["module"] for f in model.feature_info]
    assert [s.shape for s in fm.stages] == [
        (f["num_chs"], 64 // f["reduction"], 64 // f["reduction"]) for f in model.feature_info
    ]
    # the last stage is what forward_features gives: its strongest channels, each scaled to 0..255
    x = inference.preprocess(_image(), model, 64, fit="squash")
    with torch.inference_mode():
        feats = model.forward_features(x)[0]
    last = fm.stages[-1]
    means = feats.mean((1, 2))
    assert last.channels == means.argsort(descending=True)[:4].tolist()
    top = feats[last.channels[0]]
    expected = ((top - top.min()) / (top.max() - top.min()) * 255).round().to(torch.uint8).numpy()
    assert np.abs(last.maps[0].astype(int) - expected.astype(int)).max() <= 1
    assert fm.kernels.shape == (32, 7, 7, 3) and fm.note  # random weights: said
    # pure, and the shared model keeps no hook behind
    again = featuremaps.feature_maps(_image(), loaded, size=64, top=4)
    assert all(np.array_equal(a.maps, b.maps) for a, b in zip(fm.stages, again.stages))
    assert all(not model.get_submodule(s.name)._forward_hooks for s in fm.stages)
    grid = featuremaps.grid_image(fm)
    assert grid.size[1] == len(fm.stages) * (featuremaps.TILE + 4) + 4


def test_the_command_line_writes_the_grids(tmp_path, capsys):
    image = tmp_path / "in.png"
    _image().save(image)
    out = tmp_path / "maps"
    assert (
        main(["features", str(image), "--models", "alexnet", "googlenet", "--size", "64", "--out", str(out), "--json"])
        == 0
    )
    done = json.loads(capsys.readouterr().out)
    assert [d["model"] for d in done] == ["alexnet", "googlenet"]
    for d in done:
        assert len(d["stages"]) >= 3 and all(len(s["channels"]) == 6 for s in d["stages"])
        for f in d["files"]:
            with Image.open(f) as pic:
                assert pic.size[0] > 100
    assert main(["features", str(image), "--models", "alexnet", "--size", "32", "--out", str(out)]) == 2
    assert "at least 63" in capsys.readouterr().err
