"""Where pretrained weights come from, and whether they can be had here: downloads on or off, hosts
reachable, files already in the local caches, and how a person gets a model's weights elsewhere.

Nothing here builds a model: `build` asks this module, never the other way round.
"""

from __future__ import annotations

import functools
import socket

from ..env import Env
from ..errors import WeightsUnavailableError, first_line
from . import catalog

__all__ = [
    "offline",
    "can_download",
    "weights_downloadable",
    "timm_cached_file",
    "offline_message",
    "weights_hint",
    "weights_source_hint",
    "tv_url",
    "hub_id",
]


def offline() -> bool:
    """True when downloads are switched off (CNNCOMPARE_OFFLINE=1 or HF_HUB_OFFLINE=1)."""
    return Env.read().offline


@functools.cache
def _reachable(host: str) -> bool:
    # One quick connection attempt, so that no network fails in seconds rather than after the
    # Hub client's minute of retries.
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def can_download(host: str) -> bool:
    """Downloads are on and `host` answers."""
    return not offline() and _reachable(host)


def weights_downloadable() -> bool:
    """Whether pretrained weights can be fetched now (downloads on and the Hub reachable)."""
    return can_download("huggingface.co")


def timm_cached_file(backend_name: str) -> str | None:
    """Path of the model's weights in the local Hugging Face cache, if downloaded before."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.get_pretrained_cfg(backend_name)
    hub = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub, filename)
        if isinstance(path, str):
            return path
    return None


def offline_message(what: str, err: Exception) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Could not get pretrained weights for {what} ({type(err).__name__}: {first_line(err)[:160]}). "
        "Without network access, pass a local weights file (--weights PATH / 'weights file' in the app) "
        "or train from scratch (pretrained off)."
    )


def tv_url(info: catalog.ArchInfo) -> str:
    """The download URL of a torchvision-trained model's weights."""
    from torchvision import models as tvm

    return tvm.get_model_weights(info.tv_model)[info.tv_weights].url


def hub_id(info: catalog.ArchInfo) -> str | None:
    """The Hugging Face repository of a timm model's default weights, if it has one."""
    import timm

    try:
        cfg = timm.get_pretrained_cfg(info.backend_name)
    except Exception:
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg else None


def weights_source_hint(name: str) -> str:
    """Where a model's ImageNet weights file comes from, in a few words (for error messages)."""
    info = catalog.get(name)
    if info.backend == "torchvision":
        return f"the file {tv_url(info).rsplit('/', 1)[-1]} from download.pytorch.org"
    hub = hub_id(info)
    return f"the file model.safetensors of huggingface.co/{hub}" if hub else f"timm's {info.backend_name}"


def weights_hint(name: str) -> str:
    """How to get a model's ImageNet weights on a machine with internet, as one Markdown sentence to show offline.

    Correct for both backends: torchvision's AlexNet/GoogLeNet (their .pth from download.pytorch.org)
    and timm's models (model.safetensors of their Hugging Face page, e.g. timm/resnet50.tv_in1k, or
    for those trained by torchvision its .pth too: both formats load).
    """
    info = catalog.get(name)
    if info.backend == "torchvision":
        url = tv_url(info)
        cmd = (
            f'python -c "import torch, torchvision; torch.save(torchvision.models.{info.tv_model}'
            f"(weights='{info.tv_weights}').state_dict(), '{info.name}.pth')\""
        )
        return (
            f"To use {info.name}'s ImageNet weights here, download them on a machine with internet ({url}, or "
            f"`{cmd}`) and upload the file here."
        )
    hub = hub_id(info)
    cmd = (
        f"python -c \"import timm, safetensors.torch as st; st.save_file(timm.create_model('{info.backend_name}', "
        f"pretrained=True).state_dict(), '{info.name}.safetensors')\""
    )
    where = f"from https://huggingface.co/{hub} (file model.safetensors)" if hub else f"with `{cmd}`"
    also = f", or with `{cmd}`" if hub else ""
    tv = f"; torchvision's {tv_url(info)} works too" if info.tv_model and info.backend_name.endswith(".tv_in1k") else ""
    return (
        f"To use {info.name}'s ImageNet weights here, download them on a machine with internet {where}{also}"
        f"{tv}, then upload the file here."
    )
