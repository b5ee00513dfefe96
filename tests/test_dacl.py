"""DACL (seed 003): the sparse center loss, its ablations, the center update and the attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ferpipe import models
from ferpipe.errors import FerError
from ferpipe.models.dacl import sparse_center_loss
from ferpipe.speed import Autocast, Speed
from ferpipe.training import Plan, train_one_epoch


def dacl(**args) -> models.FerModel:
    """A small DACL for 7 classes: 32x32 input, a 2x2 grid into the CE-Unit, no pretraining."""
    torch.manual_seed(0)
    return models.build("dacl", 7, **{"weights": "none", "image_size": 32, "grid": 2, **args})


def faces(n: int = 4, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 48, 48), dtype=torch.uint8, generator=gen)


LABELS = torch.tensor([0, 0, 3, 3])


def test_sparse_center_loss_matches_a_hand_computation():
    x = torch.tensor([[1.0, 2, 0, 1], [0, 1, 3, 2], [2, 0, 1, 1]])
    a = torch.tensor([[1.0, 0.5, 0, 1], [0.5, 1, 1, 0], [0, 1, 0.5, 1]])
    centers = torch.tensor([[1.0, 1, 1, 1], [0, 0, 2, 2]])
    labels = torch.tensor([0, 1, 0])
    # squared differences to the own center: [0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0]
    weighted = (0 + 0.5 * 1 + 0 + 0) + (0 + 1 * 1 + 1 * 1 + 0) + (0 + 1 * 1 + 0 + 0)
    expected = weighted / (2 * 3)
    assert sparse_center_loss(x, a, centers, labels).item() == pytest.approx(expected)


def test_uniform_weights_give_the_plain_center_loss():
    gen = torch.Generator().manual_seed(0)
    x, centers = torch.randn(5, 6, generator=gen), torch.randn(3, 6, generator=gen)
    labels = torch.tensor([0, 2, 1, 2, 0])
    plain = 0.5 * ((x - centers[labels]) ** 2).sum(1).mean()
    got = sparse_center_loss(x, torch.ones(5, 6), centers, labels)
    assert torch.allclose(got, plain)


def test_lambda_zero_is_softmax_alone_and_lambda_adds_the_hand_computed_term():
    ce = nn.CrossEntropyLoss()
    softmax = dacl(center_lambda=0.0).train()
    assert softmax.auxiliary_loss(LABELS) is None
    softmax(softmax.preprocess(faces()))
    assert softmax.auxiliary_loss(LABELS) is None and softmax.head_parameters() == list(
        softmax.classifier.parameters()
    )
    with pytest.raises(FerError, match="no attention network"):
        softmax.attention_weights(softmax.preprocess(faces()))
    model = dacl(center_lambda=0.1).train()
    logits = model(model.preprocess(faces()))
    pooled, a = model.stored
    c = model.centers.clone()  # auxiliary_loss moves the centers after computing the term
    total = ce(logits, LABELS) + model.auxiliary_loss(LABELS)
    by_hand = 0.5 * (a * (pooled - c[LABELS]) ** 2).sum(1).mean()
    assert torch.allclose(total, ce(logits, LABELS) + 0.1 * by_hand)


def test_the_loss_trains_every_parameter_and_centers_are_not_parameters():
    model = dacl().train()
    loss = nn.functional.cross_entropy(model(model.preprocess(faces())), LABELS)
    (loss + model.auxiliary_loss(LABELS)).backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in model.trainable())
    assert not model.frozen_features and len(model.trainable()) == len(list(model.parameters()))
    head = {id(w) for w in model.head_parameters()}
    attention = [*model.context.parameters(), *model.heads.parameters()]
    assert head == {id(w) for w in [*attention, *model.classifier.parameters()]}
    assert "centers" in model.state_dict() and model.centers.shape == (7, 512)


def test_centers_follow_the_papers_update_and_approach_their_class_features():
    model = dacl().train()
    x = model.preprocess(faces())
    model(x)
    pooled, a = (t.detach() for t in model.stored)
    before = model.centers.clone()
    model.auxiliary_loss(LABELS)
    for j, n in ((0, 2), (3, 2), (1, 0)):  # c_j += 0.5 * sum_{y_i=j} a_i (x_i - c_j) / (1 + n_j)
        pull = sum((a[i] * (pooled[i] - before[j]) for i in range(4) if LABELS[i] == j), 0.0)
        assert torch.allclose(model.centers[j], before[j] + 0.5 * pull / (1 + n), atol=1e-6)

    def distance() -> float:
        with torch.no_grad():
            model(x)
            return (model.stored[0] - model.centers[LABELS]).norm(dim=1).mean().item()

    start = distance()
    optimizer = torch.optim.SGD(model.trainable(), lr=0.001, momentum=0.9)
    plan = Plan(epochs=3, batch_size=4, seed=0, auxiliary=model.auxiliary_loss)
    for epoch in range(1, 4):  # the pipeline's loop: one step a pass over this one batch
        train_one_epoch(
            model, nn.CrossEntropyLoss(), optimizer, (faces(), LABELS), plan, epoch,
            torch.Generator().manual_seed(0), torch.device("cpu"),
        )  # fmt: skip
    assert distance() < start


def test_attention_weights_are_per_image_and_channel_and_ones_when_uniform():
    model = dacl().eval()
    x = model.preprocess(faces(3))
    with torch.no_grad():
        a = model.attention_weights(x)
    assert a.shape == (3, 512) and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a[0], a[1]) and not torch.allclose(a[1], a[2])
    uniform = dacl(attention="uniform")
    assert uniform.context is None and uniform.head_parameters() == list(
        uniform.classifier.parameters()
    )
    assert torch.equal(uniform.attention_weights(x), torch.ones(3, 512))


def test_forward_is_head_of_features_and_eval_mode_adds_no_loss():
    model = dacl()
    x = model.preprocess(faces())
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            assert torch.equal(model.head(model.features(x)), model(x))
    assert model.stored is None and model.auxiliary_loss(LABELS) is None
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(Speed(channels_last=True).layout(model)(x), expected, atol=1e-4)
    model.train()
    model(x)
    model.eval()
    assert model.auxiliary_loss(LABELS) is None


def test_a_checkpoint_round_trip_keeps_logits_centers_and_attention(tmp_path):
    model = dacl(center_alpha=0.3).train()
    x = model.preprocess(faces())
    model(x)
    model.auxiliary_loss(LABELS)  # centers moved away from their initial values
    model.eval()
    models.save(model, tuple("abcdefg"), tmp_path / "dacl.pt")
    loaded, _ = models.load(tmp_path / "dacl.pt")
    loaded.eval()
    assert loaded.args == model.args and torch.equal(loaded.centers, model.centers)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.attention_weights(x), model.attention_weights(x))


def test_the_attention_network_has_the_papers_sizes_at_any_image_size():
    model = dacl(grid=7)  # 32x32 input: a 1x1 map pooled up to 7x7, the paper's 25088 inputs
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [(512, 7), (25088, 3584), (3584, 512), (512, 64), (64, 1024)]
    kinds = [type(m).__name__ for m in model.context]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d", "Tanh"]
    assert sum(w.numel() for w in model.parameters()) == 103_042_311  # as at image_size 224
    model.train()(model.preprocess(faces(2)))
    assert model.stored[1].shape == (2, 512)
    with pytest.raises(FerError, match="center_lambda=-1"):
        dacl(center_lambda=-1.0)


def test_under_bf16_autocast_the_term_and_the_centers_stay_fp32():
    model = dacl().train()
    Autocast(model, "cpu")(model.preprocess(faces()))
    assert model.stored[0].dtype == torch.bfloat16
    assert model.auxiliary_loss(LABELS).dtype == torch.float32 == model.centers.dtype
