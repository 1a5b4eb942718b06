"""A batch of images as a model takes it: uint8 pixels -> normalised floats at the input size, augmented when
training. Training, evaluation, the feature cache and the confusion gallery all call these, so a model sees the
same numbers for the same image wherever it runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Normalizer", "augment_batch", "model_inputs"]


class Normalizer(nn.Module):
    """uint8 NCHW batch -> float, normalised with the model's own mean/std."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random-resized crop (scale 0.5-1, ratio 3/4-4/3) of each float image.

    One batched affine resampling on the batch's own device; the random draws come from the
    run's CPU generator, so a seed gives the same augmentation on a CPU and a GPU.
    """
    n = x.shape[0]
    scale = torch.empty(n).uniform_(0.5, 1.0, generator=gen)
    ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen).exp()
    w = (scale * ratio).sqrt().clamp(max=1.0)  # crop width and height as fractions of the image
    h = (scale / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)  # crop centre, in [-1, 1] coordinates
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def model_inputs(xb: torch.Tensor, norm: Normalizer, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """uint8 images -> normalised float images at size x size (resized here when stored at another size)."""
    x = norm(xb)
    if x.shape[-2:] != (size, size):  # images kept at their stored size are resized per batch, on the device
        mode = "bicubic" if interpolation == "bicubic" else "bilinear"
        # antialiasing only changes a downscale, and its kernel is several times slower when upscaling
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=size < x.shape[-1])
    return x
