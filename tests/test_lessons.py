"""The Learn tab's lessons (`cnncompare.lessons`): the engine's plan of each, how a finished comparison is
recognised as a lesson's, and the sentence that reads its runs, honest when they did not show the point."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cnncompare import lessons
from cnncompare.cli import main
from cnncompare.settings import TrainSettings
from cnncompare.training import RunResult


@pytest.mark.parametrize("lesson", lessons.LESSONS, ids=lambda lesson: lesson.key)
def test_every_lesson_is_a_valid_plan_that_is_recognised_as_itself(lesson):
    plan = lesson.plan()
    assert len(plan.runs()) >= 2 and lesson.expect and lesson.reader is not None
    assert lessons.lesson_of("shapes", lesson.max_per_class, plan) is lesson
    # the same runs on other data, with fewer images, or with one setting changed are not the lesson
    assert lessons.lesson_of("zip", lesson.max_per_class, plan) is None
    assert lessons.lesson_of("shapes", lesson.max_per_class - 1, plan) is None
    changed = dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, seed=plan.settings.seed + 1))
    assert lessons.lesson_of("shapes", lesson.max_per_class, changed) is None


def _result(label: str, **kw) -> RunResult:
    loss = kw.pop("loss", 1.0)
    base = dict(name=label.split("@")[0], config={}, classes=[], label=label, final_epoch=1)
    return RunResult(**{**base, **kw}, history=[{"epoch": 1, "train_loss": loss}])


def test_a_pair_lesson_says_when_the_runs_did_not_show_its_point():
    lesson = lessons.BY_KEY["batchnorm"]
    bn, plain = lesson.plan().runs()[1].label, lesson.plan().runs()[0].label
    good = lesson.read([_result(plain, val_top1=12.5, loss=2.08), _result(bn, val_top1=61.0, loss=0.9)])
    assert good.showed is True and "61 %" in good.sentence and "as the lesson says" in good.sentence
    bad = lesson.read([_result(plain, val_top1=15.0, loss=2.05), _result(bn, val_top1=7.5, loss=2.10)])
    assert bad.showed is False and bad.sentence.startswith(lessons.NOT_SHOWN)  # said in words first
    failed = lesson.read([_result(plain, val_top1=15.0), _result(bn, error="out of memory", final_epoch=0)])
    assert failed.showed is None and bn in failed.sentence


def test_the_optimizer_lesson_ranks_the_final_losses():
    lesson = lessons.BY_KEY["optimizers"]
    losses = {"sgd": 2.0, "momentum": 1.2, "nesterov": 1.1, "adam": 0.8, "rmsprop": 0.9}
    runs = [_result(f"r@none optimizer={k}", config={"optimizer": k}, loss=v) for k, v in losses.items()]
    reading = lesson.read(runs)
    assert reading.showed is True and reading.sentence.index("adam 0.80") < reading.sentence.index("sgd 2.00")
    # plain SGD at 10x the learning rate may beat momentum: the order is read at SGD's smaller rate
    fast = _result("r@none optimizer=sgd lr=0.1", config={"optimizer": "sgd", "lr": 0.1}, loss=1.0)
    slow = _result("r@none optimizer=sgd lr=0.01", config={"optimizer": "sgd", "lr": 0.01}, loss=2.0)
    reading = lesson.read([fast, slow, *runs[1:]])
    assert reading.showed is True and "sgd (lr 0.1) 1.00" in reading.sentence
    losses["sgd"] = 0.5  # plain SGD best: not what the lesson describes, and it says so
    runs = [_result(f"r@none optimizer={k}", config={"optimizer": k}, loss=v) for k, v in losses.items()]
    assert lesson.read(runs).showed is False


def test_the_init_lesson_reads_how_loud_each_run_started():
    lesson = lessons.BY_KEY["init"]
    he, glorot = (r.label for r in lesson.plan().runs())

    def run(label, first, last, top1):
        r = _result(label, val_top1=top1, final_epoch=3)
        return dataclasses.replace(r, history=[{"epoch": 1, "train_loss": first}, {"epoch": 3, "train_loss": last}])

    loud = lesson.read([run(he, 8.1, 2.2, 14.0), run(glorot, 2.09, 2.07, 16.0)])
    assert loud.showed is True and "8.10 with He vs 2.09 with Glorot" in loud.sentence and "16 %" in loud.sentence
    alike = lesson.read([run(he, 2.1, 2.0, 14.0), run(glorot, 2.09, 2.07, 16.0)])
    assert alike.showed is False and "started alike" in alike.sentence


def _trained(label: str, first: float, last: float, top1: float, seconds: float) -> RunResult:
    r = _result(label, val_top1=top1, final_epoch=3, train_time_s=seconds)
    return dataclasses.replace(r, history=[{"epoch": 1, "train_loss": first}, {"epoch": 3, "train_loss": last}])


@pytest.mark.parametrize(
    "key, whole_name, cut_name",
    [
        ("residual", "ResNet-34", "the plain network"),
        ("bn_resnet", "ResNet-18 with BatchNorm", "ResNet-18 without BatchNorm"),
    ],
)
def test_an_ablation_lesson_reads_which_network_learned_faster(key, whole_name, cut_name):
    """A network next to itself with one idea taken out: every number read is each run's own, the lower loss is
    named first (it cannot be read backwards), a miss is said in words first, and a tie is called a tie."""
    lesson = lessons.BY_KEY[key]
    whole, cut = (r.label for r in lesson.plan().runs())
    assert cut.split("@")[0] in lesson.text  # the lesson names the variant it runs
    shown = lesson.read([_trained(whole, 2.44, 1.53, 17.5, 50.0), _trained(cut, 2.28, 2.08, 14.4, 45.0)])
    assert shown.showed is True
    assert shown.sentence.startswith(
        f"{whole_name} ended with the lower training loss, 1.53 against 2.08 for {cut_name}"
    )
    assert f"chance is 2.08 and {cut_name} stayed near it" in shown.sentence
    assert f"2.44 → 1.53 ({whole_name}) and 2.28 → 2.08 ({cut_name})" in shown.sentence
    assert "validation top-1 18 % vs 14 %" in shown.sentence
    assert f"{whole_name} took 1.1× as long as {cut_name} (50.0 s against 45.0 s)" in shown.sentence
    # the results in the other order, and the network without the idea learned faster: not shown, said first
    beaten = lesson.read([_trained(cut, 2.28, 1.90, 20.0, 45.0), _trained(whole, 2.44, 2.00, 15.0, 50.0)])
    assert beaten.showed is False and beaten.sentence.startswith(
        f"{lessons.NOT_SHOWN}{cut_name} ended with the lower training loss, 1.90 against 2.00 for {whole_name}"
    )
    assert "stayed near it" not in beaten.sentence and "learned faster in this run" in beaten.sentence
    # ahead, but by less than the lesson looks for
    close = lesson.read([_trained(whole, 2.44, 1.95, 17.5, 50.0), _trained(cut, 2.28, 2.00, 14.4, 45.0)])
    assert close.showed is False and f"{whole_name} was ahead, but by less than the 0.10" in close.sentence
    # a tie in loss and in time, both at chance
    tie = lesson.read([_trained(whole, 2.10, 2.06, 12.5, 40.0), _trained(cut, 2.09, 2.07, 12.5, 40.5)])
    assert tie.showed is False and tie.sentence.startswith(lessons.NOT_SHOWN)
    assert f"{whole_name} and {cut_name} ended with about the same training loss (2.06 and 2.07)" in tie.sentence
    assert "both stayed near it" in tie.sentence and "made no clear difference" in tie.sentence
    assert "took about the same time (40.0 s and 40.5 s)" in tie.sentence


def test_cnncompare_lesson_runs_a_lesson_and_reads_it(tmp_path, monkeypatch, capsys):
    """The CLI's `lesson` runs the Learn tab's comparison (scaled down here) and prints the same reading."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNCOMPARE_RUNS", str(tmp_path / "runs"))
    assert main(["lesson"]) == 0
    listing = capsys.readouterr().out
    assert all(key in listing for key in lessons.BY_KEY)
    assert main(["lesson", "sweep", "--max-per-class", "4", "--json", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    got = json.loads(out.out)
    assert got["lesson"] == "sweep" and got["showed"] in (True, False)
    assert [r["run"] for r in got["runs"]] == [r.label for r in lessons.BY_KEY["sweep"].plan().runs()]
    assert all(r["error"] is None for r in got["runs"])
    assert "From everything training to the classifier alone" in got["reading"]
    assert "What you should see" in out.err and "scaled down: 4 images per class" in out.err
    assert main(["lesson", "nope"]) == 2 and "choose one of features" in capsys.readouterr().err


def test_a_lesson_with_a_misspelt_or_bad_setting_fails_when_it_is_defined():
    """`build` ignores unknown keys (a form sends more than settings): a lesson is checked where it is written."""
    from cnncompare.errors import CNNCompareError
    from cnncompare.lessons import Lesson

    with pytest.raises(CNNCompareError, match="Lesson typo sets unknown setting\\(s\\): epoch"):
        Lesson("typo", "t", "s", "text", "expect", "resnet18@head", dict(epoch=3))
    with pytest.raises(CNNCompareError, match="Learning rate") as bad:
        Lesson("bad", "t", "s", "text", "expect", "resnet18@head", dict(lr=-1))
    with pytest.raises(CNNCompareError) as cli:  # the same sentence from the same rule as the CLI's and the form's
        TrainSettings(lr=-1).validate()
    assert str(bad.value) == str(cli.value)


def _sweep(times: dict[str, float], params: dict[str, int] | None = None) -> list[RunResult]:
    params = params or {"none": 11_000_000, "stages:1": 10_000_000, "stages:2": 9_000_000, "stages:3": 6_000_000}
    return [
        _result(f"resnet18@{k}", config={"freeze": k}, train_time_s=t, trainable_params=params.get(k, 4104))
        for k, t in times.items()
    ]


def test_the_sweep_reads_every_step_not_only_its_ends():
    lesson = lessons.BY_KEY["sweep"]
    steady = lesson.read(_sweep({"none": 21.3, "stages:1": 15.0, "stages:2": 12.0, "stages:3": 8.0, "head": 3.7}))
    assert steady.showed is True and "each step froze more, trained fewer weights and took less time" in steady.sentence
    # the session's run: the ends agree, two steps in the middle do not; the order of the results does not matter
    seen = {"head": 3.7, "stages:3": 24.3, "none": 21.3, "stages:2": 12.0, "stages:1": 10.4}
    bumpy = lesson.read(_sweep(seen))
    assert bumpy.showed is False and bumpy.sentence.startswith(lessons.NOT_SHOWN)
    assert "stages:2 (12.0 s) took longer than stages:1 (10.4 s)" in bumpy.sentence
    assert "stages:3 (24.3 s) took longer than stages:2 (12.0 s)" in bumpy.sentence
    assert "none 21.3 s" in bumpy.sentence.split(":")[2]  # listed from everything training to the head alone
    # a tie (within 5 %) is not "less time", and is named as a tie
    tie = lesson.read(_sweep({"none": 20.0, "stages:1": 15.0, "stages:2": 14.8, "stages:3": 8.0, "head": 3.7}))
    assert tie.showed is False and "stages:2 (14.8 s) took about as long as stages:1 (15.0 s)" in tie.sentence


def test_ratios_name_the_slower_run_first_so_they_cannot_be_read_backwards():
    features = lessons.BY_KEY["features"]
    vgg, res = (r.label for r in features.plan().runs())
    kw = dict(weights_source="random (offline)", val_top1=12.5)
    slow_vgg = features.read([_result(vgg, train_time_s=13.0, **kw), _result(res, train_time_s=4.0, **kw)])
    assert slow_vgg.showed is True and "VGG16 took 3.2× as long as ResNet-50 (13.0 s against 4.0 s)" in (
        slow_vgg.sentence
    )
    close = features.read([_result(vgg, train_time_s=5.2, **kw), _result(res, train_time_s=4.0, **kw)])
    assert close.showed is False and "VGG16 took 1.3× as long as ResNet-50" in close.sentence
    assert close.sentence.startswith(lessons.NOT_SHOWN) and "more" not in close.sentence.split(";")[0]
    keras = lessons.BY_KEY["keras"]
    part, head = (r.label for r in keras.plan().runs())
    runs = [
        _result(part, train_time_s=40.0, trainable_params=127_000_000, **kw),
        _result(head, train_time_s=47.0, trainable_params=120_000_000, **kw),  # the head alone was slower
    ]
    reading = keras.read(runs)
    assert reading.showed is False and "the head alone took 1.2× as long as conv block 5 + head" in reading.sentence
    same = keras.read([dataclasses.replace(runs[0], train_time_s=47.5), runs[1]])
    assert same.showed is False and "took about the same time (47.5 s and 47.0 s)" in same.sentence


def test_the_counting_lessons_count_the_models_themselves(capsys):
    from cnncompare import counting

    (naive, reduced), reading = counting.BY_KEY["reductions"].read()
    # GoogLeNet's inception3a (192 in; 1x1 64; 96 -> 3x3 128; 16 -> 5x5 32; pool -> 1x1 32), counted by hand
    assert naive.params == 192 * (64 + 9 * 128 + 25 * 32) and naive.out_channels == 64 + 128 + 32 + 192
    assert reduced.params == 192 * (64 + 96 + 16 + 32) + 9 * 96 * 128 + 25 * 16 * 32 and reduced.out_channels == 256
    assert reduced.macs == reduced.params * 28 * 28  # stride 1, same padding: every weight once per output pixel
    assert reading.showed is True and "2.4× as many" in reading.sentence
    designs, reading = counting.BY_KEY["stacked"].read()
    two, five, three, seven = designs
    c = 256
    assert (two.params, five.params, three.params, seven.params) == (18 * c * c, 25 * c * c, 27 * c * c, 49 * c * c)
    assert (two.receptive_field, five.receptive_field, three.receptive_field, seven.receptive_field) == (5, 5, 7, 7)
    assert reading.showed is True
    # the command line gives the same, listed with the other lessons
    assert main(["lesson", "stacked", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["showed"] is True and out["reading"] == reading.sentence and len(out["designs"]) == 4
    assert main(["lesson"]) == 0
    listed = capsys.readouterr().out
    assert "reductions" in listed and "stacked" in listed and "sweep" in listed
