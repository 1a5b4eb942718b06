"""The ResNet ablations (`cnncompare.models.variants`): the plain network really has no shortcut, the no-BN one no
BatchNorm, and both build, run, train, save and reload through the engine's normal path (real models, no mocks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnncompare import compare, data, models, runs, training
from cnncompare.data import placement
from cnncompare.settings import ModelEntry, TrainSettings


def _shuffled_batchnorms(model: nn.Module, seed: int = 1) -> None:
    """BatchNorms away from their start (scale 1 or 0, shift 0, statistics 0 and 1), so no term of a block is
    trivially zero or the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)


def _branch(block, x: torch.Tensor) -> torch.Tensor:
    """A basic block's residual branch alone, written out: conv-BN-ReLU-conv-BN, then the block's last ReLU."""
    return block.act2(block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x))))))


@torch.no_grad()
def test_the_plain_network_is_the_resnet_without_its_shortcuts():
    torch.manual_seed(0)
    resnet = models.build("resnet18", num_classes=8).eval()
    plain = models.build("resnet18_plain", num_classes=8).eval()
    _shuffled_batchnorms(resnet)
    mine = plain.state_dict()
    # every weight of the plain network is one of the ResNet's; only the downsampling projections are gone
    assert set(mine) < set(resnet.state_dict())
    assert {k.split(".downsample")[0] for k in set(resnet.state_dict()) - set(mine)} == {
        f"layer{i}.0" for i in (2, 3, 4)
    }
    plain.load_state_dict({k: v for k, v in resnet.state_dict().items() if k in mine})
    x = torch.randn(2, 3, 48, 48)
    assert not torch.allclose(resnet(x), plain(x), atol=1e-3)
    h = plain.maxpool(plain.act1(plain.bn1(plain.conv1(x))))
    for name in ("layer1.0", "layer2.0"):  # a block that keeps its size, and one that halves it (and widens)
        block, twin = plain.get_submodule(name), resnet.get_submodule(name)
        assert torch.allclose(block(h.clone()), _branch(block, h.clone()), atol=1e-6)
        assert not torch.allclose(twin(h.clone()), _branch(twin, h.clone()), atol=1e-3)  # the ResNet adds its input
        h = block(h)


@torch.no_grad()
def test_the_network_without_batchnorm_has_none_and_starts_each_block_as_its_shortcut():
    torch.manual_seed(0)
    resnet = models.build("resnet18", num_classes=8)
    torch.manual_seed(0)
    nobn = models.build("resnet18_nobn", num_classes=8).eval()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in nobn.modules())
    convs = [n for n, m in nobn.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == [n for n, m in resnet.named_modules() if isinstance(m, nn.Conv2d)]
    # same seed, same starting convolutions, but for the last of each block, which starts at zero
    for name in convs:
        mine, theirs = nobn.get_submodule(name).weight, resnet.get_submodule(name).weight
        assert torch.equal(mine, torch.zeros_like(mine) if name.endswith("conv2") else theirs)
    x = torch.rand(2, 64, 12, 12)  # after a ReLU: not negative
    assert torch.equal(nobn.layer1[0](x), x)  # so a block passes on its input, unchanged
    assert nobn(torch.randn(2, 3, 48, 48)).shape == (2, 8)
    assert models.catalog.get("resnet18_nobn").family == "ResNet without BatchNorm"
    assert models.catalog.get("resnet34_plain").family == "Plain (no shortcuts)"


def test_the_variants_have_no_weights_to_download_and_train_from_scratch_quietly(tmp_path):
    """A real (tiny) comparison of both variants, through the engine's normal path: built, trained for one epoch,
    saved and reloaded; offline, nothing complains about weights they never had."""
    assert not models.pretrained_available("resnet18_plain")  # asked for: an error, never a silent random start
    ds = data.load_dataset("shapes", work_dir=tmp_path / "data", shapes_per_class=6, seed=0)
    entry = ModelEntry(model="resnet18", freeze="none")
    settings = TrainSettings(epochs=1, size=32, batch_size=16, lr=1e-3, optimizer="adam", device="cpu")
    plan = compare.Plan.parse("resnet18_plain@none\nresnet18_nobn@none", model_defaults=entry, settings=settings)
    results = compare.run_comparison(plan, ds, out_dir=tmp_path / "runs")
    x, y = placement.cached_tensors(ds.val, 32, "bilinear")
    for r in results:
        assert r.error is None and not r.warnings and r.final_epoch == 1, (r.label, r.error, r.warnings)
        assert r.weights_source.startswith("random") and torch.isfinite(torch.tensor(r.history[-1]["train_loss"]))
        model = runs.load_run(r.run_dir).load_model().eval()
        cfg = models.data_config(model, 32)
        with torch.no_grad():
            logits = model(training.model_inputs(x, training.Normalizer(cfg["mean"], cfg["std"]), 32))
        assert 100 * (logits.argmax(1) == y).float().mean().item() == pytest.approx(r.val_top1, abs=1e-4)
