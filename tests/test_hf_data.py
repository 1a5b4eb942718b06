"""Hugging Face `hf:` datasets, offline: tiny datasets built here with the `datasets` package and saved to disk."""

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnncompare import runs
from cnncompare.data import DataError, check_dataset_size, folders, load_dataset
from cnncompare.data.hf import parse_source

datasets = pytest.importorskip("datasets", reason="the optional datasets package is not installed")

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 30)]


def picture(label: int, i: int, size=(24, 20)) -> Image.Image:
    """A noisy image whose mean colour tells its class (so a label can be checked on the written file)."""
    rng = np.random.default_rng(1000 * label + i)
    base = np.array(COLOURS[label], dtype=np.int16)
    arr = np.clip(base + rng.integers(-25, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def image_dataset(names, per_class, *, image_col="image", label_col="label", labels=None, size=(24, 20)):
    labels = labels if labels is not None else [c for c in range(len(names)) for _ in range(per_class)]
    features = datasets.Features(
        {"caption": datasets.Value("string"), image_col: datasets.Image(), label_col: datasets.ClassLabel(names=names)}
    )
    images = [picture(max(c, 0) % len(COLOURS), i, size) for i, c in enumerate(labels)]
    return datasets.Dataset.from_dict(
        {"caption": [f"row {i}" for i in range(len(labels))], image_col: images, label_col: labels}, features=features
    )


def saved(tmp_path: Path, name: str, data) -> str:
    folder = tmp_path / name
    data.save_to_disk(str(folder))
    return f"hf:{folder}"


def mean_colour_class(img: Image.Image) -> int:
    mean = np.asarray(img, dtype=np.float64).reshape(-1, 3).mean(0)
    return int(np.argmin([np.abs(mean - np.array(c)).sum() for c in COLOURS]))


def test_sources_parse():
    assert parse_source("beans") == ("beans", None, None)
    assert parse_source("user/flowers:small") == ("user/flowers", "small", None)
    name, config, path = parse_source("/data/my-set")
    assert (name, config, path) == ("my-set", None, Path("/data/my-set"))


def test_columns_are_found_by_feature_and_classes_keep_the_classlabel_order(tmp_path):
    names = ["zebra", "apple", "sea lion"]  # not alphabetical, with a space: kept as they are
    source = saved(tmp_path, "odd", image_dataset(names, 6, image_col="picture", label_col="fine_label"))
    ds = load_dataset(source, work_dir=tmp_path / "w")
    assert ds.classes == names and ds.name == "hf:odd" and ds.report.source == "hf:odd"
    assert str(tmp_path) not in ds.report.summary()  # the report never shows a server path
    assert any("'picture'" in n and "'fine_label'" in n for n in ds.report.notes)
    for split in (ds.train, ds.val):
        for i in range(len(split)):
            assert mean_colour_class(split.image(i)) == split.labels[i]  # the right class for every image


def test_a_missing_validation_split_is_split_per_class_with_the_seed(tmp_path):
    source = saved(tmp_path, "one", image_dataset(["a", "b", "c"], 10))  # a Dataset, no DatasetDict: no splits
    ds = load_dataset(source, work_dir=tmp_path / "w1", val_fraction=0.2, seed=3)
    assert ds.report.counts == {"train": dict.fromkeys("abc", 8), "val": dict.fromkeys("abc", 2)}
    assert any("no validation split" in n and "seed 3" in n for n in ds.report.notes)
    again = load_dataset(source, work_dir=tmp_path / "w2", val_fraction=0.2, seed=3)
    other = load_dataset(source, work_dir=tmp_path / "w3", val_fraction=0.2, seed=4)
    rows = lambda d: [p.name for p in d.val.paths]  # noqa: E731
    assert rows(again) == rows(ds) and rows(other) != rows(ds)


def test_a_test_split_validates_and_unlabelled_rows_are_skipped(tmp_path):
    train = image_dataset(["cat", "dog"], 6)
    test = image_dataset(["cat", "dog"], 0, labels=[0, 0, 1, 1, 1, -1, -1])
    source = saved(tmp_path, "dd", datasets.DatasetDict({"train": train, "test": test}))
    ds = load_dataset(source, work_dir=tmp_path / "w")
    assert ds.report.counts == {"train": {"cat": 6, "dog": 6}, "val": {"cat": 2, "dog": 3}}
    notes = " ".join(ds.report.notes)
    assert "used split 'train' for training and 'test' for validation" in notes and "2 row(s) without" in notes


def test_non_image_datasets_are_refused_in_one_sentence(tmp_path):
    text = datasets.Dataset.from_dict(
        {"text": ["good", "bad"] * 4, "label": [0, 1] * 4},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["p", "n"])}),
    )
    unlabelled = datasets.Dataset.from_dict(
        {"image": [picture(0, i) for i in range(4)], "label": [0, 1, 0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    for data, match in ((text, "no image column"), (unlabelled, "no class-label column")):
        with pytest.raises(DataError, match=match) as err:
            load_dataset(saved(tmp_path, match.replace(" ", "-"), data), work_dir=tmp_path / "w")
        assert "\n" not in str(err.value) and "image-classification dataset" in str(err.value)
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        load_dataset(f"hf:{tmp_path / 'w'}", work_dir=tmp_path / "w2")
    one_class = image_dataset(["a", "b"], 0, labels=[0] * 6)
    with pytest.raises(DataError, match="at least 2 classes"):
        load_dataset(saved(tmp_path, "one-class", one_class), work_dir=tmp_path / "w3")


def test_a_hub_name_offline_is_one_sentence_and_quick(tmp_path):
    start = time.monotonic()
    with pytest.raises(DataError, match="Could not load Hugging Face dataset 'hf:someone/flowers:small'") as err:
        load_dataset("hf:someone/flowers:small", work_dir=tmp_path)
    assert "\n" not in str(err.value) and "offline" in str(err.value) and time.monotonic() - start < 10
    with pytest.raises(DataError, match="Give a dataset name"):
        load_dataset("hf:", work_dir=tmp_path)


def test_without_the_datasets_package_the_message_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install .cnncompare\[hf\]."):
        load_dataset("hf:beans", work_dir=tmp_path)


def test_caps_per_class_bytes_and_pixels(tmp_path, monkeypatch):
    source = saved(tmp_path, "caps", image_dataset(["a", "b"], 30, size=(40, 40)))
    ds = load_dataset(source, work_dir=tmp_path / "w1", max_per_class=6)
    assert ds.report.counts == {"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}}  # 6 per class, as for folders
    written = [p for p in (tmp_path / "w1").rglob("*") if p.is_file() and p.suffix == ".png"]
    assert len(written) == 12  # only the capped rows were written, not the dataset's 60
    assert any("capped at 6" in n for n in ds.report.notes)

    with pytest.raises(DataError, match="more than this server's limit") as err:
        load_dataset(source, work_dir=tmp_path / "w2", max_unpack_bytes=20_000)
    assert "\n" not in str(err.value)
    assert not [p for p in (tmp_path / "w2").rglob("*") if p.is_file()]  # nothing half-written stays

    check_dataset_size(ds, 32, max_mpix=1)
    with pytest.raises(DataError, match="lower the input size"):
        check_dataset_size(ds, 512, max_mpix=1)

    huge = image_dataset(["a", "b"], 0, labels=[0], size=(60, 60))
    big = datasets.concatenate_datasets([image_dataset(["a", "b"], 6, size=(40, 40)), huge])
    monkeypatch.setattr(folders, "MAX_PIXELS", 50 * 50)  # a 60x60 image is over the per-image pixel cap
    ds = load_dataset(saved(tmp_path, "big", big), work_dir=tmp_path / "w3")
    [(where, why)] = ds.report.skipped
    assert where == "train row 12" and why.startswith("too large")
    assert sum(ds.report.counts["train"].values()) + sum(ds.report.counts["val"].values()) == 12


def test_fine_tuning_on_an_hf_dataset_end_to_end(tmp_path, monkeypatch, capsys):
    """`cnncompare finetune --dataset hf:...` as a user types it, then `predict --run` with the path it printed."""
    import json

    from cnncompare.cli import main

    source = saved(tmp_path, "colours", image_dataset(["red", "green", "blue"], 8, size=(32, 32)))
    monkeypatch.setenv("CNNCOMPARE_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    args = ["finetune", "--dataset", source, "--models", "resnet18@head", "--epochs", "1", "--size", "32"]
    assert main([*args, "--batch", "16", "--lr", "0.01", "--out", "out", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["error"] is None and row["val_top1"] is not None and row["epochs"] == 1
    run_dir = Path(row["run_dir"])
    assert run_dir.is_absolute() and run_dir.parent == (tmp_path / "out").resolve()  # works from any folder
    run = runs.load_run(run_dir)
    assert run.classes == ["red", "green", "blue"] and run.config["dataset"]["name"] == "hf:colours"
    picture(0, 99, (32, 32)).save(tmp_path / "red.png")
    monkeypatch.chdir(tmp_path / "runs")  # another folder: the printed path still names the run
    assert main(["predict", str(tmp_path / "red.png"), "--run", str(run_dir), "--top", "2", "--json"]) == 0
    [pred] = json.loads(capsys.readouterr().out)
    assert len(pred["top"]) == 2 and {t["label"] for t in pred["top"]} <= {"red", "green", "blue"}
