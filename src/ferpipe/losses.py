"""Class-weighted cross-entropy and focal loss, with label smoothing (seeds 000, 001, 002, 004)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ferpipe.errors import FerError
from ferpipe.params import LOSSES, StageParams


class FocalLoss(nn.Module):
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), alpha_t the class weight of the target.

    Averaged with the class weights as denominators, as PyTorch's weighted cross-entropy is, and
    smoothed the way PyTorch smooths it (a share `smoothing` of the target spread evenly over
    the classes, each class's term carrying its own weight), so gamma = 0 gives exactly
    `nn.CrossEntropyLoss(weight=..., label_smoothing=...)`.
    """

    def __init__(self, weight: torch.Tensor, gamma: float, smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", weight)
        self.gamma, self.smoothing = gamma, smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)
        terms = -self.weight * (1 - log_p.exp()).clamp(min=0) ** self.gamma * log_p  # (N, K)
        on_target = terms.gather(1, target[:, None]).squeeze(1)
        per_image = (1 - self.smoothing) * on_target + self.smoothing / terms.shape[1] * terms.sum(
            1
        )
        return per_image.sum() / self.weight[target].sum()


def make_loss(
    name: str, class_weights: Sequence[float], gamma: float, smoothing: float = 0.0
) -> nn.Module:
    """The loss `name`, weighted per class in the task's class order, labels smoothed."""
    weight = torch.tensor(list(class_weights), dtype=torch.float32)
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)
    if name == "focal":
        return FocalLoss(weight, gamma, smoothing)
    raise FerError(f"loss={name!r} is not allowed; use one of: {', '.join(LOSSES)}")


def class_weights(
    mode: str, table: Sequence[float], train_labels: np.ndarray, classes: Sequence[str]
) -> list[float]:
    """Weights per class: `table` as given, inverse frequency N / (K n_c) of the training
    labels (so the weighted mean over the training images is 1), or ones."""
    if mode == "table":
        return list(table)
    if mode == "none":
        return [1.0] * len(classes)
    counts = np.bincount(train_labels, minlength=len(classes))
    if not counts.all():
        empty = ", ".join(c for c, n in zip(classes, counts, strict=True) if n == 0)
        raise FerError(f"class_weights=inverse_frequency: no training images of {empty}")
    return [float(len(train_labels) / (len(classes) * n)) for n in counts]


def for_entry(
    p: StageParams, name: str, train_labels: np.ndarray, classes: Sequence[str]
) -> nn.Module:
    """Zoo entry `name`'s loss from a stage's params: its own `loss` (`shared`: the top-level
    one), class weights and label smoothing, the shared focal gamma."""
    entry = p[f"zoo.{name}"]
    loss = p["loss"] if entry["loss"] == "shared" else entry["loss"]
    table = p[f"train.class_weights.{p['task']}"]
    weights = class_weights(entry["class_weights"], table, train_labels, classes)
    return make_loss(loss, weights, p["train.focal_gamma"], entry["label_smoothing"])
