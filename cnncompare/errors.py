"""User-facing errors, and how text from a user or an error is shown back (short, without server paths).

Anything raised as `CNNCompareError` is a problem with the user's input or environment
(unknown model, broken upload, no network). Its message is one plain sentence that says
what went wrong and what to do; the CLI prints it without a traceback and the UI shows
it in the page.
"""

import re


class CNNCompareError(Exception):
    """A problem the user can fix; the message says how."""


class UnknownModelError(CNNCompareError, KeyError):
    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class InputSizeError(CNNCompareError, ValueError):
    """The chosen input size is too small (or otherwise unusable) for a model."""


class WeightsUnavailableError(CNNCompareError):
    """Pretrained weights could not be loaded (offline, missing or mismatched file)."""


class DataError(CNNCompareError, ValueError):
    """A dataset could not be used (bad zip, too few images, unknown source, offline)."""


def first_line(err: BaseException | str) -> str:
    """The first line of an error's message (or its type when it has none): one sentence for a status line."""
    text = str(err).strip()
    if isinstance(err, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    return text.splitlines()[0] if text else type(err).__name__


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\\/\s'\"`:,;()]+){2,}")


def shown(text: object, limit: int = 60) -> str:
    """Text a visitor typed, as a message repeats it: one line, at most `limit` characters ('…' when cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def without_paths(text: str) -> str:
    """`text` with every file path replaced by its last part (a message never shows where files live)."""
    return _PATH.sub(lambda m: m.group(0).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1], text)
