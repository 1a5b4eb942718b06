"""torchvision's AlexNet and GoogLeNet with timm's model API.

timm lacks these two classics. Subclassing torchvision's own classes keeps their state-dict
keys (so torchvision's weight files load unchanged) while adding the timm methods the rest
of cnncompare relies on: `forward_features`, `forward_head`, `get_classifier`,
`reset_classifier`, `feature_info` and `pretrained_cfg`.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

_IMAGENET = dict(
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    interpolation="bilinear",
    crop_pct=0.875,
    input_size=(3, 224, 224),
    num_classes=1000,
)


class AlexNet(tvm.AlexNet):
    # Stage ends (the ReLU after conv1, conv2 and conv5), as timm's feature_info would list them.
    feature_info = [
        dict(module="features.1", num_chs=64, reduction=4),
        dict(module="features.4", num_chs=192, reduction=8),
        dict(module="features.11", num_chs=256, reduction=16),
    ]

    def __init__(self, num_classes: int = 1000, drop_rate: float = 0.5):
        super().__init__(num_classes=num_classes, dropout=drop_rate)
        self.pretrained_cfg = dict(_IMAGENET, classifier="classifier.6", architecture="alexnet")
        self.num_classes = num_classes
        self.num_features = 256 * 6 * 6

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]  # last layer also after an MLP head replaced `classifier`

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier[-1] = nn.Linear(4096, num_classes) if num_classes else nn.Identity()


class GoogLeNet(tvm.GoogLeNet):
    """Inception v1 without the auxiliary classifiers (used only to help training in 2014)."""

    feature_info = [
        dict(module="conv1", num_chs=64, reduction=2),
        dict(module="conv3", num_chs=192, reduction=4),
        dict(module="inception3b", num_chs=480, reduction=8),
        dict(module="inception4e", num_chs=832, reduction=16),
        dict(module="inception5b", num_chs=1024, reduction=32),
    ]

    def __init__(
        self, num_classes: int = 1000, transform_input: bool = False, init_weights: bool = True, drop_rate: float = 0.2
    ):
        super().__init__(
            num_classes=num_classes,
            aux_logits=False,
            transform_input=transform_input,
            init_weights=init_weights,
            dropout=drop_rate,
        )
        self.pretrained_cfg = dict(_IMAGENET, classifier="fc", architecture="googlenet")
        self.num_classes = num_classes
        self.num_features = 1024

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._transform_input(x)
        for name in (
            "conv1",
            "maxpool1",
            "conv2",
            "conv3",
            "maxpool2",
            "inception3a",
            "inception3b",
            "maxpool3",
            "inception4a",
            "inception4b",
            "inception4c",
            "inception4d",
            "inception4e",
            "maxpool4",
            "inception5a",
            "inception5b",
        ):
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(1024, num_classes) if num_classes else nn.Identity()


def create(name: str, *, num_classes: int, pretrained: bool, state_dict: dict | None = None) -> nn.Module:
    """Build a torchvision-backed model; `state_dict` holds 1000-class ImageNet weights when pretrained."""
    if name == "alexnet":
        model = AlexNet()
    elif name == "googlenet":
        # torchvision's GoogLeNet weights expect transform_input=True (they were ported from
        # a model trained on [-1, 1] inputs); its own init is only needed from scratch.
        model = GoogLeNet(transform_input=pretrained, init_weights=not pretrained)
    else:
        raise KeyError(name)
    if state_dict is not None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("aux1.", "aux2."))}
        model.load_state_dict(state_dict)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def is_cached(name: str, weights: str) -> bool:
    import os

    from torch.hub import get_dir

    url = tvm.get_model_weights(name)[weights].url
    return os.path.isfile(os.path.join(get_dir(), "checkpoints", os.path.basename(url)))


def download_state_dict(name: str, weights: str) -> dict:
    """torchvision's own loader (download.pytorch.org, cached under TORCH_HOME)."""
    enum = tvm.get_model_weights(name)[weights]
    return enum.get_state_dict(progress=False, check_hash=True)
