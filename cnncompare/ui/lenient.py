"""Inputs whose preprocessing hands a stranger's value to the handler instead of failing inside gradio.

gradio checks a Number against its bounds with `<` (a string "nan" raised TypeError and a traceback, answered
"error: None"), a CheckboxGroup iterates its value (None raised TypeError), and a Dropdown, Radio or CheckboxGroup
refuses a value outside its choices with a message that quotes the whole value (an 8 MB value went into the log
and back). These classes draw the same widgets in the browser but pass what arrives on, and the handler answers it
in one sentence from the engine's own rules (`settings.coerce`, `export.parse_formats`, the catalog). A text value
over `MAX_TEXT` characters is cut here, so no handler ever echoes or logs more than its start.
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr
import gradio.component_meta

from ..server.boundary import MAX_TEXT

__all__ = ["Number", "Dropdown", "CheckboxGroup", "Radio"]


def _bounded(payload: Any, label: str | None) -> Any:
    """The value with every text over MAX_TEXT characters cut to 80 and a mark (no choice is that long, so the
    handler refuses it as it would any unknown choice, quoting only the start), and at most 65 items (one more
    than any limit, so the handler's own count refuses it)."""

    def cut(x):
        return f"{x[:80]}… ({len(x):,} characters)" if isinstance(x, str) and len(x) > MAX_TEXT else x

    if isinstance(payload, (list, tuple)):
        return [cut(x) for x in list(payload)[:65]]
    return cut(payload)


# as in uploads.py: these are the plain widgets to the browser, so no .pyi stub is written while they are defined
_write_stub = gradio.component_meta.create_or_modify_pyi
gradio.component_meta.create_or_modify_pyi = lambda *args, **kwargs: None


class Number(gr.Number):
    """`gr.Number` that passes a value it cannot read as a number (text, NaN, inf) to the handler unchanged, and
    leaves the bounds to the setting's rule."""

    is_template = True

    def preprocess(self, payload):
        if payload is None or isinstance(payload, bool):
            return payload
        try:
            number = float(payload)
        except (TypeError, ValueError):
            return _bounded(payload, self.label)
        if not math.isfinite(number):
            return payload
        return round(number) if self.precision == 0 and number == int(number) else number


class Dropdown(gr.Dropdown):
    """`gr.Dropdown` whose value outside the choices reaches the handler (which names the choices)."""

    is_template = True

    def preprocess(self, payload):
        return _bounded(payload, self.label)


class CheckboxGroup(gr.CheckboxGroup):
    """`gr.CheckboxGroup` that passes None and values outside the choices on to the handler."""

    is_template = True

    def preprocess(self, payload):
        return _bounded(payload, self.label)


class Radio(gr.Radio):
    """`gr.Radio` that passes a value outside the choices on to the handler."""

    is_template = True

    def preprocess(self, payload):
        return _bounded(payload, self.label)


gradio.component_meta.create_or_modify_pyi = _write_stub
