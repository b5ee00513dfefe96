"""Seed 004's VGG-style CNN, from the code on its slides."""

from __future__ import annotations

from torch import nn

from ferpipe.models.base import BodyAndClassifier, register
from ferpipe.models.inputs import gray_signed


@register("vgg_cnn")
class VGGCNN(BodyAndClassifier):
    """Seed 004's CNN: four blocks of two 3x3 conv + batch norm + ReLU (64, 128, 256, 512), each
    ending in a 2x2 max pool and dropout `conv_dropout`; a 4608-512-256 classifier with batch
    norm, ReLU and dropout `dropout`. Gray input in [-1, 1] (Normalize(0.5, 0.5)), 48x48."""

    preprocess = staticmethod(gray_signed)

    def __init__(self, num_classes: int, conv_dropout: float = 0.3, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in (64, 128, 256, 512):
            for c in (c_in, c_out):
                layers += [nn.Conv2d(c, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            layers += [nn.MaxPool2d(2, stride=2), nn.Dropout(conv_dropout)]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.Flatten())  # 48 -> 3: 512 * 3 * 3 = 4608
        mlp: list[nn.Module] = []
        for width, units in ((4608, 512), (512, 256)):
            mlp += [nn.Linear(width, units), nn.BatchNorm1d(units), nn.ReLU(), nn.Dropout(dropout)]
        self.classifier = nn.Sequential(*mlp, nn.Linear(256, num_classes))
