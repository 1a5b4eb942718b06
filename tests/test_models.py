"""Catalog, building, blocks and freezing on real models (meta device where only shapes matter)."""

import pytest
import torch
import torchvision
from torch import nn

from cnncompare import models
from cnncompare.errors import CNNCompareError, UnknownModelError, WeightsUnavailableError
from cnncompare.models import catalog
from cnncompare.models.builder import _runs_at


def test_catalog_has_the_classics_and_their_descendants():
    required = [
        "alexnet",
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
        "vgg11_bn",
        "vgg13_bn",
        "vgg16_bn",
        "vgg19_bn",
        "googlenet",
        "inception_v3",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "wide_resnet50_2",
        "densenet121",
        "mobilenetv3_large_100",
        "efficientnet_b0",
        "convnext_tiny",
    ]
    assert set(required) <= set(catalog.names())
    for name in required:
        e = catalog.get(name)
        assert e.year and e.paper and len(e.idea.split(". ")) >= 2
    assert catalog.get("alexnet").backend == "torchvision"
    assert catalog.get("googlenet").backend == "torchvision"
    assert catalog.get("vgg16").backend == "timm"


def test_years_follow_the_papers_and_inception_v3_says_why_it_is_smaller():
    years = {n: catalog.get(n).year for n in ("alexnet", "vgg16", "googlenet", "inception_v3", "resnet50")}
    assert years == {"alexnet": 2012, "vgg16": 2014, "googlenet": 2014, "inception_v3": 2015, "resnet50": 2015}
    v3 = catalog.get("inception_v3")
    assert "Rethinking the Inception Architecture" in v3.paper and v3.default_size == 299
    assert "23.8 M" in v3.notes and "27.2 M" in v3.notes and "auxiliary classifier" in v3.notes
    assert v3.to_dict()["year"] == 2015 and "Going Deeper" in catalog.get("googlenet").paper
    params, _ = models.count_params(models.build("inception_v3", device="meta"))
    assert round(params / 1e6, 1) == 23.8


def test_reference_accuracy_comes_from_torchvision_metadata():
    ref = catalog.get("resnet50").reference
    meta = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta
    assert ref.top1 == meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert ref.top5 == meta["_metrics"]["ImageNet-1K"]["acc@5"]
    # timm-only weights: the package publishes no accuracy, so none is shown
    assert catalog.get("convnext_tiny").reference is None


def _inception_aux_params() -> int:
    with torch.device("meta"):
        tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    return sum(p.numel() for p in tv.AuxLogits.parameters())


@pytest.mark.parametrize(
    "name,size", [("alexnet", 224), ("vgg16", 224), ("googlenet", 224), ("resnet50", 224), ("inception_v3", 299)]
)
def test_params_and_macs_match_torchvision_published(name, size):
    from cnncompare.profiling import count_macs

    meta = torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta
    model = models.build(name, device="meta")
    params, trainable = models.count_params(model)
    expected = meta["num_params"]
    if name == "inception_v3":  # like with like: torchvision's count includes the AuxLogits head
        expected -= _inception_aux_params()
    assert params == expected == trainable
    macs = count_macs(name, size)
    assert abs(macs / (meta["_ops"] * 1e9) - 1) < 0.005


@pytest.mark.parametrize("name", catalog.names())
def test_min_size_is_the_smallest_that_runs(name):
    info = catalog.get(name)
    assert _runs_at(name, info.min_size)
    if info.min_size > catalog.FLOOR_SIZE:
        assert not _runs_at(name, info.min_size - 1)


def test_any_timm_model_by_name_gets_an_entry_and_a_probed_min_size():
    info = catalog.get("regnetx_002")
    assert not info.in_catalog and info.family == "other" and info.default_size == 224
    assert models.min_input_size("regnetx_002") >= catalog.FLOOR_SIZE
    groups = models.blocks(models.build("regnetx_002", device="meta"), 64)
    assert groups[-1].kind == "head" and groups[0].kind == "stem"


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownModelError, match="resnet50"):
        catalog.get("resnt50")


def test_input_size_too_small_is_a_clear_error():
    with pytest.raises(CNNCompareError, match="at least 75"):
        models.check_input_size("inception_v3", 32)
    with pytest.raises(CNNCompareError, match="at least 63"):
        models.check_input_size("alexnet", 48)


@pytest.mark.parametrize(
    "name,n_stages",
    [
        ("alexnet", 3),
        ("vgg16", 4),
        ("googlenet", 4),
        ("inception_v3", 4),
        ("resnet50", 4),
        ("densenet121", 4),
        ("efficientnet_b0", 4),
        ("convnext_tiny", 4),
    ],
)
def test_blocks_cover_every_parameter_once(name, n_stages):
    model = models.build(name, device="meta", num_classes=7)
    groups = models.blocks(model)
    total, _ = models.count_params(model)
    assert sum(g.params for g in groups) == total
    names = [n for g in groups for n in g.modules]
    assert len(names) == len(set(names))
    assert sum(g.kind == "stage" for g in groups) == n_stages
    assert groups[-1].name == "head" and groups[-1].out_shape == (7,)


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "googlenet", "resnet18", "mobilenetv3_large_100"])
def test_trainable_params_strictly_decrease_with_more_frozen_stages(name):
    counts = []
    n_stages = sum(g.kind == "stage" for g in models.blocks(models.build(name, device="meta")))
    for k in range(n_stages + 1):
        model = models.build(name, device="meta", num_classes=5)
        models.freeze(model, f"stages:{k}")
        counts.append(models.count_params(model)[1])
    assert all(a > b for a, b in zip(counts, counts[1:])), counts
    with pytest.raises(CNNCompareError, match="stages"):
        models.freeze(models.build(name, device="meta"), f"stages:{n_stages + 1}")


@pytest.mark.parametrize(
    "name,head",
    [("resnet18", "linear"), ("vgg16", "linear"), ("vgg16", "mlp"), ("alexnet", "mlp"), ("googlenet", "linear")],
)
def test_head_policy_leaves_only_the_classifier_trainable(name, head):
    model = models.build(name, device="meta", num_classes=4, head=head)
    models.freeze(model, "head")
    heads = tuple(model.cnncompare.head_modules)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(heads) for n in trainable)
    head_params = sum(p.numel() for h in heads for p in model.get_submodule(h).parameters())
    assert models.count_params(model)[1] == head_params


def test_mlp_head_is_the_classic_4096_4096_classifier():
    model = models.build("resnet18", num_classes=3, head="mlp")
    mlp = model.get_classifier()
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 4096), (4096, 4096), (4096, 3)]
    assert [m.p for m in mlp.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    vgg = models.build("vgg16", num_classes=3, head="mlp", device="meta")
    head = [g for g in models.blocks(vgg) if g.kind == "head"][0]
    assert head.params == 512 * 7 * 7 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 3 + 3


def test_frozen_batchnorm_keeps_statistics_and_frozen_weights_get_no_gradient():
    torch.manual_seed(0)
    model = models.build("resnet18", num_classes=3)
    frozen = models.freeze(model, "stages:2")
    assert "layer2.0.bn1" in frozen and "layer3.0.bn1" not in frozen
    frozen_bn, live_bn = model.get_submodule("layer2.0.bn1"), model.get_submodule("layer3.0.bn1")
    before_frozen = frozen_bn.running_mean.clone()
    before_live = live_bn.running_mean.clone()
    model.train()
    out = model(torch.randn(4, 3, 64, 64) * 3 + 1)
    out.sum().backward()
    assert torch.equal(frozen_bn.running_mean, before_frozen)
    assert not torch.equal(live_bn.running_mean, before_live)  # a real train-mode pass did happen
    assert model.conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is None
    assert model.layer3[0].conv1.weight.grad is not None and model.fc.weight.grad is not None


def test_layers_policy_freezes_the_first_weight_layers_like_keras():
    model = models.build("vgg16_bn", num_classes=2, device="meta")
    layers = models.weight_layers(model)
    assert len(layers) == 16  # VGG16: 13 conv + 3 fully connected weight layers
    assert all(len(layer) == 2 for layer in layers[:13])  # conv + its BatchNorm
    frozen = models.freeze(model, "layers:10")  # = Keras' layers[:15]: conv blocks 1-4
    assert frozen == [n for layer in layers[:10] for n in layer]
    groups = {g.name: g for g in models.blocks(model)}
    assert all(groups[s].frozen for s in ("stem", "stage1", "stage2", "stage3"))
    assert groups["stage4"].trainable == groups["stage4"].params


def test_bad_policy_and_spec_are_clear_errors():
    with pytest.raises(CNNCompareError, match="freeze policy"):
        models.FreezePolicy.parse("stages")
    with pytest.raises(CNNCompareError, match="head"):
        models.build("resnet18", head="conv", device="meta")


def test_init_schemes_follow_their_formulas():
    torch.manual_seed(0)
    he = models.build("vgg11", num_classes=10, init="he")
    glorot = models.build("vgg11", num_classes=10, init="glorot")
    w_he, w_gl = he.features[3].weight, glorot.features[3].weight  # 64 -> 128, 3x3
    fan_in, fan_out = 64 * 9, 128 * 9
    assert abs(w_he.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.05
    assert abs(w_gl.std().item() / (2 / (fan_in + fan_out)) ** 0.5 - 1) < 0.05
    assert torch.count_nonzero(he.features[3].bias) == 0


def test_pretrained_offline_says_what_to_do():
    for name in ("resnet18", "alexnet"):
        with pytest.raises(WeightsUnavailableError, match="local weights file"):
            models.build(name, pretrained=True)


def test_local_weights_files_load_through_the_real_loaders(tmp_path):
    from safetensors.torch import save_file

    # timm: a 1000-class checkpoint as the Hub would serve it, loaded into a 4-class model
    src = models.build("resnet18")
    save_file(src.state_dict(), tmp_path / "resnet18.safetensors")
    model = models.build(
        "resnet18", pretrained=True, num_classes=4, weights_file=str(tmp_path / "resnet18.safetensors")
    )
    assert torch.equal(model.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    assert model.fc.out_features == 4 and model.cnncompare.weights_source.startswith("file:")
    # torchvision: GoogLeNet's published file includes the aux heads; they are dropped
    tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    torch.save(tv.state_dict(), tmp_path / "googlenet.pth")
    g = models.build("googlenet", pretrained=True, num_classes=2, weights_file=str(tmp_path / "googlenet.pth"))
    assert torch.equal(g.inception5b.branch1.conv.weight, tv.inception5b.branch1.conv.weight)
    assert g.transform_input and g(torch.randn(1, 3, 64, 64)).shape == (1, 2)
    # a file for another architecture is refused with a clear message
    with pytest.raises(WeightsUnavailableError, match="do not fit|Could not load"):
        models.build("alexnet", pretrained=True, weights_file=str(tmp_path / "googlenet.pth"))


def test_a_public_server_allows_the_catalog_and_small_timm_models_only():
    from cnncompare import models as m

    m.check_allowed("vgg19", max_params_m=1)  # catalog models always
    m.check_allowed("regnety_016", max_params_m=200)
    with pytest.raises(CNNCompareError, match="632 M parameters"):
        m.check_allowed("vit_huge_patch14_224", max_params_m=200)
    assert 46.7e6 < m.model_bytes(m.build("resnet18", device="meta")) < 46.9e6  # 11.69 M fp32 weights + BN stats
