"""Seed 000's custom CNN, trained from scratch on 48x48 grayscale faces."""

from __future__ import annotations

from torch import nn

from ferpipe.labels import IMAGE_SIZE
from ferpipe.models.base import BodyAndClassifier, register
from ferpipe.models.inputs import gray_signed


@register("study_cnn")
class StudyCNN(BodyAndClassifier):
    """Seed 000's CNN: three 3x3 conv + batch norm + ReLU (32, 64, 128), one 2x2 max pool,
    dropout 0.5, a 512-unit ReLU layer, one output per class. Gray input in [-1, 1].

    The layers are created in the order of the seed-000 pipeline's first version, so the same
    seed gives the same initial weights."""

    preprocess = staticmethod(gray_signed)

    def __init__(self, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, 32), (32, 64), (64, 128)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        # Dropout after Flatten draws its mask in NCHW order whatever the memory layout, so
        # channels_last drops the same units (elementwise, it commutes with Flatten).
        self.body = nn.Sequential(*layers, nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5))
        self.classifier = nn.Sequential(
            nn.Linear(128 * (IMAGE_SIZE // 2) ** 2, 512), nn.ReLU(), nn.Linear(512, num_classes)
        )
