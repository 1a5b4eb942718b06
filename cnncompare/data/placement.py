"""Where a run's images live while it trains: decoded in memory (on the GPU when they fit), or
streamed from their files when decoding them all would pass the memory budget.

Every placement yields the same batches (same order, same bytes), so where the data lives
changes the speed of a run, never its result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.utils.data

from ..env import Env
from . import base

__all__ = [
    "DeviceData",
    "StreamedData",
    "cached_tensors",
    "release_data",
    "place_split",
    "device_budget",
    "DEVICE_DATA_FRACTION",
]

DEVICE_DATA_FRACTION = 0.4  # decoded images go to the GPU when they fit in this share of its free memory


# Decoded tensors are shared by the runs of one comparison (same dataset, size, interpolation)
# and dropped by `release_data()` when the comparison ends.
_TENSOR_CACHE: dict[tuple, tuple[object, torch.Tensor, torch.Tensor]] = {}
_TENSOR_CACHE_SIZE = 2  # train + val of one comparison


def cached_tensors(ds, size: int, interpolation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images N x 3 x H x W, int64 labels) of a split, decoded once per comparison.

    Image files are decoded and resized to `size` once. Images already in memory (CIFAR) stay at
    their stored size (50,000 CIFAR images: 150 MB instead of 7.5 GB at 224 px) and each batch is
    resized on the device as it is used.
    """
    key = (id(ds), size, interpolation)
    hit = _TENSOR_CACHE.get(key)
    if hit is None or hit[0] is not ds:
        while len(_TENSOR_CACHE) >= _TENSOR_CACHE_SIZE:
            _TENSOR_CACHE.pop(next(iter(_TENSOR_CACHE)))
        if getattr(ds, "array", None) is not None:
            stored = torch.from_numpy(ds.array).permute(0, 3, 1, 2)  # a view: NHWC memory, NCHW shape
            hit = (ds, stored, torch.tensor(ds.labels, dtype=torch.int64))
        else:
            hit = (ds, *base.to_tensors(ds, size, interpolation))
        _TENSOR_CACHE[key] = hit
    return hit[1], hit[2]


def release_data() -> None:
    """Forget decoded datasets (call when a comparison ends, so its memory goes back)."""
    _TENSOR_CACHE.clear()


@dataclass
class DeviceData:
    """One split's images and labels where the loop reads them: on the device, or pinned in host memory."""

    x: torch.Tensor  # uint8 N x 3 x H x W
    y: torch.Tensor  # int64 N
    device: torch.device

    def __len__(self) -> int:
        return len(self.y)

    @property
    def on_device(self) -> bool:
        return self.x.device.type == self.device.type

    @property
    def index_device(self) -> torch.device:
        """Where batch indices should live: with the images, so no step waits for a copy."""
        return self.y.device if self.on_device else torch.device("cpu")

    @classmethod
    def place(cls, x: torch.Tensor, y: torch.Tensor, device: torch.device, budget_bytes: int) -> DeviceData:
        if device.type != "cuda":
            return cls(x, y, device)
        if x.numel() * x.element_size() <= budget_bytes:
            return cls(x.to(device), y.to(device), device)
        return cls(x.pin_memory(), y.to(device), device)

    def batches(self, index_batches: list[torch.Tensor]) -> Iterator[tuple]:
        """(indices, uint8 images, labels) on the device for each batch of indices (on `index_device`)."""
        for idx in index_batches:
            if self.on_device:
                yield idx, self.x[idx], self.y[idx]
                continue
            xb = self.x[idx]  # pinned host memory: gather there, copy without making the host wait
            idx = _to_device(idx, self.device)
            yield idx, _to_device(xb, self.device), self.y[idx]


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor -> device, asynchronously (through pinned memory) on a GPU."""
    if device.type != "cuda":
        return t
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)


class _Decoded(torch.utils.data.Dataset):
    """Images decoded and resized one at a time (in DataLoader workers), exactly as `data.to_tensors` does."""

    def __init__(self, ds, size: int, interpolation: str):
        self.ds, self.size, self.interpolation = ds, size, interpolation

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(base.decode_image(self.ds, i, self.size, self.interpolation))


@dataclass
class StreamedData:
    """A split too large to decode into memory at once: batches are decoded by DataLoader workers as needed.

    The batches follow the same order as the in-memory path and decode to the same bytes, so a
    run gives the same result either way.
    """

    ds: object
    size: int
    interpolation: str
    device: torch.device
    y: torch.Tensor
    workers: int = 0
    on_device: bool = False

    def __len__(self) -> int:
        return len(self.y)

    @property
    def index_device(self) -> torch.device:
        return torch.device("cpu")  # the DataLoader's sampler takes host lists

    @classmethod
    def of(cls, ds, size: int, interpolation: str, device: torch.device) -> StreamedData:
        y = torch.tensor(ds.labels, dtype=torch.int64, device=device)
        workers = max(0, min(8, (os.cpu_count() or 1) - 1))
        return cls(ds, size, interpolation, device, y, workers)

    def batches(self, index_batches: list[torch.Tensor]) -> Iterator[tuple]:
        sampler = [idx.tolist() for idx in index_batches]
        loader = torch.utils.data.DataLoader(
            _Decoded(self.ds, self.size, self.interpolation),
            batch_sampler=sampler,
            num_workers=self.workers,
            collate_fn=torch.stack,
            pin_memory=self.device.type == "cuda",
        )
        for idx, xb in zip(index_batches, loader):
            idx = _to_device(idx, self.device)
            yield idx, xb.to(self.device, non_blocking=True), self.y[idx]


def place_split(ds, size: int, interpolation: str, device: torch.device, device_budget: int):
    """Where a split's images live during a run: decoded in memory (and on the GPU when they fit
    `device_budget`), or streamed from their files when decoding them all would pass the memory budget."""
    if base.decoded_bytes(ds, size) > Env.read().max_decoded_bytes:
        return StreamedData.of(ds, size, interpolation, device)
    x, y = cached_tensors(ds, size, interpolation)
    return DeviceData.place(x, y, device, device_budget)


def device_budget(device: torch.device) -> int:
    """Bytes of decoded images that may go to the GPU: a share of its free memory (0 on a CPU)."""
    if device.type != "cuda":
        return 0
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * DEVICE_DATA_FRACTION)
