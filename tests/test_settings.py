"""The settings schema: one definition drives validation, the CLI, the environment and the docs."""

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cnncompare
from cnncompare import settings
from cnncompare.env import Env
from cnncompare.errors import CNNCompareError
from cnncompare.settings import ModelEntry, TrainSettings, build, coerce, settings_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "field,value,msg",
    [
        ("epochs", "2.5", "whole number"),
        ("epochs", 0, "at least 1"),
        ("lr", "NaN", "finite"),
        ("lr", "fast", "not a number"),
        ("lr", 0, "above 0"),
        ("time_budget_s", -1, "above 0"),
        ("optimizer", "lbfgs", "not one of"),
        ("augment", "maybe", "yes or no"),
        ("size", 8, "at least 16"),
    ],
)
def test_bad_values_get_one_sentence_naming_the_setting(field, value, msg):
    with pytest.raises(CNNCompareError, match=msg) as err:
        build(TrainSettings, {field: value})
    label = next(s.label for s in settings_of(TrainSettings) if s.name == field)
    assert str(err.value).startswith(label) and "\n" not in str(err.value)


def test_form_values_are_coerced_and_missing_ones_keep_the_defaults():
    s = build(TrainSettings, {"epochs": 4.0, "lr": "0.01", "augment": "yes", "time_budget_s": 0, "unknown": 1})
    assert (s.epochs, s.lr, s.augment, s.time_budget_s) == (4, 0.01, True, None)  # 0 = no budget
    assert s.optimizer == TrainSettings().optimizer
    base = TrainSettings(seed=7)
    assert build(TrainSettings, {"epochs": 2}, base).seed == 7


def test_the_cli_offers_every_setting_with_its_default_in_the_help():
    from cnncompare.cli import build_parser

    parser = build_parser()
    finetune = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "finetune")[1]
    dests = {}
    for a in finetune._actions:
        dests.setdefault(a.dest, a)  # --x comes before --no-x
    for s in settings_of(TrainSettings) + [s for s in settings_of(ModelEntry) if s.name != "model"]:
        assert s.name in dests, s.name
        assert s.help in dests[s.name].help
    args = finetune.parse_args(["--models", "resnet18", "--lr", "0.05", "--no-feature-cache"])
    assert settings.from_args(TrainSettings, args) == TrainSettings(lr=0.05, feature_cache=False)


def test_a_settings_object_is_valid_by_construction():
    with pytest.raises(CNNCompareError, match="whole number"):
        TrainSettings(epochs=2.5)
    with pytest.raises(CNNCompareError, match="Unknown device"):
        TrainSettings(device="tpu")
    with pytest.raises(CNNCompareError, match="freeze policy"):
        ModelEntry("resnet18", freeze="most")
    with pytest.raises(CNNCompareError, match="Learning rate must be above 0"):
        dataclasses.replace(TrainSettings(), lr=-1)  # a replaced one too
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainSettings().lr = 0  # and it stays valid: nothing changes it afterwards
    assert ModelEntry(freeze=" Stages: 2").freeze == "stages:2" and ModelEntry(freeze="stages:2").policy.k == 2
    assert TrainSettings(device="CUDA:1").device == "cuda:1" and TrainSettings(epochs="4").epochs == 4


def test_an_invalid_lr_gets_one_sentence_from_one_rule_whoever_sends_it():
    """The form, a per-run override, a lesson and the CLI all meet the same check (`settings.coerce`, when the
    settings object is made) and say the same sentence."""
    from cnncompare.compare import Entry
    from cnncompare.lessons import Lesson
    from cnncompare.ui import forms

    said = []
    for attempt in (
        lambda: forms.read_form({"lr": 0}),
        lambda: Entry.parse("resnet18@none lr=0"),
        lambda: Lesson("k", "t", "s", "text", "expect", "resnet18@head", settings={"lr": 0}),
        lambda: TrainSettings(lr=0),
    ):
        with pytest.raises(CNNCompareError) as err:
            attempt()
        said.append(str(err.value))
    cli = subprocess.run(
        [sys.executable, "-m", "cnncompare", "finetune", "--models", "resnet18@head", "--lr", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(cnncompare.__file__).parents[1],
    )
    assert cli.returncode == 2
    assert set(said) == {"Learning rate must be above 0 and at most 10, got 0."}, said
    assert said[0] in cli.stderr, cli.stderr


def test_env_reads_each_variable_once_and_refuses_non_numbers(monkeypatch):
    monkeypatch.setenv("CNNCOMPARE_MAX_EPOCHS", "7")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CNNCOMPARE_OFFLINE", raising=False)
    env = Env.read()
    assert env.max_epochs == 7 and env.offline and env.data_dir == env.runs_dir / "_data"
    monkeypatch.setenv("CNNCOMPARE_MAX_RUN_S", "soon")
    with pytest.raises(CNNCompareError, match="CNNCOMPARE_MAX_RUN_S"):
        Env.read()


def test_the_readme_lists_every_environment_variable():
    readme = (ROOT / "README.md").read_text()
    server = (ROOT / "docs" / "SERVER.md").read_text()
    for var, _default, meaning in Env.variables():
        assert f"`{var}`" in readme and meaning in readme, var
        not_limits = ("CNNCOMPARE_RUNS", "CNNCOMPARE_OFFLINE", "CNNCOMPARE_DEBUG", "CNNCOMPARE_CPU_CHANNELS_LAST")
        assert f"`{var}`" in server or var in not_limits, var  # docs/SERVER.md's table of limits


def test_the_public_api_is_small_documented_and_lazy():
    for name in cnncompare.__all__:
        if name == "__version__":
            continue
        obj = getattr(cnncompare, name)
        assert inspect.getdoc(obj), name
    for fn in (
        cnncompare.build_model,
        cnncompare.profile,
        cnncompare.load_dataset,
        cnncompare.fine_tune,
        cnncompare.run_comparison,
        cnncompare.predict,
        cnncompare.load_run,
    ):
        doc = inspect.getdoc(fn)
        assert re.search(r"^(Args|Returns|Raises):", doc, re.M), fn.__name__
    # importing the package alone does not load torch (the CLI's --help stays quick)
    out = subprocess.run(
        [sys.executable, "-c", "import sys, cnncompare; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.stdout.strip() == "False"


def test_coerce_accepts_what_a_number_widget_sends():
    s = next(s for s in settings_of(TrainSettings) if s.name == "batch_size")
    assert coerce(s, 64.0) == 64 and coerce(s, None) == s.default
    with pytest.raises(CNNCompareError):
        coerce(s, float("inf"))


def test_the_code_keeps_the_house_style():
    # pyproject.toml's ruff settings: line length 120, sorted imports, the formatter's layout
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run([*ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-3000:]
    fmt = subprocess.run([*ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout[-3000:]
