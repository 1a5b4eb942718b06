"""Ablations of timm's ResNet, registered in timm's model registry: the same network with one idea taken out.

| name                               | taken out |
|------------------------------------|-----------|
| `resnet18_plain`, `resnet34_plain` | the shortcuts: each block passes on its residual branch alone (plain nets) |
| `resnet18_nobn`, `resnet34_nobn`   | every BatchNorm (each becomes an Identity), with a Fixup-style start (below) |

Each is built by timm's own `ResNet` with the original's arguments, and changed afterwards without drawing a random
number: with the same seed and the default init, every convolution and the classifier start with exactly the
ResNet's weights, but for the changes named below. (`init=he` or `glorot` redraws every convolution: same scheme
for both networks, other numbers, and the no-BN network loses its zero start.) Being registered, the names work
wherever a timm name does (models box, CLI, Architectures tab). None has pretrained weights: they train from scratch
(asking for ImageNet weights is an error, never a silent random start).
"""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

__all__ = ["NoShortcut", "resnet18_plain", "resnet34_plain", "resnet18_nobn", "resnet34_nobn"]

_ARCH = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3))}
_CFG = dict(  # resnet18.tv_in1k's data settings (the catalog ResNets'), so the images are prepared the same way
    url="",
    num_classes=1000,
    input_size=(3, 224, 224),
    pool_size=(7, 7),
    crop_pct=0.875,
    interpolation="bilinear",
    mean=IMAGENET_DEFAULT_MEAN,
    std=IMAGENET_DEFAULT_STD,
    first_conv="conv1",
    classifier="fc",
)
# read by timm's register_model: each name gets its own config, with no weights to download
default_cfgs = {f"{base}_{kind}": dict(_CFG) for base in _ARCH for kind in ("plain", "nobn")}


class NoShortcut(nn.Module):
    """Stands where a block's shortcut was. timm's block ends with `x += shortcut`; this shortcut is a zero, so the
    block's own forward (unchanged, whatever its options) returns its residual branch alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


def _blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]


def _remove_shortcuts(model: ResNet) -> None:
    """Every block's shortcut goes, the downsampling blocks' projection (1x1 conv + BN) with it: kept, it would be
    weights that never see a gradient."""
    for block in _blocks(model):
        block.downsample = NoShortcut()


def _remove_batchnorm(model: ResNet) -> None:
    """Every BatchNorm becomes an Identity. Without BN nothing rescales the signal, and with timm's He init each
    block adds a branch as large as its input: the variance about doubles block after block (measured at 48 px:
    ResNet-34's features come out ~90× larger than with the start below). So the last convolution of every residual
    branch starts at zero (Fixup's main rule, Zhang et al. 2019; timm does the same through the last BN's scale):
    each block starts as its shortcut, and the branches grow as they learn."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())
    for block in _blocks(model):
        nn.init.zeros_((block.conv3 if isinstance(block, Bottleneck) else block.conv2).weight)


def _resnet(variant: str, pretrained: bool, **kwargs) -> ResNet:
    if pretrained:
        raise RuntimeError(f"{variant} has no pretrained weights (an ablation made here): train it from scratch.")
    base, _, kind = variant.rpartition("_")
    block, layers = _ARCH[base]
    # timm starts each block's last BN at zero (the block = its shortcut); with no shortcut that would start every
    # plain block, and so the whole network, at zero, where no gradient flows: the plain net keeps BN's usual 1
    args = dict(block=block, layers=layers, **({"zero_init_last": False} if kind == "plain" else {}))
    model = build_model_with_cfg(ResNet, variant, pretrained=False, **dict(args, **kwargs))
    (_remove_shortcuts if kind == "plain" else _remove_batchnorm)(model)
    return model


@register_model
def resnet18_plain(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 without its shortcuts: a plain 18-layer network."""
    return _resnet("resnet18_plain", pretrained, **kwargs)


@register_model
def resnet34_plain(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-34 without its shortcuts: the paper's plain 34-layer network."""
    return _resnet("resnet34_plain", pretrained, **kwargs)


@register_model
def resnet18_nobn(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 without BatchNorm (last convolution of each block started at zero)."""
    return _resnet("resnet18_nobn", pretrained, **kwargs)


@register_model
def resnet34_nobn(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-34 without BatchNorm (last convolution of each block started at zero)."""
    return _resnet("resnet34_nobn", pretrained, **kwargs)
