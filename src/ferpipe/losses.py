"""Class-weighted cross-entropy and focal loss (seed 000)."""

import torch
from torch import nn
from torch.nn import functional as F

from ferpipe.errors import FerError


class FocalLoss(nn.Module):
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), alpha_t the class weight of the target.

    Averaged with the class weights as denominators, as PyTorch's weighted cross-entropy is,
    so gamma = 0 gives exactly `nn.CrossEntropyLoss(weight=...)`.
    """

    def __init__(self, weight: torch.Tensor, gamma: float):
        super().__init__()
        self.register_buffer("weight", weight)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        alpha = self.weight[target]
        modulating = (1 - log_p.exp()).clamp(min=0) ** self.gamma
        return -(alpha * modulating * log_p).sum() / alpha.sum()


def make_loss(name: str, class_weights: list[float], gamma: float) -> nn.Module:
    """The loss named by the `loss` parameter, weighted per class in the task's class order."""
    weight = torch.tensor(class_weights, dtype=torch.float32)
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight)
    if name == "focal":
        return FocalLoss(weight, gamma)
    raise FerError(f"loss={name!r} is not allowed; use one of: ce, focal")
