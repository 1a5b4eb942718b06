"""Architecture diagrams: units read from the real (meta-device) models, the figure, the CLI."""

from __future__ import annotations

import json

import pytest

from cnncompare import diagram, models
from cnncompare.cli import main
from cnncompare.errors import CNNCompareError
from cnncompare.models import catalog


def _kinds(units) -> dict[str, int]:
    out: dict[str, int] = {}
    for u in units:
        out[u.kind] = out.get(u.kind, 0) + 1
    return out


def test_the_classic_four_are_read_from_the_models():
    alexnet = diagram.units("alexnet", 224)
    assert _kinds(alexnet) == {"conv": 5, "pool": 4, "fc": 3}
    assert alexnet[0].label == "conv 11×11 /4, 64" and alexnet[0].out_shape == (64, 55, 55)
    assert [u.label for u in alexnet if u.kind == "fc"] == ["fc 4096", "fc 4096", "fc 1000"]

    vgg = diagram.units("vgg16", 224)
    assert sum(u.kind == "conv" for u in vgg) == 13 and sum(u.label.startswith("max-pool 2×2 /2") for u in vgg) == 5
    assert vgg[-1].label == "fc 1000" and vgg[-1].group == "head"
    assert [u.label for u in vgg if u.group == "pre-logits" and u.kind == "fc"] == [
        "fc 4096 (as 7×7 conv)",
        "fc 4096 (as 1×1 conv)",
    ]
    # every parameter of these two sits in a drawn unit: the units add up to the model
    for name, us in (("alexnet", alexnet), ("vgg16", vgg)):
        assert sum(u.params for u in us) == models.count_params(models.build(name, device="meta"))[0]

    googlenet = diagram.units("googlenet", 224)
    assert [u.label for u in googlenet if u.kind == "inception"] == [
        f"inception {t}" for t in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
    ]
    resnet = diagram.units("resnet50", 224)
    blocks = [u for u in resnet if u.kind == "residual"]
    assert len(blocks) == 16 and sum(u.label == "bottleneck /2" for u in blocks) == 3
    assert resnet[-2].label == "global avg-pool" and resnet[-2].out_shape == (2048,)
    # groups follow models.blocks, in order
    groups = [g.name for g in models.blocks(models.build("resnet50", device="meta"), 224)]
    seen = list(dict.fromkeys(u.group for u in resnet))
    assert seen == groups


def test_inception_v3_at_its_native_size_with_its_eleven_modules():
    units = diagram.units("inception_v3")  # no size: the model's own, 299 px
    assert units[0].out_shape == (32, 149, 149)
    mixed = [u for u in units if u.kind == "inception"]
    assert len(mixed) == 11 and mixed[0].label == "inception 5b (A)" and mixed[-1].label == "inception 7c (E)"


def test_frozen_units_follow_the_freeze_policy():
    head = diagram.units("resnet50", 224, "head")
    assert all(u.frozen for u in head if u.group != "head") and not head[-1].frozen
    staged = diagram.units("vgg16", 224, "stages:2")
    frozen_groups = {u.group for u in staged if u.frozen}
    assert frozen_groups == {"stem", "stage1", "stage2"}
    model = models.build("vgg16", device="meta")
    models.freeze(model, "stages:2", 224)
    total, trainable = models.count_params(model)
    assert sum(u.params for u in staged if not u.frozen) == trainable
    assert not any(u.frozen for u in diagram.units("vgg16", 224))


def test_other_timm_cnns_get_their_blocks():
    assert {u.kind for u in diagram.units("efficientnet_b0", 64)} >= {"conv", "residual", "fc"}
    assert any(u.label == "ConvNeXt block" for u in diagram.units("convnext_tiny", 64))


def test_bad_input_says_what_to_do():
    with pytest.raises(CNNCompareError, match="at least 63"):
        diagram.units("alexnet", 32)
    with pytest.raises(CNNCompareError, match="stages:0..3"):
        diagram.units("alexnet", 224, "stages:4")
    with pytest.raises(CNNCompareError, match="Unknown freeze policy"):
        diagram.figure(["alexnet"], 224, "half")


def test_figure_draws_the_models_side_by_side_and_is_cached():
    names = list(catalog.CLASSIC_FOUR)
    fig = diagram.figure(names, 224, "head")
    ticks = fig.layout.xaxis.ticktext
    assert [t.split("</b>")[0].removeprefix("<b>") for t in ticks] == names
    labels = [t for trace in fig.data if trace.text is not None for t in trace.text]
    assert "inception 4e" in labels and "bottleneck /2" in labels and "conv 11×11 /4, 64" in labels
    assert "frozen (head)" in [t.name for t in fig.data]
    depth = max(len(diagram.units(n, 224)) for n in names)
    assert fig.layout.yaxis.range == (depth - 0.5, -0.5)  # one shared scale: one row per unit
    again = diagram.figure(names, 224, "head")
    assert again is not fig and again.to_json() == fig.to_json()
    assert diagram.figure(tuple(names), 224, "head").to_json() == fig.to_json()


def test_the_cli_prints_the_table_and_writes_the_html(tmp_path, capsys):
    out = tmp_path / "d.html"
    assert main(["diagram", "alexnet", "googlenet", "--size", "224", "--freeze", "head", "--html", str(out)]) == 0
    text = capsys.readouterr().out
    assert "alexnet at 224 px, freeze=head: 12 units" in text and "inception 5b" in text
    assert "frozen" in text and "features.0" in text
    html = out.read_text()
    assert "inception 3a" in html and "plotly" in html.lower()
    assert main(["diagram", "inception_v3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["inception_v3"]
    assert rows[0]["output"] == "32×149×149" and rows[-1]["unit"] == "fc 1000"
    assert main(["diagram", "alexnet", "--size", "20"]) == 2
    assert "at least 63" in capsys.readouterr().err
