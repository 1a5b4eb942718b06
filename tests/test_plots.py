"""cnncompare.plots: pure functions of plain data -> plotly figures (no gradio, no torch)."""

import json
import math

import plotly.graph_objects as go
import pytest

from cnncompare import plots

PROFILES = [
    dict(
        name="alexnet",
        macs=714_188_480,
        params=61_100_840,
        ref_top1=56.522,
        input_size=224,
        latency_p50=25.0,
        latency_p90=31.0,
    ),
    dict(
        name="resnet50",
        macs=4_089_184_256,
        params=25_557_032,
        ref_top1=76.13,
        input_size=224,
        latency_p50=107.0,
        latency_p90=120.0,
    ),
    dict(
        name="convnext_tiny",
        macs=4_460_000_000,
        params=28_590_000,
        ref_top1=None,
        input_size=224,
        latency_p50=None,
        latency_p90=None,
    ),
]


def _texts(fig: go.Figure) -> str:
    return json.dumps(fig.to_plotly_json(), default=str)


def test_accuracy_vs_macs_plots_only_models_with_a_reference():
    fig = plots.accuracy_vs_macs(PROFILES)
    names = [t.name for t in fig.data]
    assert names == ["alexnet", "resnet50"]  # convnext has no published accuracy: not plotted at 0
    assert all(min(t.y) > 0 for t in fig.data)
    assert fig.data[1].x[0] == pytest.approx(4.089184256)  # GMACs
    assert fig.layout.xaxis.type == "log"
    notes = " ".join(a.text for a in fig.layout.annotations)
    assert "convnext_tiny" in notes
    # bubble area grows with parameters: alexnet (61 M) is drawn bigger than resnet50 (25.6 M)
    assert fig.data[0].marker.size > fig.data[1].marker.size
    assert plots.without_reference(PROFILES) == ["convnext_tiny"]


def test_accuracy_vs_macs_without_any_reference_says_so():
    fig = plots.accuracy_vs_macs([PROFILES[2]])
    assert not fig.data
    assert "convnext_tiny" in fig.layout.annotations[0].text


def test_latency_bars_median_with_p90_whisker():
    fig = plots.latency_bars(PROFILES, device="cpu (2 threads)")
    (bar,) = fig.data
    assert list(bar.x) == ["alexnet", "resnet50"]  # unmeasured models are left out
    assert list(bar.y) == [25.0, 107.0]
    assert list(bar.error_y.array) == [6.0, 13.0]
    assert list(fig.layout.xaxis.ticktext) == ["alexnet<br><b>25.0 ms</b>", "resnet50<br><b>107.0 ms</b>"]
    assert "cpu (2 threads)" in fig.layout.title.text
    empty = plots.latency_bars([dict(name="x", latency_p50=None)])
    assert not empty.data and "not measured" in empty.layout.annotations[0].text


def test_params_per_stage_stacks_blocks_in_network_order():
    blocks = {
        "vgg16": [
            dict(name="stem", params=38_720),
            dict(name="stage1", params=221_440),
            dict(name="stage10", params=1),
            dict(name="pre-logits", params=119_545_856),
            dict(name="head", params=4_097_000),
        ],
        "resnet18": [
            dict(name="stem", params=9_536),
            dict(name="stage1", params=147_968),
            dict(name="head", params=513_000),
        ],
    }
    fig = plots.params_per_stage(blocks)
    assert [t.name for t in fig.data] == ["stem", "stage1", "stage10", "pre-logits", "head"]
    assert fig.layout.barmode == "stack"
    head = next(t for t in fig.data if t.name == "head")
    assert list(head.x) == ["vgg16", "resnet18"]
    assert head.y[0] == pytest.approx(4.097)
    pre = next(t for t in fig.data if t.name == "pre-logits")
    assert pre.y[1] == 0  # resnet18 has no pre-logits block
    assert not plots.params_per_stage({}).data


def test_training_curves_one_colour_per_run_in_both_panels():
    series = [
        dict(
            label="resnet18@head",
            history=[dict(epoch=1, train_loss=2.0, val_top1=40.0), dict(epoch=2, train_loss=1.5, val_top1=55.0)],
        ),
        dict(label="vgg11@none", history=[dict(epoch=1, train_loss=2.1, val_top1=12.5)]),
        dict(label="not started", history=[]),
    ]
    fig = plots.training_curves(series)
    assert len(fig.data) == 4  # two runs with data x (loss, accuracy)
    loss, acc = fig.data[0], fig.data[1]
    assert list(loss.y) == [2.0, 1.5] and list(acc.y) == [40.0, 55.0]
    assert loss.line.color == acc.line.color != fig.data[2].line.color
    assert [t.showlegend for t in fig.data] == [True, False, True, False]
    empty = plots.training_curves([])
    assert not empty.data and "first epoch" in empty.layout.annotations[0].text


def test_confusion_matrices_one_heatmap_per_run():
    classes = ["circle", "ring", "star"]
    items = [
        dict(label="a", classes=classes, confusion=[[3, 1, 0], [0, 4, 0], [1, 0, 2]], val_top1=81.8),
        dict(label="b", classes=classes, confusion=[[4, 0, 0], [0, 4, 0], [0, 0, 3]], val_top1=100.0),
        dict(label="failed", classes=classes, confusion=[]),
    ]
    fig = plots.confusion_matrices(items)
    assert len(fig.data) == 2 and all(isinstance(t, go.Heatmap) for t in fig.data)
    assert list(fig.data[0].x) == classes and list(fig.data[0].z[0]) == [3, 1, 0]
    titles = [a.text for a in fig.layout.annotations]
    assert "a (81.8 %)" in titles and "b (100.0 %)" in titles
    two_lines = plots.confusion_matrices([dict(items[0], label="resnet18@none optimizer=sgd lr=0.05")])
    assert two_lines.layout.annotations[0].text == "resnet18@none (81.8 %)<br>optimizer=sgd lr=0.05"
    assert fig.layout.yaxis.autorange == "reversed"  # true class 0 at the top, as in textbooks


def test_accuracy_vs_latency_skips_runs_without_numbers():
    rows = [
        dict(label="r18", val_top1=80.0, latency_ms=10.0, trainable_params=4104),
        dict(label="failed", val_top1=None, latency_ms=None),
    ]
    fig = plots.accuracy_vs_latency(rows)
    assert [t.name for t in fig.data] == ["r18"]
    assert fig.data[0].x[0] == 10.0 and fig.data[0].y[0] == 80.0


def test_figures_serialise_to_json_without_nan():
    figs = [
        plots.accuracy_vs_macs(PROFILES),
        plots.latency_bars(PROFILES),
        plots.training_curves([dict(label="x", history=[dict(epoch=1, train_loss=float("nan"), val_top1=5)])]),
        plots.message_figure("hello"),
    ]
    for fig in figs:
        text = fig.to_json()
        assert "NaN" not in text
        json.loads(text)
    assert not math.isnan(
        plots.training_curves([dict(label="x", history=[dict(epoch=1, train_loss=1.0, val_top1=2.0)])]).data[0].y[0]
    )


# --------------------------------------------------------------------------- ranking, freeze sweep, sizes

CLASSIC = [
    dict(name="alexnet", macs=0.714e9, latency_p50=25.0, params=61.1e6),
    dict(name="vgg16", macs=15.47e9, latency_p50=390.0, params=138.4e6),
    dict(name="googlenet", macs=1.498e9, latency_p50=120.0, params=6.6e6),
    dict(name="resnet50", macs=4.089e9, latency_p50=107.0, params=25.6e6),
]


def test_ranking_puts_the_two_orders_side_by_side():
    fig = plots.ranking(CLASSIC, device="cpu")
    by_macs, by_latency = fig.data
    assert list(by_macs.y) == ["1. alexnet", "2. googlenet", "3. resnet50", "4. vgg16"]
    assert list(by_latency.y) == ["1. alexnet", "2. resnet50", "3. googlenet", "4. vgg16"]
    assert list(by_latency.x) == [25.0, 107.0, 120.0, 390.0]
    # a model keeps its colour in both panels
    colour = dict(zip(by_macs.y, by_macs.marker.color))
    assert dict(zip(by_latency.y, by_latency.marker.color))["3. googlenet"] == colour["2. googlenet"]
    note = plots.ranking_note(CLASSIC)
    assert "resnet50, googlenet change places" in note
    assert "Measured here: vgg16 gets through 40 G multiply-adds per second, googlenet only 12" in note
    assert "work per weight does not explain it here" in note  # googlenet reuses its weights more than vgg16
    # as measured on this project's CPU: alexnet slowest per multiply-add, with 12 multiply-adds per weight
    measured = [dict(r, latency_p50=lat) for r, lat in zip(CLASSIC, (40.0, 390.0, 60.0, 80.0))]
    note = plots.ranking_note(measured)
    assert "resnet50 gets through 51 G" in note and "alexnet only 18" in note
    assert "alexnet does 12 multiply-adds per weight, resnet50 160" in note and "fully connected" in note


def test_ranking_without_latency_says_how_to_get_it():
    rows = [dict(r, latency_p50=None) for r in CLASSIC]
    fig = plots.ranking(rows)
    assert len(fig.data) == 1 and "not measured" in _texts(fig)
    assert "Measure latency" in plots.ranking_note(rows)
    assert "Nothing to rank" in _texts(plots.ranking([]))
    same = [dict(name="a", macs=1e9, latency_p50=10.0), dict(name="b", macs=2e9, latency_p50=30.0)]
    assert plots.ranking_note(same).startswith("Here both orders agree.")


def test_freeze_sweep_joins_the_policies_from_none_to_head():
    rows = [
        dict(label="head", freeze="head", val_acc=0.70, train_s=9.0, trainable=5_130),
        dict(label="none", freeze="none", val_acc=0.91, train_s=92.0, trainable=11_200_000),
        dict(label="stages:3", freeze="stages:3", val_acc=0.84, train_s=31.0, trainable=8_400_000),
        dict(label="stages:1", freeze="stages:1", val_acc=0.90, train_s=70.0, trainable=11_000_000),
    ]
    fig = plots.freeze_sweep(rows)
    line, points = fig.data
    assert list(line.x) == [92.0, 70.0, 31.0, 9.0]  # none, stages:1, stages:3, head
    assert list(points.y) == pytest.approx([91.0, 90.0, 84.0, 70.0])
    notes = [a for a in fig.layout.annotations if "trainable" in a.text]
    assert notes[0].text == "none<br>11.20 M trainable" and notes[-1].text == "head<br>5.13 k trainable"
    # labels are placed, not printed over each other: runs at one spot get their labels in different places
    close = [dict(label=p, freeze=p, val_acc=0.5, train_s=10.0, trainable=1e6) for p in ("none", "stages:1")]
    close.append(dict(label="head", freeze="head", val_acc=0.4, train_s=2.0, trainable=5e3))
    placed = {a.text.split("<br>")[0]: (a.ax, a.ay) for a in plots.freeze_sweep(close).layout.annotations}
    assert placed["none"] != placed["stages:1"]
    sizes = list(points.marker.size)
    assert sizes == sorted(sizes, reverse=True)  # marker area follows the trainable parameters
    assert "accuracy vs. training time" in fig.layout.title.text
    assert "first run" in _texts(plots.freeze_sweep([dict(label="x", freeze="none", val_acc=None, train_s=1)]))


def test_accuracy_vs_macs_names_the_size_when_sizes_differ():
    rows = [dict(PROFILES[0]), dict(name="inception_v3", macs=5.713e9, params=23.8e6, ref_top1=77.29, input_size=299)]
    fig = plots.accuracy_vs_macs(rows)
    assert [t.text[0] for t in fig.data] == ["alexnet (224 px)", "inception_v3 (299 px)"]
    assert "each model at the size in its label" in fig.layout.xaxis.title.text
    assert "at 224 px" in plots.accuracy_vs_macs(PROFILES).layout.xaxis.title.text
