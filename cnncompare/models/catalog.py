"""The architectures cnncompare knows, described the same way whichever library builds them.

timm is the default backend (one registry, one model API); torchvision builds the two
classics timm lacks (AlexNet, GoogLeNet). Any other timm model can be used by its timm name
and gets an entry made on the fly.

Reference ImageNet accuracies are never typed here: they are read from the backend's own
weight metadata. Only torchvision publishes accuracy with its weights, so an entry has a
reference exactly when the pretrained weights it loads are torchvision's weights (timm's
`*.tv_in1k` tags are those same files); otherwise it is `None`.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import asdict, dataclass, field

from ..errors import UnknownModelError, shown

# Smallest input the app offers at all: below this, even models that technically run
# (ResNet works at 8 px) see nothing a person could recognise.
FLOOR_SIZE = 32
MAX_NAME = 120  # the longest timm name is under 70 characters


@dataclass(frozen=True)
class Family:
    name: str
    year: int
    paper: str
    idea: str


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "AlexNet",
            2012,
            "Krizhevsky, Sutskever & Hinton: ImageNet Classification with Deep Convolutional Neural Networks",
            "The network that started the deep-learning wave by winning ImageNet 2012. Five convolutional "
            "layers with large early filters (11x11, stride 4), ReLU instead of tanh, dropout in three big "
            "fully connected layers, and training on GPUs.",
        ),
        Family(
            "VGG",
            2014,
            "Simonyan & Zisserman: Very Deep Convolutional Networks for Large-Scale Image Recognition",
            "Depth through uniformity: only 3x3 convolutions, stacked two to four at a time between 2x2 "
            "max-pools, doubling the channels after each pool. Simple and very deep for its time (11 to 19 "
            "weight layers), but heavy: most parameters sit in the three fully connected layers.",
        ),
        Family(
            "VGG-BN",
            2015,
            "Ioffe & Szegedy: Batch Normalization (applied to VGG by torchvision)",
            "The same VGG layers with a BatchNorm after every convolution. Normalising activations lets "
            "the deep plain stack train faster and more reliably, especially from scratch.",
        ),
        Family(
            "Inception",
            2014,
            "Szegedy et al.: Going Deeper with Convolutions (GoogLeNet, 2014)",
            "Inception modules run 1x1, 3x3 and 5x5 convolutions and pooling side by side and concatenate "
            "them, with cheap 1x1 convolutions to cut channels first. Wide and deep at a fraction of "
            "VGG's cost; global average pooling replaces the big fully connected layers.",
        ),
        Family(
            "ResNet",
            2015,
            "He, Zhang, Ren & Sun: Deep Residual Learning for Image Recognition",
            "Each block learns a residual that is added to its input through a shortcut connection, so "
            "gradients flow through very deep networks (up to 152 layers here). Bottleneck blocks "
            "(1x1-3x3-1x1) keep the deep versions affordable.",
        ),
        Family(
            "ResNeXt",
            2016,
            "Xie et al.: Aggregated Residual Transformations for Deep Neural Networks",
            "A ResNet whose 3x3 convolution is split into many parallel groups (cardinality 32). More, "
            "thinner paths give better accuracy for the same cost.",
        ),
        Family(
            "Wide ResNet",
            2016,
            "Zagoruyko & Komodakis: Wide Residual Networks",
            "Fewer layers but wider blocks: the channels inside each bottleneck are doubled. Trading depth "
            "for width trains faster on GPUs for similar accuracy.",
        ),
        Family(
            "DenseNet",
            2016,
            "Huang, Liu, van der Maaten & Weinberger: Densely Connected Convolutional Networks",
            "Every layer in a dense block receives the feature maps of all layers before it, "
            "concatenated. Features are reused instead of re-learned, so the network needs few parameters.",
        ),
        Family(
            "MobileNet",
            2019,
            "Howard et al.: Searching for MobileNetV3",
            "Built for phones: depthwise-separable convolutions, inverted residual blocks with "
            "squeeze-and-excitation, and a layout found by architecture search. Very few MACs.",
        ),
        Family(
            "EfficientNet",
            2019,
            "Tan & Le: EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
            "A mobile-style base network found by architecture search, with squeeze-and-excitation blocks. "
            "Bigger versions grow depth, width and input resolution together in fixed ratios (compound scaling).",
        ),
        Family(
            "ConvNeXt",
            2022,
            "Liu et al.: A ConvNet for the 2020s",
            "A ResNet modernised step by step with ideas from vision transformers: patchify stem, large "
            "7x7 depthwise convolutions, LayerNorm, GELU and fewer activations. A pure CNN that matches "
            "transformers of its time.",
        ),
        Family(
            "Plain (no shortcuts)",
            2015,
            "He, Zhang, Ren & Sun: Deep Residual Learning for Image Recognition (its plain baselines)",
            "A ResNet with its shortcut connections taken out (cnncompare's `models/variants.py`): the same "
            "convolutions and BatchNorms, but each block passes on only what its layers computed. The paper's "
            "plain 34-layer network fitted its training images worse than its 18-layer one; shortcuts cured that.",
        ),
        Family(
            "ResNet without BatchNorm",
            2019,
            "Zhang, Dauphin & Ma: Fixup Initialization: Residual Learning Without Normalization",
            "A ResNet with every BatchNorm taken out (cnncompare's `models/variants.py`). The last convolution of "
            "each block starts at zero (Fixup's main rule), so every block starts as its shortcut and the signal "
            "keeps its size through the depth.",
        ),
        Family("other", 0, "", "A timm model outside the classic catalog; see its timm model card."),
    ]
}


@dataclass(frozen=True)
class ArchInfo:
    """One architecture, the same fields whichever backend builds it."""

    name: str  # cnncompare's name, e.g. "vgg16_bn"
    family: str
    backend: str  # "timm" or "torchvision"
    backend_name: str  # name (and weight tag) in the backend, e.g. "vgg16_bn.tv_in1k"
    depth_note: str = ""  # what distinguishes it from its siblings
    default_size: int = 224
    min_size: int = FLOOR_SIZE
    tv_model: str | None = None  # torchvision builder whose weights these are (for reference metadata)
    tv_weights: str | None = None  # e.g. "IMAGENET1K_V1"
    notes: str = ""  # differences from the reference model worth knowing
    in_catalog: bool = True
    paper_year: int = 0  # when this model's own paper differs from its family's (Inception v3: 2015)
    own_paper: str = ""

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.family]

    @property
    def year(self) -> int | None:
        return self.paper_year or self.family_info.year or None

    @property
    def paper(self) -> str:
        return self.own_paper or self.family_info.paper

    @property
    def idea(self) -> str:
        return self.family_info.idea

    @property
    def reference(self) -> Reference | None:
        return reference_for(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        ref = self.reference
        d.update(
            year=self.year,
            paper=self.paper,
            idea=self.idea,
            ref_top1=ref.top1 if ref else None,
            ref_top5=ref.top5 if ref else None,
            ref_source=ref.source if ref else None,
        )
        return d


def _tv(
    name,
    family,
    tv_model,
    note="",
    size=224,
    min_size=FLOOR_SIZE,
    notes="",
    backend="timm",
    backend_name=None,
    weights="IMAGENET1K_V1",
    **extra,
):
    """An entry whose pretrained weights are torchvision's (so torchvision's metadata applies)."""
    return ArchInfo(
        **extra,
        name=name,
        family=family,
        backend=backend,
        backend_name=backend_name or (name if backend == "torchvision" else f"{name}.tv_in1k"),
        depth_note=note,
        default_size=size,
        min_size=min_size,
        tv_model=tv_model,
        tv_weights=weights,
        notes=notes,
    )


# min_size values are the smallest square input each network accepts (checked by a test
# that runs each model on the meta device at min_size and min_size - 1), floored at FLOOR_SIZE.
_ENTRIES: list[ArchInfo] = [
    _tv("alexnet", "AlexNet", "alexnet", "5 conv + 3 FC layers", min_size=63, backend="torchvision"),
    *[_tv(f"vgg{d}", "VGG", f"vgg{d}", f"{d} weight layers") for d in (11, 13, 16, 19)],
    *[_tv(f"vgg{d}_bn", "VGG-BN", f"vgg{d}_bn", f"{d} weight layers + BatchNorm") for d in (11, 13, 16, 19)],
    _tv(
        "googlenet",
        "Inception",
        "googlenet",
        "Inception v1, 22 layers",
        backend="torchvision",
        notes="Built without the two auxiliary classifiers (they only help training); torchvision's "
        "published num_params excludes them too.",
    ),
    _tv(
        "inception_v3",
        "Inception",
        "inception_v3",
        "factorised 7x7 and 3x3 convolutions",
        size=299,
        min_size=75,
        notes="23.8 M parameters here, 27.2 M in torchvision's published count: timm's Inception v3 has "
        "no auxiliary classifier (the AuxLogits head, 3.3 M parameters, only helps training and is "
        "dropped at inference; the MACs are the same). Its native input is 299 px, and its published "
        "ImageNet top-1 was measured at 299 px.",
        paper_year=2015,
        own_paper="Szegedy et al.: Rethinking the Inception Architecture for Computer Vision (Inception v3)",
    ),
    *[
        _tv(
            f"resnet{d}",
            "ResNet",
            f"resnet{d}",
            f"{d} layers" + (", bottleneck blocks" if d >= 50 else ", basic blocks"),
        )
        for d in (18, 34, 50, 101, 152)
    ],
    _tv("resnext50_32x4d", "ResNeXt", "resnext50_32x4d", "ResNet-50 with 32 groups of width 4"),
    _tv("wide_resnet50_2", "Wide ResNet", "wide_resnet50_2", "ResNet-50 with 2x wider bottlenecks"),
    _tv("densenet121", "DenseNet", "densenet121", "121 layers, growth rate 32"),
    ArchInfo("mobilenetv3_large_100", "MobileNet", "timm", "mobilenetv3_large_100.ra_in1k", "large variant, width 1.0"),
    ArchInfo("efficientnet_b0", "EfficientNet", "timm", "efficientnet_b0.ra_in1k", "base network B0"),
    ArchInfo("convnext_tiny", "ConvNeXt", "timm", "convnext_tiny.fb_in1k", "tiny variant"),
]
CATALOG: dict[str, ArchInfo] = {e.name: e for e in _ENTRIES}
CLASSIC_FOUR = ["alexnet", "vgg16", "googlenet", "resnet50"]

# cnncompare's own ablations (models/variants.py), by name suffix: checked before the prefixes
_SUFFIX_FAMILY = [("_plain", "Plain (no shortcuts)"), ("_nobn", "ResNet without BatchNorm")]
# Families of timm models outside the catalog, by name prefix (longest first).
_PREFIX_FAMILY = [
    ("wide_resnet", "Wide ResNet"),
    ("resnext", "ResNeXt"),
    ("resnet", "ResNet"),
    ("vgg", "VGG"),
    ("inception", "Inception"),
    ("densenet", "DenseNet"),
    ("mobilenet", "MobileNet"),
    ("efficientnet", "EfficientNet"),
    ("convnext", "ConvNeXt"),
]


@dataclass(frozen=True)
class Reference:
    """Published ImageNet-1k numbers read from a backend's weight metadata."""

    top1: float | None
    top5: float | None
    num_params: int | None
    gmacs: float | None  # torchvision's `_ops` ("GFLOPS" in its docs, counted as multiply-adds)
    file_size_mb: float | None
    min_size: int | None
    source: str = field(default="")


@functools.cache
def reference_for(info: ArchInfo) -> Reference | None:
    if not info.tv_model:
        return None
    import torchvision

    weights = torchvision.models.get_model_weights(info.tv_model)[info.tv_weights]
    meta = weights.meta
    metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
    min_size = meta.get("min_size")
    return Reference(
        top1=metrics.get("acc@1"),
        top5=metrics.get("acc@5"),
        num_params=meta.get("num_params"),
        gmacs=meta.get("_ops"),
        file_size_mb=meta.get("_file_size"),
        min_size=min_size[0] if min_size else None,
        source=f"torchvision {info.tv_model} {info.tv_weights}",
    )


def names() -> list[str]:
    return list(CATALOG)


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def get(name: str) -> ArchInfo:
    """Catalog entry for `name`, or an entry made on the fly for any other timm model name."""
    key = str(name).strip()
    if len(key) > MAX_NAME:  # no model is called that; and comparing it with 1,300 names would take a while
        raise UnknownModelError(f"Unknown model '{shown(key)}': model names are short, e.g. resnet50.")
    if key in CATALOG:
        return CATALOG[key]
    if key.lower() in CATALOG:
        return CATALOG[key.lower()]
    import timm

    base, _, tag = key.partition(".")
    if base and timm.is_model(base):
        if tag and not _has_pretrained_tag(key):
            tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{base}.*")]
            raise UnknownModelError(
                f"timm has no weights '{shown(tag)}' for {base}"
                + (f"; it has: {', '.join(tags[:8])}." if tags else ".")
            )
        family = next((f for x, f in _SUFFIX_FAMILY if base.endswith(x)), None)
        family = family or next((f for p, f in _PREFIX_FAMILY if base.startswith(p)), "other")
        default_size = _timm_default_size(key)
        return ArchInfo(
            name=key,
            family=family,
            backend="timm",
            backend_name=key,
            default_size=default_size,
            min_size=0,
            in_catalog=False,
        )
    close = difflib.get_close_matches(key.lower(), names(), n=3, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(key.lower(), _timm_names(), n=3, cutoff=0.75)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model '{shown(key)}'.{hint} Run 'python -m cnncompare models' for the catalog; "
        "any timm model name works too."
    )


def _has_pretrained_tag(name: str) -> bool:
    import timm

    try:
        return timm.get_pretrained_cfg(name) is not None
    except RuntimeError:  # timm raises for an unknown tag
        return False


def _timm_default_size(name: str) -> int:
    import timm

    try:
        cfg = timm.get_pretrained_cfg(name) or timm.get_pretrained_cfg(timm.models.get_arch_name(name))
    except Exception:  # a model with no pretrained config: fall back to the classic size
        cfg = None
    if cfg is not None and getattr(cfg, "input_size", None):
        return int(cfg.input_size[-1])
    return 224
