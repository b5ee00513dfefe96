"""DACL: ResNet18 with an attention network and the sparse center loss (seed 003; Farzaneh and
Qi, "Facial Expression Recognition in the Wild via Deep Attentive Center Loss", WACV 2021)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ferpipe.errors import FerError
from ferpipe.models.base import FerModel, register
from ferpipe.models.inputs import imagenet_buffers, imagenet_rgb
from ferpipe.models.resnet import BACKBONE, pretrained

CHANNELS = 512  # ResNet18's last feature map, one attention head and one center entry each
CONTEXT = (3584, 512, 64)  # the CE-Unit's out-features (report table 3.1, reference code)


def sparse_center_loss(
    features: torch.Tensor, weights: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """L_SC = 1/(2m) sum_i sum_j a_ij (x_ij - c_{y_i j})^2 over a batch of m: the report's
    equation and the reference code (sum / 2 / batch size). Weights of ones: the center loss."""
    return (weights * (features - centers[labels]).pow(2)).sum() / (2 * len(features))


# tiny: softmax only, as tests/test_models backpropagates cross-entropy alone, which never
# reaches the attention network (L_SC trains it); tests/test_dacl covers lambda > 0.
@register("dacl", tiny={"image_size": 32, "weights": "none", "center_lambda": 0.0})
class DACL(FerModel):
    """ResNet18 (`weights` as for resnet18: auto | imagenet | none | a state-dict file such as an
    MS-Celeb-1M pretraining) trained whole; its pooled 512-d feature feeds a linear classifier.

    Training adds `center_lambda` * L_SC (`auxiliary_loss`); 0 is the softmax-only ablation and
    builds neither attention nor centers. The attention network (`attention` learned) flattens
    the 512 x `grid` x `grid` map (adaptively pooled, so any `image_size` gives the paper's
    512 x 7 x 7 = 25088 inputs at grid 7; identity at 224) into the CE-Unit: three linear layers
    of 3584, 512 and 64 out-features, each with batch norm, then ReLU, ReLU and tanh ("3584-512-64"
    are out-features: the report's table has 25088 -> 3584 with 89.9M weights, as the reference
    code). 512 heads, each a 2-way linear layer on the 64-d context with a softmax, give one
    weight per channel (the second probability); L_SC trains them. `uniform`: weights of ones,
    plain center loss (the other ablation).

    Centers follow the paper's own rule, not the optimiser: each training step moves c_j by
    `center_alpha` * sum_{y_i=j} a_i (x_i - c_j) / (1 + n_j) (reference code: alpha 0.5, plain
    SGD on centers, unscheduled). Through the shared optimiser (lr 0.01, momentum 0.9, lambda
    0.01, batch 64) they would move some 3000 times slower and decay with the weight decay, so
    they are a buffer.
    """

    def __init__(
        self,
        num_classes: int,
        weights: str = "auto",
        image_size: int = 224,
        center_lambda: float = 0.01,
        attention: Literal["learned", "uniform"] = "learned",
        center_alpha: float = 0.5,
        grid: int = 7,
    ):
        super().__init__()
        if image_size < 32 or center_lambda < 0 or grid < 1:
            raise FerError(
                f"dacl: image_size={image_size} must be >= 32, center_lambda={center_lambda} "
                f">= 0 and grid={grid} >= 1"
            )
        net, self.weights = pretrained("resnet18", weights)
        self.body = nn.Sequential(*(getattr(net, name) for name in BACKBONE))
        self.classifier = nn.Linear(CHANNELS, num_classes)
        self.image_size, self.grid = image_size, grid
        self.center_lambda, self.center_alpha = center_lambda, center_alpha
        self.context: nn.Module | None = None
        self.heads: nn.Module | None = None
        if center_lambda > 0:
            std = math.sqrt(2 / num_classes)  # the reference's kaiming_normal_ on centers.t()
            self.register_buffer("centers", torch.randn(num_classes, CHANNELS) * std)
        if center_lambda > 0 and attention == "learned":
            layers: list[nn.Module] = []
            width = CHANNELS * grid * grid
            for units, act in zip(CONTEXT, (nn.ReLU(), nn.ReLU(), nn.Tanh()), strict=True):
                layers += [nn.Linear(width, units), nn.BatchNorm1d(units), act]
                width = units
            self.context = nn.Sequential(*layers)
            self.heads = nn.Linear(width, 2 * CHANNELS)
        self.stored: tuple[torch.Tensor, torch.Tensor] | None = None
        imagenet_buffers(self)

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        return imagenet_rgb(pixels, self.image_size, self.mean, self.std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits; in train mode with lambda > 0 also store the pooled features and attention
        weights for `auxiliary_loss` (eval mode skips the attention network)."""
        pooled = torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)
        training = self.training and self.center_lambda > 0
        self.stored = (pooled, self._attend(features)) if training else None
        return self.classifier(pooled)

    def _attend(self, features: torch.Tensor) -> torch.Tensor:
        if self.context is None:
            return features.new_ones(len(features), CHANNELS)
        grid = torch.flatten(F.adaptive_avg_pool2d(features, self.grid), 1)
        return self.heads(self.context(grid)).view(-1, CHANNELS, 2).softmax(-1)[..., 1]

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 512) weights in [0, 1] of the model inputs `x`, for interpretability pictures."""
        if self.center_lambda == 0:
            raise FerError("dacl with center_lambda 0 has no attention network")
        return self._attend(self.features(x))

    def auxiliary_loss(self, labels: torch.Tensor) -> torch.Tensor | None:
        """lambda * L_SC of the last train-mode forward, gradient flowing into the features and
        the attention network; moves the centers too, so call it once per training step."""
        if not self.training or self.stored is None:
            return None
        pooled, weights = (t.float() for t in self.stored)  # fp32 under bf16 autocast
        loss = sparse_center_loss(pooled, weights, self.centers, labels)
        with torch.no_grad():
            pull = weights * (pooled - self.centers[labels])
            moved = torch.zeros_like(self.centers).index_add_(0, labels, pull)
            count = torch.bincount(labels, minlength=len(self.centers)).unsqueeze(1)
            self.centers += self.center_alpha * moved / (1 + count)
        return self.center_lambda * loss

    def head_parameters(self) -> list[nn.Parameter]:
        parts = (self.classifier, self.context, self.heads)
        return [w for part in parts if part is not None for w in part.parameters()]
