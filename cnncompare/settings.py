"""Every setting, defined once: its field, default, bounds, choices and help.

The CLI options (`add_arguments`), the UI widgets (`cnncompare.ui.forms`), validation
(`coerce`, run when a settings object is made: it is valid by construction), per-run
overrides (`resnet18@none lr=0.05`) and the Learn presets (overrides of these defaults)
are all derived from the dataclasses below; nothing else types a default.

A freeze policy is a setting's value with a grammar of its own (`FreezePolicy`: none, head,
stages:K, layers:N): it is parsed when the entry is made, so every entry carries it in one
spelling ('Head' becomes 'head'). The environment is read by `cnncompare.env`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import CNNCompareError

__all__ = [
    "Setting",
    "setting",
    "settings_of",
    "TrainSettings",
    "ModelEntry",
    "DataSettings",
    "INPUT_SIZE",
    "FreezePolicy",
    "check",
    "OPTIMIZERS",
    "SCHEDULES",
    "HEADS",
    "INITS",
    "coerce",
    "parse_device",
    "build",
    "replace",
    "add_arguments",
    "from_args",
]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "cosine")
HEADS = ("linear", "mlp")  # "linear": a new last layer; "mlp": a new 4096-4096 ReLU+Dropout(0.5) classifier
INITS = ("default", "he", "glorot")  # for layers trained from scratch: the backend's own, He (Kaiming), Glorot

MIN_PER_CLASS = 2  # usable images per class in each split (train and val)
_POLICY_RE = re.compile(r"^(none|head|stages:(\d+)|layers:(\d+))$")


@dataclass(frozen=True)
class FreezePolicy:
    """What stays frozen: nothing, everything but the classifier (head), the stem and the first K stages, or the
    first N weight layers (see `cnncompare.models.freeze`)."""

    kind: str  # "none" | "head" | "stages" | "layers"
    k: int = 0

    # the vocabulary, said once: every help text, error and choice list (CLI, app, docs) takes it from here
    FORMS = "none | head | stages:K | layers:N"
    # the policies worth offering first, with what each means ("layers:10": the Keras VGG16 recipe)
    CHOICES = (
        ("head", "only the classifier trains (feature extraction)"),
        ("none", "every layer trains"),
        ("stages:1", "stem + stage 1 frozen"),
        ("stages:2", "stem + stages 1-2 frozen"),
        ("stages:3", "stem + stages 1-3 frozen"),
        ("stages:4", "stem + stages 1-4 frozen"),
        ("layers:10", "first 10 weight layers (Keras VGG16 recipe)"),
    )

    @classmethod
    def help(cls, what: str = "what stays frozen") -> str:
        return f"{cls.FORMS} ({what})"

    @classmethod
    def parse(cls, text: str | FreezePolicy | None) -> FreezePolicy:
        """'none', 'head', 'stages:2', 'layers:10' (any case, spaces ignored).

        Raises:
            CNNCompareError: anything else, in one sentence that lists the forms.
        """
        if isinstance(text, FreezePolicy):
            return text
        t = str(text or "none").strip().lower().replace(" ", "")
        m = _POLICY_RE.match(t)
        if not m:
            raise CNNCompareError(
                f"Unknown freeze policy '{str(text)[:40]}': use {cls.FORMS.replace(' | ', ', ')} (e.g. stages:2, "
                "layers:10)."
            )
        if m.group(2) is not None:
            return cls("stages", int(m.group(2)))
        if m.group(3) is not None:
            return cls("layers", int(m.group(3)))
        return cls(t)

    def __str__(self) -> str:
        return f"{self.kind}:{self.k}" if self.kind in ("stages", "layers") else self.kind


@dataclass(frozen=True)
class Setting:
    """What is known about one setting besides its default."""

    name: str
    label: str
    help: str
    kind: type  # int, float, bool or str
    default: Any
    choices: tuple | None = None
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    low_open: bool = False  # low itself not allowed (learning rate > 0)
    optional: bool = False  # None allowed ("no time budget")
    none_text: str = ""  # how the UI/CLI say None ("0 = none")
    zero_none: bool = False  # 0 means None ("0 = none", "0 = all"), whatever the bounds
    flag: str | None = None  # CLI flag when it differs from --field-name
    normalize: Callable[[str], str] | None = None  # text settings with a grammar: checks and spells the value


def setting(
    default,
    label: str,
    help: str,
    *,
    kind: type | None = None,
    choices=None,
    low=None,
    high=None,
    low_open=False,
    optional=False,
    none_text="",
    zero_none=False,
    flag=None,
    normalize=None,
):
    """A dataclass field that carries its `Setting` in metadata."""
    meta = dict(
        label=label,
        help=help,
        kind=kind or type(default),
        choices=tuple(choices) if choices else None,
        low=low,
        high=high,
        low_open=low_open,
        optional=optional,
        none_text=none_text,
        zero_none=zero_none,
        flag=flag,
        normalize=normalize,
    )
    return field(default=default, metadata={"setting": meta})


def settings_of(cls_or_obj) -> list[Setting]:
    """The `Setting` of every field of a settings dataclass, in order."""
    out = []
    for f in dataclasses.fields(cls_or_obj):
        meta = f.metadata.get("setting")
        if meta is not None:
            out.append(Setting(name=f.name, default=f.default, **meta))
    return out


def parse_device(text: str) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N' (any case): the grammar of a device name. Whether this machine has it is
    `runtime.resolve_device`'s question, asked when a run starts.

    Raises:
        CNNCompareError: anything else, in one sentence.
    """
    t = str(text or "auto").strip().lower()
    if not _DEVICE_RE.match(t):
        raise CNNCompareError(f"Unknown device '{str(text)[:40]}': use auto, cpu, cuda or cuda:N.")
    return t


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class _Valid:
    """Valid by construction: every field passes through `coerce` (its type, bounds, choices and grammar) when the
    object is made, `dataclasses.replace` included, so a settings object that exists is a valid one and nothing
    downstream checks it again."""

    def __post_init__(self):
        for s in settings_of(self):
            object.__setattr__(self, s.name, coerce(s, getattr(self, s.name)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainSettings(_Valid):
    """How to train: the same for every model of a comparison, unless an entry overrides a field."""

    optimizer: str = setting(
        "adam",
        "Optimizer",
        "momentum = SGD with momentum 0.9; nesterov = the same with Nesterov's look-ahead",
        choices=OPTIMIZERS,
    )
    lr: float = setting(
        1e-3, "Learning rate", "base learning rate (before warm-up and schedule)", low=0.0, high=10.0, low_open=True
    )
    weight_decay: float = setting(0.0, "Weight decay", "L2 penalty on the trained weights", low=0.0, high=1.0)
    batch_size: int = setting(
        0,
        "Batch size",
        "images per step; 0 = auto: 32 on a CPU, 128 on a GPU (lowered automatically if the GPU runs out of memory)",
        low=0,
        high=1024,
        flag="--batch",
    )
    epochs: int = setting(3, "Epochs", "passes over the training images", low=1, high=200)
    schedule: str = setting(
        "cosine",
        "LR schedule",
        "cosine: decays to 0 over the run; step: x0.1 after each third; none: constant",
        choices=SCHEDULES,
    )
    warmup_epochs: float = setting(
        0.0, "Warm-up epochs", "linear learning-rate warm-up (may be fractional)", low=0.0, high=50.0, flag="--warmup"
    )
    label_smoothing: float = setting(0.0, "Label smoothing", "0 = plain cross-entropy", low=0.0, high=0.9)
    seed: int = setting(0, "Seed", "same seed, same data split, same run", low=0, high=2**31 - 1)
    size: int = setting(
        64, "Input size (px)", "images are resized to size x size; 64 is quick on a CPU", low=16, high=512
    )
    augment: bool = setting(
        False, "Augment (flips, resized crops)", "random flips and resized crops; turns the feature cache off"
    )
    device: str = setting("auto", "Device", "auto | cpu | cuda | cuda:N", normalize=parse_device)
    time_budget_s: float | None = setting(
        None,
        "Time budget per run (s)",
        "stop each run after this many seconds",
        kind=float,
        low=0.0,
        high=86400.0,
        low_open=True,
        optional=True,
        none_text="0 = none",
        zero_none=True,
        flag="--time-budget",
    )
    feature_cache: bool = setting(
        True,
        "Feature cache",
        "when only the head trains, run the frozen backbone once and train the head on stored features",
    )


@dataclass(frozen=True)
class ModelEntry(_Valid):
    """Which model, and how it starts: weights, head, initialisation and what stays frozen."""

    model: str = setting("resnet18", "Model", "a catalog name (alexnet, vgg16, resnet50, ...) or any timm name")
    freeze: str = setting(
        "head",
        "Freeze policy",
        FreezePolicy.help(),
        normalize=lambda text: str(FreezePolicy.parse(text)),
    )
    head: str = setting(
        "linear", "Head", "linear: a new linear classifier; mlp: a new 4096-4096 classifier", choices=HEADS
    )
    init: str = setting("default", "Initialisation", "for layers trained from scratch", choices=INITS)
    pretrained: bool = setting(False, "Start from ImageNet weights", "needs network, or a weights file")
    weights_file: str | None = setting(
        None,
        "Weights file",
        "local pretrained weights (.safetensors or .pth)",
        kind=str,
        optional=True,
        flag="--weights",
    )

    # `freeze` is kept in one spelling ('Head' becomes 'head': labels, configs, estimates) and parsed once, here;
    # the model name and the input size are checked by `models.check_entry`, which knows the models
    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "_policy", FreezePolicy.parse(self.freeze))

    @property
    def policy(self) -> FreezePolicy:
        """The freeze policy, parsed when the entry was made."""
        return self._policy


@dataclass(frozen=True)
class DataSettings(_Valid):
    """Which images a comparison trains and validates on, read once for all its runs. The input size, augmentation
    and the seed (which also fixes the split) are per run: `TrainSettings`. The web page offers its own dataset
    choices (never a path of the server: `ui.comparison`)."""

    source: str = setting(
        "shapes",
        "Dataset",
        "shapes | cifar10 | cifar100 | hf:NAME | a folder of class folders | a .zip of one",
        flag="--dataset",
        normalize=str.strip,
    )
    max_per_class: int | None = setting(
        None,
        "Images per class (0 = all)",
        "a cap keeps CPU runs short (a seeded random subset); 20 % of each class is held out for validation",
        kind=int,
        low=2 * MIN_PER_CLASS,  # so each split keeps its least
        high=1_000_000,
        optional=True,
        none_text="0 = all",
        zero_none=True,
    )
    val_fraction: float = setting(
        0.2, "Validation fraction", "the share of each class held out for validation", low=0.0, high=0.9, low_open=True
    )


def check(cls, name: str, value: Any) -> Any:
    """`value` checked and coerced as `cls`'s setting `name` (one field's rule, where no object is made)."""
    [s] = [s for s in settings_of(cls) if s.name == name]
    return coerce(s, value)


# The Architectures tab's and the profile/diagram commands' input size: empty means each model's own.
INPUT_SIZE = Setting(
    "size",
    "Input size (px)",
    "the side of the square input; leave empty (native) for each model's own size: 224 px, Inception v3 299 px",
    int,
    None,
    low=16,
    high=1024,
    optional=True,
    none_text="native",
)


# --------------------------------------------------------------------------- values


def coerce(s: Setting, value: Any) -> Any:
    """A value from a form, a CLI string or JSON, turned into the setting's type and checked.

    Raises:
        CNNCompareError: one sentence naming the setting and what it accepts.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        if s.optional:
            return None
        return s.default
    if s.kind is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise CNNCompareError(f"{s.label}: '{value[:40]}' is not yes or no.")
            return low in ("1", "true", "yes", "on")
        return bool(value)
    if s.kind in (int, float):
        if isinstance(value, bool):
            raise CNNCompareError(f"{s.label} must be a number, got {value}.")
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise CNNCompareError(f"{s.label}: '{str(value)[:40]}' is not a number.") from None
        if not math.isfinite(number):
            raise CNNCompareError(f"{s.label} must be a finite number, got {value}.")
        if s.zero_none and number == 0:
            return None  # "0 = none"
        if s.kind is int:
            if number != int(number):
                raise CNNCompareError(f"{s.label} must be a whole number, got {value}.")
            number = int(number)
        _check_bounds(s, number)
        return number
    text = str(value).strip()
    if s.choices and text.lower() not in s.choices:
        raise CNNCompareError(f"{s.label}: '{text[:40]}' is not one of {', '.join(s.choices)}.")
    if s.normalize is not None:
        return s.normalize(text)
    return text.lower() if s.choices else text


def _check_bounds(s: Setting, number: float) -> None:
    low_ok = s.low is None or (number > s.low if s.low_open else number >= s.low)
    high_ok = s.high is None or number <= s.high
    if not (low_ok and high_ok):
        lo = "" if s.low is None else (f"above {s.low:g}" if s.low_open else f"at least {s.low:g}")
        hi = "" if s.high is None else f"at most {s.high:g}"
        raise CNNCompareError(f"{s.label} must be {' and '.join(p for p in (lo, hi) if p)}, got {number:g}.")


def build(cls, values: Mapping[str, Any] | None = None, base=None):
    """A settings dataclass from loose values (form fields, strings); unknown keys are ignored.

    `base` gives the values of fields missing from `values` (default: the class defaults).
    """
    values = values or {}
    kwargs = {}
    for s in settings_of(cls):
        if s.name in values:
            kwargs[s.name] = values[s.name]  # checked by the class itself
        elif base is not None:
            kwargs[s.name] = getattr(base, s.name)
    return cls(**kwargs)


def replace(obj, **changes):
    """`dataclasses.replace` that names unknown settings in a sentence (the new object checks its own values)."""
    unknown = [k for k in changes if k not in {s.name for s in settings_of(obj)}]
    if unknown:
        raise CNNCompareError(f"Unknown setting(s): {', '.join(unknown)}.")
    return dataclasses.replace(obj, **changes)


# --------------------------------------------------------------------------- CLI


def _flag(s: Setting) -> str:
    return s.flag or "--" + s.name.replace("_", "-")


def add_arguments(parser, cls, *, skip: tuple[str, ...] = ()) -> None:
    """One CLI option per setting of `cls`: --name VALUE, or --name / --no-name for yes/no settings."""
    for s in settings_of(cls):
        if s.name in skip:
            continue
        flag = _flag(s)
        said = s.none_text and s.none_text not in s.label + s.help
        help_text = (f"{s.label} — {s.help}" + (f" ({s.none_text})" if said else "")).replace("%", "%%")  # argparse
        if s.kind is bool:
            parser.add_argument(
                flag,
                dest=s.name,
                action="store_true",
                default=None,
                help=f"{help_text} (default {'on' if s.default else 'off'})",
            )
            parser.add_argument("--no-" + flag[2:], dest=s.name, action="store_false", help="turn it off")
            continue
        parser.add_argument(
            flag,
            dest=s.name,
            default=None,
            metavar=s.name.upper(),
            choices=list(s.choices) if s.choices else None,
            help=f"{help_text} (default {s.default if s.default is not None else 'none'})",
        )


def from_args(cls, args, base=None):
    """The settings dataclass from parsed CLI args (options left out keep `base` or the defaults)."""
    given = {s.name: getattr(args, s.name) for s in settings_of(cls) if getattr(args, s.name, None) is not None}
    return build(cls, given, base)
