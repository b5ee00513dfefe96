"""Seed 002's configurable block CNN: depth, kernel sizes and normalisation are arguments."""

from __future__ import annotations

from typing import Literal

from torch import nn

from ferpipe.errors import FerError
from ferpipe.labels import IMAGE_SIZE
from ferpipe.models.base import BodyAndClassifier, register
from ferpipe.models.inputs import gray_unit

NORMS = {"none": None, "batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d}


@register("block_cnn", tiny={"channels": [8, 8, 16], "kernel_sizes": [3, 3, 3], "norm": "batch"})
class BlockCNN(BodyAndClassifier):
    """Seed 002's CNN: one block per entry of `channels` (a convolution of that many kernels of
    the block's size in `kernel_sizes`, then `norm`, then ReLU), 2x2 max pools after the blocks
    in `pool_after`, adaptive average pooling to 5x5, a `hidden`-unit ReLU layer with dropout,
    one output per class. Gray input in [0, 1], 48x48.

    The defaults are its 4-block baseline (table 2). Its deeper models add blocks of 128, 128
    and 256 kernels after the second pool. The seed is silent on padding, pool placement beyond
    the baseline, the dropout rate and the input scaling; chosen here: unpadded convolutions
    (it pools adaptively "since feature maps vary in size across kernel sizes"), no further
    pools, PyTorch's default dropout 0.5 and ToTensor's [0, 1]."""

    preprocess = staticmethod(gray_unit)

    def __init__(
        self,
        num_classes: int,
        channels: list[int] = (32, 32, 64, 64),  # type: ignore[assignment]
        kernel_sizes: list[int] = (3, 3, 3, 3),  # type: ignore[assignment]
        norm: Literal["none", "batch", "instance"] = "none",
        pool_after: list[int] = (2, 4),  # type: ignore[assignment]
        hidden: int = 64,
        dropout: float = 0.5,
    ):
        super().__init__()
        if len(kernel_sizes) != len(channels):
            raise FerError(
                f"block_cnn: kernel_sizes has {len(kernel_sizes)} entries, channels "
                f"{len(channels)}; give one kernel size per block"
            )
        layers: list[nn.Module] = []
        c_in, side = 1, IMAGE_SIZE
        for block, (c_out, kernel) in enumerate(zip(channels, kernel_sizes, strict=True), 1):
            side -= kernel - 1
            if side < 1:
                raise FerError(f"block_cnn: block {block} ({kernel}x{kernel}) leaves no pixels")
            layers.append(nn.Conv2d(c_in, c_out, kernel))
            layers += [NORMS[norm](c_out)] if NORMS[norm] else []
            layers.append(nn.ReLU())
            if block in pool_after:
                layers.append(nn.MaxPool2d(2, stride=2))
                side //= 2
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(5), nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 25, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
