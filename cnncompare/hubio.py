"""Exports to and from the Hugging Face Hub: push an export folder to a model repository, and start a new
fine-tuning run from an export (a local folder, `local-dir:PATH`, or a Hub repository, `hf-hub:OWNER/NAME`).

An export starts a run the way a weights file does (`ModelEntry.weights_file`, read safely and checked against the
architecture's layout; a classifier for another number of classes stays new), so everything that keeps a weights
file from the web keeps an export from the web too. Only the command line takes these names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import CNNCompareError, first_line
from .models import catalog, hub

__all__ = ["EXPORT_PREFIXES", "is_export_ref", "export_weights", "as_weights_run", "push_folder"]

EXPORT_PREFIXES = ("local-dir:", "hf-hub:")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def is_export_ref(name: str) -> bool:
    return str(name).strip().startswith(EXPORT_PREFIXES)


def _repo_id(repo: str) -> str:
    repo = repo.strip()
    if not _REPO.match(repo):
        raise CNNCompareError(
            f"'{repo[:80]}' is not a Hub repository name: write OWNER/NAME (e.g. me/resnet18-shapes)."
        )
    return repo


def export_weights(ref: str) -> tuple[str, Path]:
    """(the catalog's model name, the weights file) of an export: `local-dir:PATH` or `hf-hub:OWNER/NAME`.

    Raises:
        CNNCompareError: not an export folder, no safetensors weights in it, or the Hub out of reach, in one sentence.
    """
    kind, _, where = ref.strip().partition(":")
    if kind == "local-dir":
        folder = Path(where).expanduser()
        config_file, weights = folder / "config.json", folder / "model.safetensors"
    else:
        config_file, weights = _download(_repo_id(where))
    try:
        config = json.loads(Path(config_file).read_text())
        arch = config["architecture"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CNNCompareError(
            f"{ref[:120]} is not an export (no readable config.json naming its architecture)."
        ) from None
    if not Path(weights).is_file():
        raise CNNCompareError(f"{ref[:120]} holds no model.safetensors (exported as ONNX only?): export it again.")
    name = config.get("model") or str(arch).partition(".")[0]
    catalog.get(name)  # an architecture this version knows (its blocks, freeze policies and layout)
    return name, Path(weights)


def _download(repo: str) -> tuple[str, str]:
    if hub.offline():
        raise CNNCompareError(
            f"hf-hub:{repo} needs a download, and downloads are off (offline): download the repository's folder "
            "elsewhere and use local-dir:PATH."
        )
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, "config.json"), hf_hub_download(repo, "model.safetensors")
    except Exception as err:  # the Hub's own errors: not found, private, no network
        raise CNNCompareError(
            f"Could not download hf-hub:{repo} ({type(err).__name__}: {first_line(err)[:160]})."
        ) from None


def as_weights_run(item: str) -> str:
    """One line of a comparison, with an export in place of the model ('local-dir:PATH@head lr=0.01'), as the run
    it means: the export's architecture, started from its weights ('resnet18@head lr=0.01 pretrained=true
    weights_file=…'). Other lines are returned as they are."""
    first, *rest = item.split()
    if not first or not is_export_ref(first):
        return item
    ref, at, policy = first.rpartition("@") if "@" in first.partition(":")[2] else (first, "", "")
    name, weights = export_weights(ref)
    return " ".join([f"{name}{at}{policy}", *rest, "pretrained=true", f"weights_file={weights}"])


def push_folder(folder: Path, repo: str, *, private: bool = False) -> str:
    """Upload an export folder to the Hub model repository `repo` (created when missing) with the user's own token;
    returns the repository's address.

    Raises:
        CNNCompareError: offline, no token, or the Hub refused, in one sentence (the export on disk is kept).
    """
    repo = _repo_id(repo)
    if hub.offline():
        raise CNNCompareError(
            f"Not pushed to {repo}: downloads and uploads are off (offline). The export is in {folder}."
        )
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model", commit_message="cnncompare export")
    except Exception as err:  # no token, no network, no rights: the Hub's own errors
        hint = (
            " (log in first: `huggingface-cli login`, or set HF_TOKEN)"
            if "401" in str(err) or "token" in str(err).lower()
            else ""
        )
        raise CNNCompareError(
            f"Not pushed to {repo}{hint}: {type(err).__name__}: {first_line(err)[:160]}. The export is in {folder}."
        ) from None
    return str(url)
