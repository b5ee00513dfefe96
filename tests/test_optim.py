"""Optimisers, schedules and differential learning rates as zoo entries write them."""

import pytest
import torch

from ferpipe import models, optim
from ferpipe.errors import FerError

ENTRY = {"lr": 0.1, "backbone_lr": None, "weight_decay": 0.01, "epochs": 10,
         "optimizer": {"name": "adam"}, "schedule": {"name": "none"}}  # fmt: skip


def built(**changes):
    model = models.build("block_cnn", 2, **models.architecture("block_cnn").tiny)
    return model, optim.optimisation(model, {**ENTRY, **changes}, "m")


@pytest.mark.parametrize(
    ("option", "kind", "settings"),
    [
        ({"name": "adam"}, torch.optim.Adam, {"weight_decay": 0.01, "fused": True}),
        ({"name": "adamw"}, torch.optim.AdamW, {"weight_decay": 0.01, "fused": True}),
        ({"name": "sgd", "momentum": 0.9, "nesterov": True}, torch.optim.SGD,
         {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ],
)  # fmt: skip
def test_each_optimizer_is_built_with_its_settings(option, kind, settings):
    model, opt = built(optimizer=option)
    assert type(opt.optimizer) is kind and opt.lr == 0.1
    group = opt.optimizer.param_groups[0]
    assert {k: group[k] for k in settings} == settings
    assert sum(len(g["params"]) for g in opt.optimizer.param_groups) == len(model.trainable())


def test_backbone_lr_gives_the_head_lr_and_the_rest_backbone_lr():
    model, opt = built(backbone_lr=0.001)
    head, rest = opt.optimizer.param_groups
    assert head["lr"] == 0.1 and rest["lr"] == 0.001
    assert {id(w) for w in head["params"]} == {id(w) for w in model.classifier.parameters()}
    assert len(head["params"]) + len(rest["params"]) == len(model.trainable())


def _lrs(schedule, val_losses):
    _, opt = built(schedule=schedule)
    seen = []
    for loss in val_losses:
        seen.append(opt.lr)
        opt.optimizer.step()
        opt.end_epoch(loss)
    return seen


def test_step_schedule_divides_every_n_epochs():
    lrs = _lrs({"name": "step", "every": 2, "factor": 0.5}, [1.0] * 5)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_cosine_schedule_falls_to_min_lr_over_the_epochs():
    lrs = _lrs({"name": "cosine", "min_lr": 0.0}, [1.0] * 10)
    assert lrs[0] == 0.1 and lrs[5] == pytest.approx(0.05) and lrs == sorted(lrs, reverse=True)


def test_plateau_schedule_cuts_after_patience_epochs_without_a_lower_validation_loss():
    lrs = _lrs({"name": "plateau", "factor": 0.1, "patience": 2}, [1.0, 0.9, 0.95, 0.95, 0.95, 0.8])
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.1, 0.01])


def test_none_keeps_the_rate():
    assert _lrs({"name": "none"}, [1.0, 2.0, 3.0]) == [0.1, 0.1, 0.1]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": {"name": "rmsprop"}}, "optimizer 'rmsprop' is unknown; use one of: adam, adamw, sgd"),
        ({"optimizer": {"name": "sgd", "beta": 1}}, "zoo.m.optimizer.beta: sgd takes no argument 'beta'"),
        ({"optimizer": {"name": "sgd", "momentum": "high"}}, "zoo.m.optimizer.momentum='high' must be a finite number"),
        ({"optimizer": {"name": "sgd", "nesterov": True}}, "zoo.m.optimizer=.*Nesterov momentum requires"),
        ({"optimizer": {"momentum": 0.9}}, "zoo.m.optimizer must be a mapping with a name"),
        ({"schedule": {"name": "step", "factor": 2.0}}, r"zoo.m.schedule=.*factor=2.0 in \(0, 1\)"),
        ({"schedule": {"name": "plateau", "patience": -1}}, "zoo.m.schedule=.*patience=-1 must be >= 0"),
        ({"schedule": {"name": "cosine", "min_lr": float("inf")}}, "zoo.m.schedule.min_lr=inf must be a finite"),
    ],
)  # fmt: skip
def test_bad_options_are_refused_naming_the_key(changes, message):
    with pytest.raises(FerError, match=message):
        optim.check({**ENTRY, **changes}, "m")
