"""The faster equivalent of VGG's fc6 gives the convolution's results, in both memory formats and in training."""

import pytest
import torch

from cnncompare import models
from cnncompare.models import layers


@pytest.mark.parametrize("channels_last", [False, True])
def test_dense_fc6_equals_the_convolution(channels_last):
    torch.manual_seed(0)
    model = models.build(models.ModelSpec("vgg11", num_classes=5)).eval()
    assert isinstance(model.pre_logits.fc1, layers.DenseConv2d)  # every VGG models.build makes
    x = torch.randn(2, 3, 64, 64)
    model.pre_logits.fc1.__class__ = torch.nn.Conv2d  # the convolution timm has
    with torch.no_grad():
        before = model(x)
    assert layers.use_dense_fc(model) == 1 and layers.use_dense_fc(model) == 0  # once: the swap is idempotent
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_dense_fc6_trains_like_the_convolution():
    conv = torch.nn.Conv2d(8, 16, 3)
    dense = torch.nn.Conv2d(8, 16, 3)
    dense.load_state_dict(conv.state_dict())
    dense.__class__ = layers.DenseConv2d
    x = torch.randn(4, 8, 3, 3)
    conv(x).square().sum().backward()
    dense(x).square().sum().backward()
    torch.testing.assert_close(dense.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-5)
    bigger = torch.randn(1, 8, 5, 5)  # any other input size is the ordinary convolution
    torch.testing.assert_close(dense(bigger), conv(bigger))
