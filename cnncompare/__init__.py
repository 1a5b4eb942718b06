"""cnncompare: put classic CNN image classifiers side by side.

The engine (this package) never imports gradio; `app.py` and `python -m cnncompare` are thin
faces over the same functions. The names a library user needs::

    from cnncompare import build_model, profile, load_dataset, ModelEntry, TrainSettings, fine_tune
    from cnncompare import Plan, run_comparison, predict, load_run, CNNCompareError

    ds = load_dataset("shapes")
    result = fine_tune(ModelEntry("resnet18", freeze="head"), TrainSettings(epochs=2), ds)

They load lazily, so `import cnncompare` (and the CLI's --help) stays quick.
"""

from __future__ import annotations

import importlib

__version__ = "0.4.0"

# public name -> (module, attribute)
_EXPORTS = {
    "build_model": ("models", "build"),
    "profile": ("profiling", "profile"),
    "load_dataset": ("data", "load_dataset"),
    "ModelEntry": ("settings", "ModelEntry"),
    "TrainSettings": ("settings", "TrainSettings"),
    "fine_tune": ("training", "fine_tune"),
    "Plan": ("compare", "Plan"),
    "run_comparison": ("compare", "run_comparison"),
    "predict": ("inference", "predict"),
    "load_run": ("runs", "load_run"),
    "CNNCompareError": ("errors", "CNNCompareError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnncompare' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
