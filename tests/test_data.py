"""Tests for cnncompare.data: real files, real zips, real torchvision loaders; no network."""

from __future__ import annotations

import importlib.util
import io
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from cnncompare import data
from cnncompare.data import (
    MIN_PER_CLASS,
    SHAPE_CLASSES,
    DataReport,
    ImageDataset,
    generate_shapes,
    load_dataset,
    to_tensors,
)
from cnncompare.errors import DataError

# --- helpers ----------------------------------------------------------------------------


def image_bytes(seed: int, fmt: str = "PNG", size: tuple[int, int] = (20, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_images(folder: Path, n: int, start: int = 0, ext: str = "png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if ext in ("jpg", "jpeg") else ext.upper()
    for i in range(start, start + n):
        (folder / f"img{i:03d}.{ext}").write_bytes(image_bytes(hash((folder.name, i)) % 2**32, fmt))


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, payload in members.items():
            zf.writestr(zipfile.ZipInfo(name), payload, compress_type=zipfile.ZIP_DEFLATED)
    return path


def class_members(prefix: str = "", classes=("cats", "dogs"), n: int = 6) -> dict[str, bytes]:
    return {f"{prefix}{c}/img{i}.png": image_bytes(k * 100 + i) for k, c in enumerate(classes) for i in range(n)}


def raises_data_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.endswith((".", ")")), message  # one plain sentence
    return message


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# --- shapes -----------------------------------------------------------------------------


def test_shapes_are_deterministic_per_seed():
    a_images, a_labels = generate_shapes(6, 32, seed=0)
    b_images, b_labels = generate_shapes(6, 32, seed=0)
    c_images, _ = generate_shapes(6, 32, seed=1)
    assert a_images.dtype == np.uint8 and a_images.shape == (6 * len(SHAPE_CLASSES), 32, 32, 3)
    assert np.array_equal(a_images, b_images) and np.array_equal(a_labels, b_labels)
    assert not np.array_equal(a_images, c_images)


def test_load_shapes_same_seed_same_split(tmp_path):
    kwargs = dict(work_dir=tmp_path, shapes_per_class=10, shapes_size=32)
    one, two = load_dataset("shapes", seed=3, **kwargs), load_dataset("shapes", seed=3, **kwargs)
    other = load_dataset("shapes", seed=4, **kwargs)
    assert np.array_equal(one.train.array, two.train.array) and one.val.labels == two.val.labels
    assert not np.array_equal(one.train.array, other.train.array)


def test_shapes_classes_balance_and_split(tmp_path):
    loaded = load_dataset("shapes", work_dir=tmp_path, shapes_per_class=50, shapes_size=40, val_fraction=0.2)
    assert loaded.classes == list(SHAPE_CLASSES) and 6 <= len(loaded.classes) <= 8
    assert loaded.report.counts == {"train": dict.fromkeys(SHAPE_CLASSES, 40), "val": dict.fromkeys(SHAPE_CLASSES, 10)}
    assert len(loaded.train) == 40 * len(SHAPE_CLASSES) and len(loaded.val) == 10 * len(SHAPE_CLASSES)
    image, label = loaded.train[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (40, 40)
    assert isinstance(label, int) and 0 <= label < len(SHAPE_CLASSES)
    assert loaded.report.source == "shapes (seed 0)"


def test_shapes_colour_alone_does_not_tell_the_class():
    images, labels = generate_shapes(60, 32, seed=0)
    colour = images.reshape(len(images), -1, 3).mean(axis=1)
    fit, held_out = np.arange(len(images)) % 2 == 0, np.arange(len(images)) % 2 == 1
    centroids = np.stack([colour[fit & (labels == c)].mean(axis=0) for c in range(len(SHAPE_CLASSES))])
    predicted = np.linalg.norm(colour[held_out, None] - centroids[None], axis=2).argmin(axis=1)
    # Random foreground/background colours: a nearest-mean-colour classifier is near chance.
    assert (predicted == labels[held_out]).mean() < 1 / len(SHAPE_CLASSES) + 0.1


@pytest.fixture
def one_torch_thread():
    # On a small shared machine, OpenMP threads spin against other processes: one thread is
    # often ~10x faster for these tiny matrix products.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_linear_probe_on_raw_pixels_does_not_solve_shapes(tmp_path, one_torch_thread):
    # 32 px keeps the probe fast; 1280 training images vs 3072 features gives it a fair chance.
    torch.manual_seed(0)
    loaded = load_dataset("shapes", work_dir=tmp_path, shapes_per_class=200, shapes_size=32)
    x_train, y_train = to_tensors(loaded.train, 32)
    x_val, y_val = to_tensors(loaded.val, 32)
    x_train, x_val = x_train.flatten(1).float() / 255, x_val.flatten(1).float() / 255
    mean = x_train.mean(0)
    x_train, x_val = x_train - mean, x_val - mean
    probe = torch.nn.Linear(x_train.shape[1], len(loaded.classes))
    opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe(x_train), y_train).backward()
        opt.step()
    with torch.no_grad():
        train_acc = (probe(x_train).argmax(1) == y_train).float().mean().item()
        val_acc = (probe(x_val).argmax(1) == y_val).float().mean().item()
    chance = 1 / len(loaded.classes)
    assert train_acc > 0.9  # the probe really was fitted: it memorises the training set...
    assert val_acc < 0.6 and val_acc < chance + 0.25  # ...but does not generalise


def test_shapes_respects_max_per_class(tmp_path):
    loaded = load_dataset("shapes", work_dir=tmp_path, shapes_per_class=50, shapes_size=32, max_per_class=10)
    counts = loaded.report.counts
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 10 * len(SHAPE_CLASSES)
    assert any("capped" in note for note in loaded.report.notes)


# --- folders ----------------------------------------------------------------------------


def test_folder_with_train_and_val(tmp_path):
    root = tmp_path / "pets"
    for split, n in (("train", 6), ("val", 3)):
        for cls in ("cats", "dogs"):
            write_images(root / split / cls, n)
    loaded = load_dataset(str(root), work_dir=tmp_path / "work")
    assert loaded.name == "pets" and loaded.classes == ["cats", "dogs"]
    assert loaded.report.counts == {"train": {"cats": 6, "dogs": 6}, "val": {"cats": 3, "dogs": 3}}
    assert all(p.parent.parent.name == "val" for p in loaded.val.paths)
    image, label = loaded.val[4]
    assert image.mode == "RGB" and image.size == (20, 16) and label == 1
    assert loaded.report.skipped == []


@pytest.mark.parametrize("val_name", ["validation", "valid", "test"])
def test_folder_val_aliases(tmp_path, val_name):
    for split, n in (("train", 5), (val_name, 2)):
        for cls in ("a", "b"):
            write_images(tmp_path / "d" / split / cls, n)
    loaded = load_dataset(str(tmp_path / "d"), work_dir=tmp_path / "work")
    assert loaded.report.counts["val"] == {"a": 2, "b": 2}
    assert any(f"'{val_name}/'" in note for note in loaded.report.notes)


def test_folder_without_split_is_split_stratified_and_seeded(tmp_path):
    for cls in ("cats", "dogs", "birds"):
        write_images(tmp_path / "d" / cls, 10)
    first = load_dataset(str(tmp_path / "d"), work_dir=tmp_path / "work", val_fraction=0.2, seed=0)
    again = load_dataset(str(tmp_path / "d"), work_dir=tmp_path / "work", val_fraction=0.2, seed=0)
    other = load_dataset(str(tmp_path / "d"), work_dir=tmp_path / "work", val_fraction=0.2, seed=1)
    assert first.classes == ["birds", "cats", "dogs"]
    assert first.report.counts == {"train": dict.fromkeys(first.classes, 8), "val": dict.fromkeys(first.classes, 2)}
    assert first.val.paths == again.val.paths and first.val.paths != other.val.paths
    assert not set(first.train.paths) & set(first.val.paths)
    assert any("split 20% of each class" in note for note in first.report.notes)


def test_skipped_files_are_reported_with_reasons(tmp_path):
    root = tmp_path / "d"
    for cls in ("cats", "dogs"):
        write_images(root / cls, 4)
    jpeg = image_bytes(7, "JPEG", size=(64, 64))
    (root / "cats" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "cats" / "notes.txt").write_text("hello")
    (root / "dogs" / "fake.png").write_text("this is not a png")
    (root / "dogs" / ".DS_Store").write_bytes(b"\0\0")
    (root / "dogs" / "Thumbs.db").write_bytes(b"\0\0")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._x.png").write_bytes(b"junk")
    (root / "stray.png").write_bytes(image_bytes(1))

    loaded = load_dataset(str(root), work_dir=tmp_path / "work")
    assert loaded.classes == ["cats", "dogs"]
    assert sorted(loaded.report.skipped) == [
        ("cats/notes.txt", "not an image"),
        ("cats/truncated.jpg", "corrupt or truncated image"),
        ("dogs/fake.png", "not an image"),
        ("stray.png", "not inside a class folder"),
    ]
    assert loaded.report.counts["train"] == {"cats": 2, "dogs": 2}
    summary = loaded.report.summary()
    assert "corrupt or truncated image (1): cats/truncated.jpg" in summary and "cats: train 2, val 2" in summary


def test_image_over_the_pixel_limit_is_skipped(tmp_path):
    root = tmp_path / "d"
    for cls in ("a", "b"):
        write_images(root / cls, 4)
    Image.new("1", (7000, 6000)).save(root / "a" / "huge.png")  # 42 MP, a few KB on disk
    loaded = load_dataset(str(root), work_dir=tmp_path / "work")
    assert loaded.report.skipped == [("a/huge.png", "too large (over 40 megapixels)")]


def test_folder_max_per_class_caps_with_seeded_subset(tmp_path):
    for cls in ("a", "b"):
        write_images(tmp_path / "d" / cls, 20)
    one = load_dataset(str(tmp_path / "d"), work_dir=tmp_path / "w", max_per_class=10, seed=0)
    two = load_dataset(str(tmp_path / "d"), work_dir=tmp_path / "w", max_per_class=10, seed=0)
    three = load_dataset(str(tmp_path / "d"), work_dir=tmp_path / "w", max_per_class=10, seed=5)
    assert one.report.counts == {"train": {"a": 8, "b": 8}, "val": {"a": 2, "b": 2}}
    assert one.train.paths == two.train.paths and set(one.train.paths) != set(three.train.paths)
    assert any("capped at 10 images per class" in note for note in one.report.notes)


def test_pre_split_folder_max_per_class_caps_both_splits(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            write_images(tmp_path / "d" / split / cls, 15)
    loaded = load_dataset(str(tmp_path / "d"), work_dir=tmp_path / "w", max_per_class=10, val_fraction=0.3)
    assert loaded.report.counts == {"train": {"a": 7, "b": 7}, "val": {"a": 3, "b": 3}}


def test_too_few_images_names_the_class(tmp_path):
    write_images(tmp_path / "d" / "cats", 10)
    write_images(tmp_path / "d" / "dogs", 2 * MIN_PER_CLASS - 1)
    message = raises_data_error("dogs", load_dataset, str(tmp_path / "d"), work_dir=tmp_path / "w")
    assert f"only {2 * MIN_PER_CLASS - 1} usable" in message


def test_class_missing_from_val_is_an_error(tmp_path):
    for cls in ("a", "b"):
        write_images(tmp_path / "d" / "train" / cls, 5)
    write_images(tmp_path / "d" / "val" / "a", 3)
    pattern = "Class 'b' has only 0 usable image.* in val"
    raises_data_error(pattern, load_dataset, str(tmp_path / "d"), work_dir=tmp_path / "w")


def test_val_without_train_is_an_error(tmp_path):
    write_images(tmp_path / "d" / "val" / "a", 3)
    write_images(tmp_path / "d" / "cats", 3)
    raises_data_error("no 'train/' folder", load_dataset, str(tmp_path / "d"), work_dir=tmp_path / "w")


# --- zips -------------------------------------------------------------------------------


def test_zip_with_wrapping_top_folder_and_mac_junk(tmp_path):
    members = class_members("mydata/")
    members["__MACOSX/mydata/cats/._img0.png"] = b"resource fork"
    members["mydata/.hidden/x.png"] = image_bytes(1)
    members["mydata/cats/readme.md"] = b"# hi"
    upload = make_zip(tmp_path / "upload.zip", members)
    loaded = load_dataset(str(upload), work_dir=tmp_path / "work")
    assert loaded.name == "upload" and loaded.report.source == "upload.zip"
    assert loaded.classes == ["cats", "dogs"]
    assert loaded.report.skipped == [("mydata/cats/readme.md", "not an image")]
    assert any("mydata/" in note for note in loaded.report.notes)
    assert any("ignored 2" in note for note in loaded.report.notes)
    extracted = loaded.train.paths[0]
    assert extracted.is_relative_to(tmp_path / "work" / "uploads")


def test_zip_with_train_val_folders(tmp_path):
    members = {**class_members("train/", n=4), **class_members("val/", n=2)}
    loaded = load_dataset(str(make_zip(tmp_path / "u.zip", members)), work_dir=tmp_path / "w")
    assert loaded.report.counts == {"train": {"cats": 4, "dogs": 4}, "val": {"cats": 2, "dogs": 2}}


def test_upload_is_not_modified_and_nothing_is_written_next_to_it(tmp_path):
    uploads = tmp_path / "shared"
    uploads.mkdir()
    upload = make_zip(uploads / "upload.zip", class_members())
    before = (upload.read_bytes(), upload.stat().st_mtime_ns, sorted(uploads.iterdir()))
    first = load_dataset(str(upload), work_dir=tmp_path / "work")
    again = load_dataset(str(upload), work_dir=tmp_path / "work")  # the same zip is unpacked once, then reused
    assert (upload.read_bytes(), upload.stat().st_mtime_ns, sorted(uploads.iterdir())) == before
    assert len(list((tmp_path / "work" / "uploads").iterdir())) == 1
    assert again.train.paths == first.train.paths and again.report.to_dict() == first.report.to_dict()


def test_path_traversal_members_are_skipped_and_nothing_escapes(tmp_path):
    members = class_members()
    evil = {
        "../evil.png": image_bytes(1),
        "../../evil2.png": image_bytes(2),
        "/tmp/cnncompare_evil_abs.png": image_bytes(3),
        "C:/evil3.png": image_bytes(4),
        "cats\\..\\..\\evil4.png": image_bytes(5),
        "cats/../../evil5.png": image_bytes(6),
    }
    upload = make_zip(tmp_path / "u.zip", {**members, **evil})
    work = tmp_path / "work"
    loaded = load_dataset(str(upload), work_dir=work)
    unsafe = "unsafe path (absolute or outside the upload)"
    assert sorted(loaded.report.skipped) == sorted((name, unsafe) for name in evil)
    (extract_dir,) = (work / "uploads").iterdir()
    outside = files_under(tmp_path) - files_under(extract_dir)
    assert outside == {upload}
    assert not any("evil" in p.name for p in files_under(tmp_path))
    assert not Path("/tmp/cnncompare_evil_abs.png").exists()
    assert loaded.report.counts["train"] == {"cats": 4, "dogs": 4}


def test_symlink_member_is_skipped(tmp_path):
    upload = tmp_path / "u.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        for name, payload in class_members().items():
            zf.writestr(name, payload)
        link = zipfile.ZipInfo("cats/link.png")
        link.create_system = 3  # Unix, so external_attr carries the file type
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    loaded = load_dataset(str(upload), work_dir=tmp_path / "work")
    assert loaded.report.skipped == [("cats/link.png", "symbolic link")]
    extracted = files_under(tmp_path / "work")
    assert not any(p.is_symlink() for p in extracted) and not any(p.name == "link.png" for p in extracted)


def test_zip_bomb_member_is_refused(tmp_path):
    members = class_members()
    members["cats/bomb.png"] = bytes(20 * 1024**2)  # 20 MB of zeros deflates ~1000x
    upload = make_zip(tmp_path / "bomb.zip", members)
    assert upload.stat().st_size < 200_000
    raises_data_error("zip bomb", load_dataset, str(upload), work_dir=tmp_path / "work")
    assert list((tmp_path / "work" / "uploads").iterdir()) == []  # partial extraction removed


def test_zip_over_total_size_limit_is_refused(tmp_path):
    upload = make_zip(tmp_path / "u.zip", class_members())
    raises_data_error("more than the limit", load_dataset, str(upload), work_dir=tmp_path / "w", max_total_bytes=2_000)


def test_zip_with_lying_size_header_is_read_only_up_to_the_declared_size(tmp_path):
    members = class_members()
    members["cats/liar.png"] = bytes(3 * 1024**2)
    upload = make_zip(tmp_path / "liar.zip", members)
    # Rewrite the member's declared uncompressed size (local header and central directory)
    # to 1000 bytes, so the header-based checks pass and only the streaming checks remain.
    raw = bytearray(upload.read_bytes())
    with zipfile.ZipFile(upload) as zf:
        info = zf.getinfo("cats/liar.png")
    local = info.header_offset
    assert raw[local : local + 4] == b"PK\x03\x04"
    raw[local + 22 : local + 26] = (1000).to_bytes(4, "little")
    central = raw.find(b"PK\x01\x02")
    while raw[central + 46 : central + 46 + len(info.filename)] != info.filename.encode():
        central = raw.find(b"PK\x01\x02", central + 4)
        assert central != -1
    raw[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    upload.write_bytes(bytes(raw))

    loaded = load_dataset(str(upload), work_dir=tmp_path / "work")
    assert loaded.report.skipped == [("cats/liar.png", "corrupt entry in the zip")]
    assert all(p.stat().st_size < 10_000 for p in files_under(tmp_path / "work"))


def test_empty_zip_is_refused(tmp_path):
    upload = make_zip(tmp_path / "empty.zip", {})
    raises_data_error("is empty", load_dataset, str(upload), work_dir=tmp_path / "w")


def test_zip_with_only_folders_is_refused(tmp_path):
    upload = make_zip(tmp_path / "dirs.zip", {"cats/": b"", "dogs/": b""})
    raises_data_error("is empty", load_dataset, str(upload), work_dir=tmp_path / "w")


def test_not_a_zip_is_refused(tmp_path):
    fake = tmp_path / "data.zip"
    fake.write_bytes(b"definitely not a zip file" * 100)
    raises_data_error("not a valid zip", load_dataset, str(fake), work_dir=tmp_path / "w")
    other = tmp_path / "data.csv"
    other.write_text("a,b\n1,2\n")
    raises_data_error("not a .zip", load_dataset, str(other), work_dir=tmp_path / "w")


def test_zip_with_one_class_is_refused(tmp_path):
    upload = make_zip(tmp_path / "one.zip", class_members(classes=("cats",)))
    raises_data_error("Only one class \\('cats'\\)", load_dataset, str(upload), work_dir=tmp_path / "w")


def test_zip_with_images_but_no_class_folders_is_refused(tmp_path):
    upload = make_zip(tmp_path / "flat.zip", {f"img{i}.png": image_bytes(i) for i in range(4)})
    raises_data_error("No class folders", load_dataset, str(upload), work_dir=tmp_path / "w")


# --- sources and options ----------------------------------------------------------------


def test_unknown_source_lists_accepted_forms(tmp_path):
    message = raises_data_error("Unknown data source", load_dataset, "imagenet-but-not-here", work_dir=tmp_path)
    for form in ("'shapes'", "'cifar10'", "'cifar100'", "hf:", "folder", ".zip"):
        assert form in message


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="the datasets package is installed")
def test_hf_without_datasets_package_says_how_to_install(tmp_path):
    raises_data_error(r"pip install .cnncompare\[hf\].", load_dataset, "hf:beans", work_dir=tmp_path)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_val_fraction(tmp_path, fraction):
    raises_data_error("Validation fraction", load_dataset, "shapes", work_dir=tmp_path, val_fraction=fraction)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"max_per_class": 3}, "Images per class .* at least 4"),
        ({"seed": -1}, "Seed"),
        ({"shapes_size": 8}, "16 pixels"),
    ],
)
def test_bad_options(tmp_path, options, match):
    raises_data_error(match, load_dataset, "shapes", work_dir=tmp_path, **options)


def test_report_to_dict_and_summary():
    counts = {"train": {"a": 3, "b": 4}, "val": {"a": 1, "b": 1}}
    report = DataReport("x.zip", ["a", "b"], counts, [("a/x.txt", "not an image")] * 7, ["n1"])
    as_dict = report.to_dict()
    assert as_dict["skipped"][0] == ["a/x.txt", "not an image"] and as_dict["counts"]["train"]["b"] == 4
    summary = report.summary()
    assert "not an image (7)" in summary and "and 2 more" in summary and "Note: n1" in summary
    assert "a: train 3, val 1" in summary


# --- to_tensors -------------------------------------------------------------------------


def test_to_tensors_from_array(tmp_path):
    loaded = load_dataset("shapes", work_dir=tmp_path, shapes_per_class=5, shapes_size=32)
    images, labels = to_tensors(loaded.train, 48, "bicubic")
    assert images.dtype == torch.uint8 and images.shape == (len(loaded.train), 3, 48, 48)
    assert labels.dtype == torch.int64 and labels.tolist() == loaded.train.labels
    same, _ = to_tensors(loaded.train, 32)
    assert torch.equal(same, torch.from_numpy(loaded.train.array).permute(0, 3, 1, 2))


def test_to_tensors_from_files_matches_direct_decode(tmp_path):
    for cls in ("a", "b"):
        write_images(tmp_path / "d" / cls, 4)
    loaded = load_dataset(str(tmp_path / "d"), work_dir=tmp_path / "w")
    images, labels = to_tensors(loaded.train, 24, "nearest")
    assert images.shape == (len(loaded.train), 3, 24, 24) and labels.tolist() == loaded.train.labels
    direct = np.array(Image.open(loaded.train.paths[0]).convert("RGB").resize((24, 24), Image.NEAREST))
    assert torch.equal(images[0], torch.from_numpy(direct).permute(2, 0, 1))


def test_to_tensors_rejects_unknown_interpolation(tmp_path):
    ds = ImageDataset(["a"], [0], array=np.zeros((1, 8, 8, 3), dtype=np.uint8))
    raises_data_error("Unknown interpolation", to_tensors, ds, 8, "lanczos-ish")


# --- CIFAR ------------------------------------------------------------------------------


def test_cifar10_offline_download_fails_fast_and_clearly(tmp_path, monkeypatch):
    # Point torchvision at a closed local port so "no network" holds wherever the tests run.
    monkeypatch.delenv("CNNCOMPARE_OFFLINE", raising=False)  # really try the download
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # conftest sets it, and data honours it too
    monkeypatch.setattr(tvd.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    message = raises_data_error("Could not download CIFAR-10", load_dataset, "cifar10", work_dir=tmp_path)
    assert "cifar-10-batches-py" in message and str(tmp_path / "cifar") in message


def test_cifar10_missing_without_download(tmp_path, monkeypatch):
    raises_data_error("CIFAR-10 was not found", load_dataset, "cifar10", work_dir=tmp_path, download=False)
    monkeypatch.setenv("CNNCOMPARE_OFFLINE", "1")  # offline mode never tries the network
    raises_data_error("CIFAR-10 was not found", load_dataset, "cifar10", work_dir=tmp_path, download=True)


def _write_fake_cifar(root: Path, cls, per_class: int, n_classes: int, py2_keys: bool = False) -> dict[str, np.ndarray]:
    """Write a tiny CIFAR folder in the published pickle format (Python 2's bytes keys when `py2_keys`)."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    cifar100 = cls is tvd.CIFAR100
    label_key = "fine_labels" if cifar100 else "labels"
    key = (lambda k: k.encode()) if py2_keys else (lambda k: k)  # noqa: E731
    rng = np.random.default_rng(0)
    written = {}
    files = [f for f, _ in cls.train_list] + [f for f, _ in cls.test_list]
    for index, name in enumerate(files):
        labels = np.repeat(np.arange(n_classes), per_class)
        pixels = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        pixels[:, 0] = index  # mark which batch each image came from
        (folder / name).write_bytes(pickle.dumps({key("data"): pixels, key(label_key): labels.tolist()}))
        written[name] = pixels
    names = [f"class{i}" for i in range(n_classes)]
    (folder / cls.meta["filename"]).write_bytes(pickle.dumps({key(cls.meta["key"]): names}))
    return written


@pytest.mark.parametrize(
    "key, cls, n_classes, py2", [("cifar10", tvd.CIFAR10, 10, True), ("cifar100", tvd.CIFAR100, 3, False)]
)
def test_a_cifar_folder_is_read_from_the_persistent_data_folder(tmp_path, key, cls, n_classes, py2):
    written = _write_fake_cifar(tmp_path / "cifar", cls, per_class=10, n_classes=n_classes, py2_keys=py2)
    n_train_batches = len(cls.train_list)
    loaded = load_dataset(key, work_dir=tmp_path, download=True)  # the folder is there, so nothing is downloaded
    assert loaded.classes == [f"class{i}" for i in range(n_classes)]
    assert loaded.report.counts["train"] == dict.fromkeys(loaded.classes, 10 * n_train_batches)
    assert loaded.report.counts["val"] == dict.fromkeys(loaded.classes, 10)
    first_val = written[cls.test_list[0][0]][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(loaded.val.array[0], first_val) and loaded.val.labels[0] == 0
    image, _ = loaded.train[0]
    assert image.size == (32, 32) and image.mode == "RGB"

    capped = load_dataset(key, work_dir=tmp_path, download=False, max_per_class=10, val_fraction=0.2)
    assert capped.report.counts == {"train": dict.fromkeys(loaded.classes, 8), "val": dict.fromkeys(loaded.classes, 2)}
    assert any("capped" in note for note in capped.report.notes)


class _Boom:
    """A pickle that would run code when loaded with plain pickle.load."""

    def __reduce__(self):
        return (Path.touch, (Path("/tmp/cnncompare-cifar-pwned"),))


def test_a_cifar_file_that_names_code_is_refused_and_never_run(tmp_path):
    _write_fake_cifar(tmp_path / "cifar", tvd.CIFAR10, per_class=2, n_classes=10)
    Path("/tmp/cnncompare-cifar-pwned").unlink(missing_ok=True)
    (tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({"data": _Boom()}))
    message = raises_data_error("is not a CIFAR-10 file", load_dataset, "cifar10", work_dir=tmp_path)
    assert "data_batch_3" in message and not Path("/tmp/cnncompare-cifar-pwned").exists()


def test_cifars_own_archive_is_accepted_as_an_upload(tmp_path):
    import tarfile

    _write_fake_cifar(tmp_path / "made", tvd.CIFAR10, per_class=3, n_classes=10)
    archive = tmp_path / "upload" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "made" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        (tmp_path / "evil.txt").write_text("not CIFAR")
        tar.add(tmp_path / "evil.txt", arcname="../evil.txt")  # never extracted: not one of CIFAR's files
    loaded = load_dataset(str(archive), work_dir=tmp_path / "data")
    assert loaded.name == "cifar10" and len(loaded.classes) == 10 and len(loaded.train) == 150
    assert not (tmp_path / "data" / "evil.txt").exists() and not (tmp_path / "evil.txt.x").exists()
    again = load_dataset(str(archive), work_dir=tmp_path / "data")  # unpacked once, then reused
    assert again.report.to_dict() == loaded.report.to_dict()
    assert len(list((tmp_path / "data" / "uploads").iterdir())) == 1


def test_data_module_does_not_import_gradio():
    source = Path(data.__file__).read_text()
    assert "gradio" not in source


def test_a_zip_nested_too_deep_is_a_clear_error(tmp_path):
    deep = "/".join(["d"] * 1500)
    members = {f"{deep}/{c}/{i}.png": image_bytes(i) for c in "ab" for i in range(3)}
    with pytest.raises(DataError, match="No class folders"):
        load_dataset(str(make_zip(tmp_path / "deep.zip", members)), work_dir=tmp_path / "w")


def test_a_server_caps_unpacked_bytes_and_dataset_pixels(tmp_path):
    from cnncompare.data import check_dataset_size

    members = {f"{c}/{i}.png": image_bytes(i, size=(64, 64)) for c in "ab" for i in range(6)}
    path = make_zip(tmp_path / "ok.zip", members)
    with pytest.raises(DataError, match="expands to"):
        load_dataset(str(path), work_dir=tmp_path / "w1", max_unpack_bytes=1000)
    ds = load_dataset(str(path), work_dir=tmp_path / "w2")
    check_dataset_size(ds, 64, max_mpix=1)
    with pytest.raises(DataError, match="lower the input size"):
        check_dataset_size(ds, 512, max_mpix=1)


# --- the report the app and the CLI show -------------------------------------------------


def test_an_empty_class_folder_is_a_note_and_bad_files_are_listed_with_their_reason(tmp_path):
    members = class_members(classes=("cats", "dogs", "owls"), n=6)
    members["empty/"] = b""  # a folder without files: no class
    members["cats/notes.txt"] = b"not a picture"
    members["dogs/fake.jpg"] = b"a text file renamed .jpg"
    upload = make_zip(tmp_path / "photos.zip", members)
    ds = load_dataset(str(upload), work_dir=tmp_path / "w", seed=0)
    assert ds.classes == ["cats", "dogs", "owls"]
    report = ds.report
    reasons = dict(report.skipped)
    assert set(reasons) == {"cats/notes.txt", "dogs/fake.jpg"}
    assert reasons["cats/notes.txt"] == "not an image"
    assert any("empty/" in note for note in report.notes)
    text = report.summary()  # the CLI's text
    assert "cats: train" in text and "dogs/fake.jpg" in text and reasons["dogs/fake.jpg"] in text
    md = report.summary(markdown=True)  # the app's: the same content as a table
    assert "| class | train | val |" in md
    for name in ds.classes:
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert row == f"| {name} | {report.counts['train'][name]} | {report.counts['val'][name]} |"
    assert "`dogs/fake.jpg`" in md and reasons["dogs/fake.jpg"] in md and "empty/" in md
    assert str(tmp_path) not in md and str(tmp_path) not in text  # names as in the zip, never server paths
