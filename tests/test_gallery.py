"""The images behind the confusion matrix, from a real tiny comparison (two resnet18 runs, 32 px, shapes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnncompare import compare, data, gallery, runs, training
from cnncompare.errors import CNNCompareError
from cnncompare.settings import ModelEntry, TrainSettings


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    ds = data.load_dataset("shapes", work_dir=tmp_path_factory.mktemp("data"), shapes_per_class=30, seed=0)
    out = tmp_path_factory.mktemp("runs")
    plan = compare.Plan.parse(
        "resnet18@head, resnet18@stages:3 lr=0.03",
        model_defaults=ModelEntry(freeze="head"),
        settings=TrainSettings(epochs=1, size=32, batch_size=32, lr=1e-2, device="cpu"),
    )
    results = compare.run_comparison(plan, ds, out_dir=out)
    assert all(r.error is None and r.final_epoch == 1 for r in results)
    return ds, results, out


def _predicted(run_dir: str, image: np.ndarray) -> int:
    """The run's saved model on one validation image, through the training's own input pipeline."""
    from cnncompare import models

    model = runs.load_run(run_dir).load_model("cpu").eval()
    cfg = models.data_config(model, 32)
    x = training.model_inputs(
        torch.from_numpy(image).permute(2, 0, 1)[None], training.Normalizer(cfg["mean"], cfg["std"]), 32
    )
    with torch.no_grad():
        return int(model(x).argmax(1))


def test_each_cell_holds_exactly_the_validation_images_with_that_true_and_predicted_class(compared):
    ds, results, _ = compared
    g = gallery.prepare(results, ds)
    assert [r.label for r in g.runs] == [r.label for r in results] and not g.notes
    labels = np.asarray(ds.val.labels)
    for r in results:
        for t, true in enumerate(ds.classes):
            for p, pred in enumerate(ds.classes):
                idx = gallery.cell(g, r.label, true, pred)
                assert len(idx) == r.confusion[t][p]  # the matrix's own count (training.evaluate)
                assert all(labels[i] == t for i in idx) and idx == sorted(idx)
    # the images shown for the busiest off-diagonal cell: the validation images themselves, each run's answer
    r = results[0]
    conf = np.asarray(r.confusion)
    np.fill_diagonal(conf, -1)
    t, p = np.unravel_index(conf.argmax(), conf.shape)
    idx = gallery.cell(g, r.label, ds.classes[t], ds.classes[p])
    shown, notes = gallery.items(g, idx, limit=4)
    assert [it.index for it in shown] == idx[:4] and not notes
    for it in shown:
        assert it.true == ds.classes[t] and it.answers[0][1] == ds.classes[p]
        assert it.heat_maps and it.image.size == (3 * gallery.DISPLAY_PX + 2 * 4, gallery.DISPLAY_PX)
        first = np.asarray(it.image.crop((0, 0, gallery.DISPLAY_PX, gallery.DISPLAY_PX)))
        expected = np.asarray(gallery._tile(ds.val.array[it.index].transpose(2, 0, 1)))
        assert np.array_equal(first, expected)
        for (_, pred, c), res in zip(it.answers, results):
            assert pred == ds.classes[_predicted(res.run_dir, ds.val.array[it.index])] and 0 < c <= 1
        assert len(it.caption) <= 40 and all(lab in it.text for lab, _, _ in it.answers)


def test_the_disagreements_are_where_the_predictions_differ(compared):
    ds, results, _ = compared
    g = gallery.prepare(results, ds)
    a, b = (r.pred for r in g.runs)
    assert gallery.disagreements(g) == np.flatnonzero(a != b).tolist()
    some = gallery.disagreements(g)[:3]
    for it in gallery.items(g, some, heat_maps=False)[0]:
        assert it.answers[0][1] != it.answers[1][1] and not it.heat_maps
    one_class = gallery.disagreements(g, true=ds.classes[0])
    assert all(ds.val.labels[i] == 0 for i in one_class)


def test_a_saved_gallery_shows_the_same_and_reaches_only_its_owners_runs(compared, tmp_path):
    ds, results, out = compared
    g = gallery.prepare(results, ds)
    back = gallery.load(gallery.save(g, tmp_path / "gallery.npz"))
    label, true = results[1].label, ds.classes[2]
    for pred in ds.classes:
        assert gallery.cell(back, label, true, pred) == gallery.cell(g, label, true, pred)
    idx = back.kept[:2].tolist()
    mine, _ = gallery.items(back, idx, runs_root=out)
    assert all(it.heat_maps for it in mine)
    elsewhere, notes = gallery.items(back, idx, runs_root=tmp_path)  # someone else's folder: no run there
    assert not any(it.heat_maps for it in elsewhere) and "saved run is gone" in notes[0]
    assert [it.answers for it in elsewhere] == [it.answers for it in mine]
    with pytest.raises(CNNCompareError, match="No comparison to show yet"):
        gallery.load(tmp_path / "none.npz")
    with pytest.raises(CNNCompareError, match="No class called"):
        gallery.cell(back, label, "dragon", true)
