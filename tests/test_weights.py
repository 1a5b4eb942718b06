"""Own weights: files read safely, checked against the model with readable sentences, uploaded through the app's
real API into the visitor's own folder, and used by the real model builder (what fine-tuning and Predict call)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import urllib.request
import uuid

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from cnncompare import models
from cnncompare.env import Env
from cnncompare.errors import WeightsUnavailableError

KEY_A = "A" * 10 + "-visitor-key-of-alice"
KEY_B = "B" * 10 + "-visitor-key-of-bobby"


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 64) -> bool:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


def test_a_state_dict_saved_as_safetensors_or_pth_loads_and_gives_the_same_outputs(tmp_path):
    torch.manual_seed(1)
    src = models.build("resnet18")
    save_file(src.state_dict(), tmp_path / "resnet18.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, tmp_path / "r.pth")
    for f in ("resnet18.safetensors", "r.pth"):  # a wrapped DataParallel checkpoint unwraps too
        model = models.build("resnet18", pretrained=True, weights_file=str(tmp_path / f))
        assert _same_outputs(model, src)
        assert model.cnncompare.weights_source == f"file: {f}"  # the file's name, never a server path
    # torchvision's own VGG layout (classifier.0 a Linear) loads into timm's VGG (pre_logits.fc1 a 7x7 conv)
    tv = torchvision.models.vgg11(weights=None)
    torch.save(tv.state_dict(), tmp_path / "vgg11-tv.pth")
    assert _same_outputs(models.build("vgg11", pretrained=True, weights_file=str(tmp_path / "vgg11-tv.pth")), tv)
    # fine-tuning: the classifier is replaced, so a file with a classifier of another class count starts one
    ten = models.build("resnet18", num_classes=10).state_dict()
    save_file(ten, tmp_path / "ten.safetensors")
    tuned = models.build("resnet18", pretrained=True, num_classes=3, weights_file=str(tmp_path / "ten.safetensors"))
    assert torch.equal(tuned.layer4[1].conv2.weight, ten["layer4.1.conv2.weight"]) and tuned.fc.out_features == 3


def test_a_file_that_does_not_fit_gets_one_readable_sentence(tmp_path):
    save_file(models.build("resnet50").state_dict(), tmp_path / "r50.safetensors")
    with pytest.raises(WeightsUnavailableError) as err:
        models.build("resnet18", pretrained=True, num_classes=4, weights_file=str(tmp_path / "r50.safetensors"))
    text = str(err.value)
    assert text.startswith("The weights in r50.safetensors do not fit resnet18 (they look like resnet50's)")
    assert "resnet18 expects 102" in text and "first: layer1.0.bn3" in text and "\n" not in text
    assert str(tmp_path) not in text  # the file by its name, not its place on the server

    sd = models.build("resnet18").state_dict()
    sd["layer4.1.conv2.weight"] = torch.zeros(256, 512, 3, 3)
    with pytest.raises(
        WeightsUnavailableError,
        match="layer shapes differ: layer4.1.conv2.weight is 512×512×3×3 in resnet18, 256×512×3×3 in the file",
    ):
        models.check_weights(
            "resnet18", sd, models.layout("resnet18"), known=models.known_layouts, num_classes=4, file_name="odd.pth"
        )
    # a torchvision-format VGG file offered to ResNet is recognised as VGG's
    with pytest.raises(WeightsUnavailableError, match=r"they look like vgg11's"):
        models.check_weights(
            "resnet18",
            torchvision.models.vgg11(weights=None).state_dict(),
            models.layout("resnet18"),
            known=models.known_layouts,
            file_name="v.pth",
        )
    # predicting ImageNet classes needs ImageNet's classifier
    ten = models.build("resnet18", num_classes=10).state_dict()
    with pytest.raises(WeightsUnavailableError, match="classifier of 10 classes, not ImageNet's 1000"):
        models.check_weights("resnet18", ten, models.layout("resnet18"), num_classes=1000, file_name="ten.pth")
    # AlexNet and GoogLeNet take torchvision's format: a GoogLeNet file in AlexNet says so
    g = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict()
    with pytest.raises(WeightsUnavailableError, match="do not fit alexnet.*Give torchvision's alexnet weights"):
        models.check_weights(
            "alexnet", g, models.layout("alexnet"), known=models.known_layouts, file_name="googlenet.pth"
        )


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # what a malicious pickle does: run code while it is read
        return (open, (self.marker, "w"))


def test_a_pickle_that_holds_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(WeightsUnavailableError, match="evil.pth holds Python objects besides weights"):
        models.build("resnet18", pretrained=True, weights_file=str(tmp_path / "evil.pth"))
    assert not marker.exists()
    (tmp_path / "junk.safetensors").write_bytes(b"not a weights file at all")
    with pytest.raises(WeightsUnavailableError, match="Could not read junk.safetensors as a weights file"):
        models.read_weights(tmp_path / "junk.safetensors")


def test_the_hint_names_the_right_source_for_each_backend():
    assert "download.pytorch.org/models/alexnet-owt-7be5be79.pth" in models.weights_hint("alexnet")
    assert "torchvision.models.googlenet(weights='IMAGENET1K_V1')" in models.weights_hint("googlenet")
    r50 = models.weights_hint("resnet50")
    assert "huggingface.co/timm/resnet50.tv_in1k" in r50 and "model.safetensors" in r50
    assert "timm.create_model('resnet50.tv_in1k', pretrained=True)" in r50
    assert "download.pytorch.org" not in models.weights_hint("efficientnet_b0")  # timm's own weights only


# --------------------------------------------------------------------------- through the app's API


def _call_raw(url: str, api_name: str, data: list) -> tuple[str, str]:
    """POST a raw payload (no gradio_client upload) and read the event stream: (event kind, its text)."""
    base = f"{url}gradio_api/call/{api_name}"
    body = json.dumps({"data": data}).encode()
    req = urllib.request.Request(base, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        event_id = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{base}/{event_id}", timeout=120) as r:
        text = r.read().decode()
    kind = last = ""
    for line in text.splitlines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            last = line.split(":", 1)[1]
    return kind, last


@pytest.fixture(scope="module")
def weights_app(tmp_path_factory):
    """The weights panel in a Blocks of its own, with the app's visitor key, on a free port."""
    import gradio as gr
    from conftest import free_port

    from cnncompare.server import visitors
    from cnncompare.ui import weights as wui
    from cnncompare.ui.common import Context

    root = tmp_path_factory.mktemp("runs")
    ctx = Context.from_env(root, dataclasses.replace(Env.read(), visitor_quota_mb=60.0))
    with gr.Blocks() as demo:
        ctx.visitor_state = gr.BrowserState(None, storage_key="cc-test", secret=visitors.browser_secret(ctx))
        wui.build(ctx)
    port = free_port()
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True, show_error=True
    )
    try:
        yield ctx, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_an_upload_is_checked_stored_for_its_visitor_only_and_used_by_the_builder(weights_app, tmp_path):
    from gradio_client import Client, handle_file

    from cnncompare.server import visitors
    from cnncompare.ui import weights as wui

    ctx, url = weights_app
    client = Client(url, analytics_enabled=False, verbose=False)
    torch.manual_seed(2)
    src = models.build("resnet18")
    torch.save(src.state_dict(), tmp_path / "my-resnet18.pth")
    status, table = client.predict(
        "resnet18", handle_file(str(tmp_path / "my-resnet18.pth")), KEY_A, api_name="/upload_weights"
    )
    assert "Stored **my-resnet18.pth**" in status and "Predict use" in status
    assert [r[0] for r in table["data"]] == ["resnet18"]
    alice, bob = visitors.resolve(KEY_A), visitors.resolve(KEY_B)
    path = wui.weights_for(ctx, alice, "resnet18", imagenet=True)
    assert path and path.startswith(str(visitors.visitor_dir(ctx, alice)))
    # what fine-tuning and Predict build from it: the same network
    assert _same_outputs(models.build("resnet18", pretrained=True, weights_file=path), src)
    # nobody else sees or gets it
    assert wui.weights_for(ctx, bob, "resnet18") is None and wui.listing(ctx, bob) == []

    # a file for another model: one sentence, nothing stored
    save_file(models.build("efficientnet_b0").state_dict(), tmp_path / "b0.safetensors")
    status, _ = client.predict(
        "resnet18", handle_file(str(tmp_path / "b0.safetensors")), KEY_B, api_name="/upload_weights"
    )
    assert "do not fit resnet18 (they look like efficientnet_b0's)" in status
    assert wui.weights_for(ctx, bob, "resnet18") is None

    # a path on the server (here: alice's stored file) is refused like any other non-upload
    for payload in ({"path": path}, {"path": path, "meta": {"_type": "gradio.FileData"}}, path):
        kind, text = _call_raw(url, "upload_weights", ["resnet18", payload, KEY_B])
        assert kind == "error" and ("only files uploaded" in text or "not uploaded by a user" in text), text
    assert wui.weights_for(ctx, bob, "resnet18") is None

    # over the visitor's quota (60 MB here; resnet50 is about 98 MB)
    save_file(models.build("resnet50").state_dict(), tmp_path / "r50.safetensors")
    status, _ = client.predict(
        "resnet50", handle_file(str(tmp_path / "r50.safetensors")), KEY_A, api_name="/upload_weights"
    )
    assert "your files already use" in status and "of your 60 MB" in status, status  # refused before it is written
    assert wui.weights_for(ctx, alice, "resnet50") is None

    status, table = client.predict("resnet18", KEY_A, api_name="/remove_weights")
    assert "Removed your weights for resnet18" in status and table["data"] == []
    assert wui.weights_for(ctx, alice, "resnet18") is None


def test_a_file_with_another_classifier_is_kept_for_fine_tuning_only(weights_app, tmp_path):
    from cnncompare.server import visitors
    from cnncompare.ui import weights as wui
    from cnncompare.ui.uploads import upload_folder

    ctx, _ = weights_app
    who = visitors.resolve("C" * 10 + "-visitor-key-of-carol")
    folder = upload_folder() / f"test-{uuid.uuid4().hex}"  # where gradio keeps uploads
    folder.mkdir(parents=True)
    try:
        save_file(models.build("resnet18", num_classes=5).state_dict(), folder / "five.safetensors")
        text = wui.store(ctx, who, "resnet18", str(folder / "five.safetensors"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert "Predict does not use it" in text
    assert wui.weights_for(ctx, who, "resnet18") and wui.weights_for(ctx, who, "resnet18", imagenet=True) is None
    assert wui.listing(ctx, who)[0]["Predict"].startswith("no")
