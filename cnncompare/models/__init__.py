"""Models, the way timm splits its own: one front door, rooms behind it.

| module      | job |
|-------------|-----|
| `catalog`   | the architectures: family, year, paper, idea, sizes, reference accuracy |
| `builder`   | `build` any catalog/timm model behind timm's API (`ModelSpec`, `ModelCard`), heads, init, |
|             | data config, input sizes, the layout a weights file must have |
| `freeze`    | layer groups (`Block`, `blocks`), `freeze` by a `FreezePolicy`, `build_frozen`, `count_params`, |
|             | `freeze_report` (what a policy freezes in a model, or why it does not fit) |
| `weights`   | weights files read safely and checked against a layout (`read_weights`, `check_weights`) |
| `hub`       | downloads on or off, cached files, where a model's weights come from (`weights_hint`) |
| `tvmodels`  | torchvision's AlexNet and GoogLeNet with timm's model API |
| `layers`    | faster equivalents swapped in place (VGG's fc6 as the matrix product it is) |
| `variants`  | ResNets with their shortcuts or their BatchNorm taken out, for the lessons (`resnet34_plain`, ...) |

The names below are re-exported so callers write `models.build(...)`, `models.freeze(...)`.
"""

from . import catalog, layers, tvmodels, variants  # noqa: F401  (variants: registers resnet18_plain... in timm)
from .builder import (
    MLPHead,
    ModelCard,
    ModelSpec,
    build,
    check_allowed,
    check_entry,
    check_input_size,
    checked_weights,
    classifier_name,
    data_config,
    known_layouts,
    layout,
    min_input_size,
    model_bytes,
    pretrained_available,
    remember_weights,
    spec_of,
)
from .freeze import (
    Block,
    FreezePolicy,
    FreezeReport,
    blocks,
    build_frozen,
    count_params,
    freeze,
    freeze_report,
    modules_to_freeze,
    own_numel,
    param_modules,
    trace,
    weight_layers,
)
from .hub import offline, weights_downloadable, weights_hint, weights_source_hint
from .weights import Layout, check_weights, file_bound, read_weights, tensor_bound, tensor_count, unpacked_bytes

__all__ = [
    "catalog",
    "layers",
    "tvmodels",
    "ModelSpec",
    "ModelCard",
    "MLPHead",
    "Block",
    "FreezePolicy",
    "FreezeReport",
    "freeze_report",
    "Layout",
    "build",
    "build_frozen",
    "spec_of",
    "check_entry",
    "blocks",
    "freeze",
    "count_params",
    "data_config",
    "check_input_size",
    "min_input_size",
    "modules_to_freeze",
    "weight_layers",
    "trace",
    "param_modules",
    "own_numel",
    "offline",
    "pretrained_available",
    "weights_downloadable",
    "check_allowed",
    "model_bytes",
    "remember_weights",
    "classifier_name",
    "layout",
    "known_layouts",
    "read_weights",
    "check_weights",
    "checked_weights",
    "file_bound",
    "tensor_bound",
    "tensor_count",
    "unpacked_bytes",
    "weights_hint",
    "weights_source_hint",
]
