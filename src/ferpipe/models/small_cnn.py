"""Seed 001's three CNNs (its models 1, 2 and 3), written as data from its layer tables."""

from __future__ import annotations

import torch
from torch import nn

from ferpipe.labels import IMAGE_SIZE
from ferpipe.models.base import BodyAndClassifier, register
from ferpipe.models.inputs import imagenet_buffers, imagenet_rgb

# Per model: convolutions as (out_channels, kernel, padding), hidden linear sizes, batch norm
# (then the convolutions have no bias: the table's parameter counts), dropout between linears.
MODEL_1 = {"convs": [(64, 5, 1), (128, 5, 1)], "hidden": [128], "batch_norm": False, "dropout": 0.0}
MODEL_2 = {"convs": [(64, 3, 1), (128, 3, 1), (256, 3, 1)], "hidden": [512, 256],
           "batch_norm": False, "dropout": 0.5}  # fmt: skip
# Model 3: the text says padding 1 for every layer, the table's output shapes (48, 26, 17, 10
# after pools of 24, 13 and 8) need padding 1, 3, 5, 3; the table wins.
MODEL_3 = {"convs": [(64, 3, 1), (128, 5, 3), (256, 7, 5), (512, 5, 3)], "hidden": [256, 128, 64],
           "batch_norm": True, "dropout": 0.5}  # fmt: skip


@register("small_cnn_m1", fixed=MODEL_1)
@register("small_cnn_m2", fixed=MODEL_2)
@register("small_cnn_m3", fixed=MODEL_3)
class SmallCNN(BodyAndClassifier):
    """Seed 001's models 1-3: conv (+ batch norm) + ReLU + 2x2 max pool blocks, a ReLU MLP with
    dropout between its layers. Input: gray in [0, 1] copied to three channels, ImageNet
    normalisation, 48x48.

    Model 1's table puts each max pool before its ReLU; the two commute exactly, so the one
    block order used here gives the same outputs."""

    def __init__(
        self,
        num_classes: int,
        convs: list[tuple[int, int, int]],
        hidden: list[int],
        batch_norm: bool,
        dropout: float,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = 3, IMAGE_SIZE
        for out, kernel, padding in convs:
            layers.append(nn.Conv2d(channels, out, kernel, padding=padding, bias=not batch_norm))
            layers += [nn.BatchNorm2d(out)] if batch_norm else []
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            channels, side = out, (side + 2 * padding - kernel + 1) // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        mlp: list[nn.Module] = []
        width = channels * side * side
        for units in hidden:
            mlp += [nn.Linear(width, units), nn.ReLU()]
            mlp += [nn.Dropout(dropout)] if dropout else []
            width = units
        self.classifier = nn.Sequential(*mlp, nn.Linear(width, num_classes))
        imagenet_buffers(self)

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        return imagenet_rgb(pixels, IMAGE_SIZE, self.mean, self.std)
