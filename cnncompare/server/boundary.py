"""The trust boundary: what a web visitor sends, turned into what they may use, in one place.

A web visitor names things only inside what is theirs: their own uploads (checked by the upload components), their
own weights files (by model, from their list), their own runs (by folder name), and settings (checked by the
settings' own rules). They never name a path: a per-run override that would name a file (`weights_file=…`) is
refused with the same sentence whatever it names, so the answer says nothing about the server's files. The CLI,
run by the machine's own user, keeps paths.

Every string a visitor sends is bounded here before it is echoed, logged or matched (`text`), and every number is
finite (`settings.coerce`).
"""

from __future__ import annotations

from typing import Any

from ..errors import CNNCompareError

__all__ = ["MAX_TEXT", "text", "choices", "WEB_REFUSED_OVERRIDES", "check_web_plan", "NO_PATHS"]

MAX_TEXT = 200  # no visitor input longer than this reaches a log line or an error message
# per-run overrides a web visitor may not write: they name files or devices of the server
WEB_REFUSED_OVERRIDES = ("weights_file", "device")
NO_PATHS = (
    "A run's weights come from your own uploads (Fine-tune → Your own weights), and its device from this server: "
    "remove weights_file=… and device=… from the models box."
)


def text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    """`value` as a string of at most `limit` characters (None is '').

    Raises:
        CNNCompareError: anything longer, or something that is not text (a list, a dict), in one sentence that
        quotes none of it.
    """
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CNNCompareError(f"{what} must be text, not {type(value).__name__}.")
    out = str(value)
    if len(out) > limit:
        raise CNNCompareError(f"{what} is {len(out):,} characters long; at most {limit} are accepted.")
    return out


def choices(value: Any, what: str, most: int = 64) -> list[str]:
    """A multiple choice as sent (None, one text, or a list of texts) as a list of at most `most` short texts.

    Raises:
        CNNCompareError: another type, too many items or too long a text, in one sentence that quotes none of it.
    """
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    if len(items) > most:
        raise CNNCompareError(f"{what}: at most {most} choices, got {len(items)}.")
    return [text(item, what) for item in items]


def check_web_plan(plan) -> None:
    """Refuse a plan from the web whose runs name a file or a device of the server (`WEB_REFUSED_OVERRIDES`).

    Raises:
        CNNCompareError: `NO_PATHS`, the same sentence whatever was named and whether it exists.
    """
    named = plan.model_defaults.weights_file is not None or plan.settings.device != "auto"
    if named or any(key in entry.overrides for entry in plan.entries for key in WEB_REFUSED_OVERRIDES):
        raise CNNCompareError(NO_PATHS)
