"""CIFAR-10 and CIFAR-100, read from their own "python version" files without trusting them.

The files are Python pickles. torchvision reads them with `pickle.load`, which runs whatever code a pickle
names; that is fine for the archive it downloaded and checked against its published MD5, but not for a
folder someone put in place, or an archive a visitor uploads (`cifar-10-python.tar.gz`). So the batches are
read here with an unpickler that builds only plain containers and numpy arrays, and anything else is refused
in one sentence. Downloading (when the network allows) is torchvision's: its URL, MD5 check and extraction.

The folders live in the persistent data folder (`<data_dir>/cifar/cifar-10-batches-py`), so a dataset
downloaded once is read from there by every later run.
"""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DataError

__all__ = ["CIFAR", "CifarSpec", "read_cifar", "download_cifar", "unpack_archive", "archive_kind", "unpacked_bytes"]


@dataclass(frozen=True)
class CifarSpec:
    key: str  # cifar10 | cifar100
    label: str  # CIFAR-10
    folder: str  # the folder the archive unpacks to
    archive: str  # the archive's file name
    train: tuple[str, ...]
    test: str
    meta: str
    names_key: str  # the class names in the meta file
    labels_key: str  # the labels in a batch


CIFAR = {
    "cifar10": CifarSpec(
        "cifar10",
        "CIFAR-10",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "label_names",
        "labels",
    ),
    "cifar100": CifarSpec(
        "cifar100",
        "CIFAR-100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("train",),
        "test",
        "meta",
        "fine_label_names",
        "fine_labels",
    ),
}

_ALLOWED = {  # what a CIFAR pickle may name: numpy's array reconstruction and nothing else
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
MAX_BATCH_BYTES = 400 * 2**20  # one batch file (CIFAR-100's train file is 155 MB)
# An uploaded archive is read member by member from a gzip stream (its listing is not at its start): at most
# MAX_MEMBERS headers are read (CIFAR's archives hold 8 and 5 members), and each of the dataset's files may be at
# most its published size plus a margin (CIFAR-10's batches are 31,035,704 bytes; CIFAR-100's train file 155 MB).
MAX_MEMBERS = 64
FILE_BYTES = {"cifar10": 32 * 2**20, "cifar100": 160 * 2**20}  # one data file at most
META_BYTES = 2**20


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR file")


def _load(path: Path, label: str) -> dict:
    try:
        if path.stat().st_size > MAX_BATCH_BYTES:
            raise DataError(f"'{path.name}' is larger than any {label} file: it is not {label}.")
        with path.open("rb") as f:
            out = _SafeUnpickler(f, encoding="bytes").load()
    except DataError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as err:
        raise DataError(
            f"'{path.name}' is not a {label} file ({type(err).__name__}): use the 'python version' of the "
            "dataset as its authors publish it."
        ) from None
    if not isinstance(out, dict):
        raise DataError(f"'{path.name}' is not a {label} file: it holds no dictionary of images.")
    # the published files were pickled by Python 2 (their keys read as bytes); a re-saved copy has str keys
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in out.items()}


def _batch(path: Path, spec: CifarSpec) -> tuple[np.ndarray, list[int]]:
    d = _load(path, spec.label)
    data, labels = d.get("data"), d.get(spec.labels_key)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise DataError(f"'{path.name}' is not a {spec.label} batch: its images are not 3,072 values each.")
    if len(labels) != len(data):
        raise DataError(f"'{path.name}' is damaged: it has {len(data)} images and {len(labels)} labels.")
    if data.dtype != np.uint8:  # object arrays, floats (NaN included): not CIFAR's bytes, and not decoded here
        raise DataError(f"'{path.name}' is not a {spec.label} batch: its pixels are {data.dtype}, not bytes (uint8).")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, [int(x) for x in labels]


def read_cifar(spec: CifarSpec, folder: Path) -> tuple[list[str], tuple, tuple]:
    """(class names, (train images, train labels), (test images, test labels)) from an extracted folder.

    Raises:
        DataError: a missing or unreadable file, named in one sentence.
    """
    missing = [n for n in (*spec.train, spec.test, spec.meta) if not (folder / n).is_file()]
    if missing:
        raise DataError(f"'{folder}' has no '{missing[0]}': it is not a whole {spec.label} folder.")
    names = [
        n.decode() if isinstance(n, bytes) else str(n) for n in _load(folder / spec.meta, spec.label)[spec.names_key]
    ]
    parts = [_batch(folder / n, spec) for n in spec.train]
    train = (np.concatenate([p[0] for p in parts]), [y for p in parts for y in p[1]])
    test = _batch(folder / spec.test, spec)
    bad = [y for y in train[1] + test[1] if not 0 <= y < len(names)]
    if bad:
        raise DataError(f"{spec.label} labels go up to {max(bad)}, but there are {len(names)} class names.")
    return names, train, test


def download_cifar(spec: CifarSpec, root: Path) -> None:
    """Download and extract the archive into `root` with torchvision (its URL and MD5 check)."""
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if spec.key == "cifar10" else tvd.CIFAR100
    cls(root=str(root), train=True, download=True)


def archive_kind(path: str | Path) -> str | None:
    """'cifar10' or 'cifar100' when the file is one of CIFAR's own archives (by its name and its contents)."""
    name = Path(path).name.lower()
    for key, spec in CIFAR.items():
        if name == spec.archive or (name.endswith((".tar.gz", ".tgz")) and spec.folder in name):
            return key
    return None


class _Capped(io.RawIOBase):
    """A stream that refuses to give more than `cap` bytes: everything a tar reader decompresses counts (headers
    too, and members of other names that are skipped), so an archive costs at most its dataset's size in work."""

    def __init__(self, raw, cap: int, why: str):
        self.raw, self.cap, self.why, self.seen = raw, cap, why, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.raw.readinto(b)
        self.seen += n or 0
        if self.seen > self.cap:
            raise DataError(self.why)
        return n


def unpacked_bytes(spec: CifarSpec) -> int:
    """The most an uploaded archive of this dataset may write (each file at its bound): what is counted against the
    visitor's quota before it is unpacked."""
    return (len(spec.train) + 1) * FILE_BYTES[spec.key] + META_BYTES


def unpack_archive(path: Path, spec: CifarSpec, dest: Path) -> Path:
    """Extract the dataset's own files (and nothing else) from an uploaded CIFAR archive into `dest/<folder>`.

    Only regular files named as the dataset names them are written, each under MAX_BATCH_BYTES: a link, a path
    that leaves the folder, or a member of another name is never extracted.

    Raises:
        DataError: not a readable .tar.gz, or one without the dataset's files.
    """
    wanted = {f"{spec.folder}/{n}" for n in (*spec.train, spec.test, spec.meta)}
    target = dest / spec.folder
    too_big = (
        f"'{path.name}' unpacks to more than {spec.label}'s own archive: upload {spec.label}'s own {spec.archive}."
    )
    tmp = Path(tempfile.mkdtemp(prefix=".cifar-", dir=dest))
    try:
        with (
            gzip.open(path) as gz,
            tarfile.open(fileobj=_Capped(gz, unpacked_bytes(spec) + 2**20, too_big), mode="r|") as tar,
        ):
            for n, member in enumerate(tar):
                if n >= MAX_MEMBERS:
                    raise DataError(
                        f"'{path.name}' holds more than {MAX_MEMBERS} files: it is not {spec.label}'s own "
                        f"{spec.archive} (which holds {len(wanted) + 2})."
                    )
                bound = META_BYTES if member.name.endswith("/" + spec.meta) else FILE_BYTES[spec.key]
                if member.name not in wanted or not member.isfile():
                    continue
                if member.size > bound:
                    raise DataError(
                        f"'{path.name}' has a '{Path(member.name).name}' of {member.size / 2**20:,.0f} MB, larger "
                        f"than {spec.label}'s own: upload {spec.label}'s own {spec.archive}."
                    )
                src = tar.extractfile(member)
                with src, (tmp / Path(member.name).name).open("wb") as out:
                    shutil.copyfileobj(io.BufferedReader(src), out)
        got = {f"{spec.folder}/{p.name}" for p in tmp.iterdir()}
        if got != wanted:
            first = sorted(wanted - got)[0]
            raise DataError(f"'{path.name}' has no '{first}': upload {spec.label}'s own {spec.archive}.")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        return target
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as err:
        raise DataError(
            f"'{path.name}' is not a readable .tar.gz ({type(err).__name__}): upload {spec.archive}."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
