"""Gradio widgets derived from the settings schema (`cnncompare.settings`), and forms read back through it.

A `Setting` knows its label, help, type, default, choices and bounds, so its widget follows:
choices -> gr.Dropdown, yes/no -> gr.Checkbox, numbers -> gr.Number (whole numbers with
precision 0, bounds as minimum/maximum), text -> gr.Textbox. An optional number whose
`zero_none` ("0 = none", "0 = all") shows 0 for None. A form is a dict name -> component; event handlers
get its values as one mapping (by name through `inputs_kwargs=form`, or by component through a
set of components) and `read_form` turns them into a `ModelEntry` and `TrainSettings` with
`settings.build`, which coerces and checks every value in one sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr

from ..settings import DataSettings, ModelEntry, Setting, TrainSettings, build, settings_of
from . import lenient

__all__ = ["SCHEMA", "setting_of", "initial", "widget", "form", "named", "read_form", "values_of", "fill"]

# Every setting a form may show, by name: the model entry's, the training settings', the dataset's.
SCHEMA: dict[str, Setting] = {s.name: s for cls in (ModelEntry, TrainSettings, DataSettings) for s in settings_of(cls)}


def setting_of(name_or_setting: str | Setting) -> Setting:
    if isinstance(name_or_setting, Setting):
        return name_or_setting
    try:
        return SCHEMA[name_or_setting]
    except KeyError:
        raise KeyError(f"No setting called {name_or_setting!r}: one of {', '.join(SCHEMA)}") from None


def initial(s: Setting) -> Any:
    """What the widget shows for the setting's default (0 for None when '0 = none')."""
    if s.default is None and s.zero_none:
        return 0
    return s.default


def _info(s: Setting) -> str:
    return f"{s.help} ({s.none_text})" if s.none_text and s.none_text not in s.help else s.help


def widget(setting: str | Setting, **overrides) -> gr.components.Component:
    """The widget of one setting: label and info from the schema, its default, choices and bounds.

    `overrides` are passed to the component as they are (value=, label=, info=, elem_id=, scale=,
    or choices= to offer suggestions for a free-text setting, which then also accepts other values).
    """
    s = setting_of(setting)
    kw: dict[str, Any] = dict(label=s.label, info=_info(s), value=initial(s))
    if s.choices or "choices" in overrides:
        cls = lenient.Dropdown
        if s.choices:
            kw["choices"] = list(s.choices)
        else:  # suggestions only: any value the schema accepts may be typed
            kw["allow_custom_value"] = True
    elif s.kind is bool:
        cls = gr.Checkbox
    elif s.kind in (int, float):
        cls = lenient.Number
        low = 0 if s.zero_none else s.low  # "0 = none" is a value the widget must take
        kw.update(precision=0 if s.kind is int else None, minimum=low, maximum=s.high)
    else:
        cls = gr.Textbox
        if kw["value"] is None:
            kw["value"] = ""
    kw.update(overrides)
    return cls(**kw)


def form(names: list[str], **overrides: dict) -> dict[str, gr.components.Component]:
    """Widgets for `names`, in order, in the current layout; `overrides[name]` is passed to that widget."""
    unknown = set(overrides) - set(names)
    if unknown:
        raise KeyError(f"Overrides for settings not in the form: {', '.join(sorted(unknown))}")
    return {name: widget(name, **overrides.get(name, {})) for name in names}


def named(values: Mapping, form: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A form's values by name, from a mapping keyed by component (a set of components as inputs) or by name."""
    if form is None:
        return {k: v for k, v in values.items() if isinstance(k, str)}
    out = {}
    for name, comp in form.items():
        if comp in values:
            out[name] = values[comp]
        elif name in values:
            out[name] = values[name]
    return out


def read_form(
    values: Mapping,
    form: Mapping[str, Any] | None = None,
    *,
    entry: ModelEntry | None = None,
    settings: TrainSettings | None = None,
) -> tuple[ModelEntry, TrainSettings]:
    """(the model defaults, the training settings) from a form's values; fields the form lacks keep the
    schema's defaults (or those of `entry` / `settings`).

    Raises:
        CNNCompareError: a value the schema refuses (not a number, NaN, fractional epochs, out of
        bounds, not one of the choices), in one sentence naming the setting.
    """
    by_name = named(values, form)
    return build(ModelEntry, by_name, entry), build(TrainSettings, by_name, settings)


def values_of(form: Mapping[str, gr.components.Component]) -> dict[str, Any]:
    """The values a form's widgets start with, by name (the schema's defaults and the page's own)."""
    return {name: comp.value for name, comp in form.items()}


def fill(form: Mapping[str, gr.components.Component], values: Mapping[str, Any]) -> dict:
    """Outputs that set a form's widgets: {component: value} for every name in `values`.

    Raises:
        KeyError: a name the form does not have (a preset that names a missing field).
    """
    missing = [k for k in values if k not in form]
    if missing:
        raise KeyError(f"Not in the form: {', '.join(missing)}")
    return {form[name]: value for name, value in values.items()}
