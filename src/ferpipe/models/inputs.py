"""Batch preprocessing shared by the architectures: uint8 (N, 48, 48) faces to model inputs."""

from __future__ import annotations

import torch
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def gray_signed(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 1, 48, 48) in [-1, 1]: Normalize(0.5, 0.5) after ToTensor (seeds 000 and 004)."""
    return pixels[:, None].float().div_(127.5).sub_(1.0)


def gray_unit(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 1, 48, 48) in [0, 1]: ToTensor alone."""
    return pixels[:, None].float().div_(255.0)


def imagenet_rgb(pixels: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor):
    """(N, 3, size, size): [0, 1], resized bilinearly, gray copied to three channels, ImageNet
    normalisation (`mean`, `std` are (1, 3, 1, 1) buffers of the model, so they follow it to a
    device)."""
    x = gray_unit(pixels)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def imagenet_buffers(module: torch.nn.Module) -> None:
    """Register the ImageNet mean and std as (1, 3, 1, 1) buffers `mean` and `std`."""
    module.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
    module.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
