import math

import numpy as np
import pytest
import torch
from torch import nn

from ferpipe.errors import FerError
from ferpipe.losses import FocalLoss, class_weights, make_loss

WEIGHTS = [2.0, 1.5, 1.0, 1.3]


def test_focal_matches_hand_computed_values():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    target = torch.tensor([0, 3])
    p0 = math.exp(2) / (math.exp(2) + 3)  # probability of the true class, first image
    p1 = 1 / (math.e + 3)  # second image, true class 3 has logit 0
    w0, w1 = WEIGHTS[0], WEIGHTS[3]
    terms = [-w0 * (1 - p0) ** 2 * math.log(p0), -w1 * (1 - p1) ** 2 * math.log(p1)]
    expected = sum(terms) / (w0 + w1)
    got = FocalLoss(torch.tensor(WEIGHTS), gamma=2.0)(logits, target).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_equals_weighted_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits, target = torch.randn(32, 4, generator=gen), torch.randint(0, 4, (32,), generator=gen)
    weight = torch.tensor(WEIGHTS)
    focal = FocalLoss(weight, gamma=0.0)(logits, target)
    ce = nn.CrossEntropyLoss(weight=weight)(logits, target)
    assert focal.item() == pytest.approx(ce.item(), rel=1e-6)


def test_focal_down_weights_easy_examples():
    weight = torch.ones(2)
    easy, hard = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.2, 0.0]])
    target = torch.tensor([0])
    ratio = lambda x: FocalLoss(weight, 2.0)(x, target) / FocalLoss(weight, 0.0)(x, target)  # noqa: E731
    assert ratio(easy) < 0.001 < ratio(hard)


def test_make_loss_builds_each_kind_with_class_weights():
    assert isinstance(make_loss("ce", [1.0, 1.5], 2.0), nn.CrossEntropyLoss)
    focal = make_loss("focal", [1.0, 1.5], 3.0)
    assert isinstance(focal, FocalLoss) and focal.gamma == 3.0
    assert focal.weight.tolist() == [1.0, 1.5]
    with pytest.raises(FerError, match="loss='mse' is not allowed; use one of: ce, focal"):
        make_loss("mse", [1.0], 2.0)


def test_label_smoothing_matches_a_hand_computation_for_both_losses():
    logits, target = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    weight, eps, k = torch.tensor([1.0, 2.0, 0.5]), 0.1, 3
    p = torch.softmax(logits, 1)[0].tolist()
    w = weight.tolist()
    # PyTorch's smoothing: (1 - eps) of the target's term plus eps / K of every class's term,
    # each class's term carrying its own weight; divided by the target's weight.
    for gamma in (0.0, 2.0):
        term = [-w[c] * (1 - p[c]) ** gamma * math.log(p[c]) for c in range(k)]
        expected = ((1 - eps) * term[0] + eps / k * sum(term)) / w[0]
        got = make_loss("focal", w, gamma, smoothing=eps)(logits, target).item()
        assert got == pytest.approx(expected, rel=1e-6)
    ce = make_loss("ce", w, 2.0, smoothing=eps)(logits, target).item()
    assert ce == pytest.approx(((1 - eps) * -math.log(p[0]) * w[0] - eps / k * sum(
        w[c] * math.log(p[c]) for c in range(k))) / w[0], rel=1e-6)  # fmt: skip


def test_smoothed_focal_with_gamma_zero_equals_pytorchs_smoothed_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    logits, target = torch.randn(64, 4, generator=gen), torch.randint(0, 4, (64,), generator=gen)
    weight = torch.tensor(WEIGHTS)
    focal = FocalLoss(weight, gamma=0.0, smoothing=0.2)(logits, target)
    ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.2)(logits, target)
    assert focal.item() == pytest.approx(ce.item(), rel=1e-6)
    assert focal.item() != pytest.approx(FocalLoss(weight, 0.0)(logits, target).item())


def test_class_weights_table_inverse_frequency_and_none():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    classes = ("a", "b", "c")
    assert class_weights("table", [2.0, 1.5, 1.0], labels, classes) == [2.0, 1.5, 1.0]
    assert class_weights("none", [2.0, 1.5, 1.0], labels, classes) == [1.0, 1.0, 1.0]
    by_hand = [10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)]  # N / (K n_c)
    assert class_weights("inverse_frequency", [], labels, classes) == pytest.approx(by_hand)
    with pytest.raises(FerError, match="inverse_frequency: no training images of c"):
        class_weights("inverse_frequency", [], labels[:9], classes)
