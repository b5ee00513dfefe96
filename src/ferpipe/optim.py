"""Optimisers and learning-rate schedules by name, as a zoo entry's recipe asks for them.

A zoo entry writes each as a mapping, `optimizer: {name: sgd, momentum: 0.9}`, `schedule:
{name: plateau, factor: 0.1, patience: 10}`; the entry's `lr` and `weight_decay` apply to every
optimiser, `backbone_lr` (when set) to the pretrained layers, the rest (the new head) keeping
`lr` (seed 004's differential learning rates).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from ferpipe.errors import FerError
from ferpipe.models import FerModel
from ferpipe.registry import Registry

OPTIMIZERS = Registry("optimizer", supplied=("groups", "lr", "weight_decay"))
SCHEDULES = Registry("schedule", supplied=("optimizer", "epochs"))


@OPTIMIZERS.register("adam")
def adam(groups: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam, weight decay as L2 in the gradient, with the fused kernel: one pass over each tensor
    instead of a dozen (the unfused update took 17% of a CNN training step)."""
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=True)


@OPTIMIZERS.register("adamw")
def adamw(groups: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW: weight decay applied to the weights, apart from the gradient (seed 001)."""
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)


@OPTIMIZERS.register("sgd")
def sgd(
    groups: Any, lr: float, weight_decay: float, momentum: float = 0.0, nesterov: bool = False
) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum (seed 003: momentum 0.9)."""
    return torch.optim.SGD(
        groups, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov
    )


Scheduler = lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau


@SCHEDULES.register("none")
def constant(optimizer: torch.optim.Optimizer, epochs: int) -> None:
    """The learning rate stays as set (seed 000)."""


@SCHEDULES.register("step")
def step(
    optimizer: torch.optim.Optimizer, epochs: int, every: int = 10, factor: float = 0.1
) -> Scheduler:
    """Multiply the learning rate by `factor` every `every` epochs (seed 003: 10x every 20)."""
    if every < 1 or not 0 < factor < 1:
        raise ValueError(f"every={every} must be >= 1 and factor={factor} in (0, 1)")
    return lr_scheduler.StepLR(optimizer, step_size=every, gamma=factor)


@SCHEDULES.register("cosine")
def cosine(optimizer: torch.optim.Optimizer, epochs: int, min_lr: float = 0.0) -> Scheduler:
    """Cosine decay from the learning rate to `min_lr` over the entry's epochs."""
    if min_lr < 0:
        raise ValueError(f"min_lr={min_lr} must be >= 0")
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=min_lr)


@SCHEDULES.register("plateau")
def plateau(
    optimizer: torch.optim.Optimizer, epochs: int, factor: float = 0.1, patience: int = 10
) -> Scheduler:
    """Multiply the learning rate by `factor` once the validation loss has not fallen for
    more than `patience` epochs (seed 001: 0.1 after 10)."""
    if patience < 0 or not 0 < factor < 1:
        raise ValueError(f"patience={patience} must be >= 0 and factor={factor} in (0, 1)")
    return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience)


def _split(option: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """`{name: x, **args}` -> (x, args), refusing a mapping without a name."""
    if not isinstance(option, Mapping) or not isinstance(option.get("name"), str):
        raise FerError(f"{where} must be a mapping with a name, e.g. {{name: adam}}")
    return option["name"], {k: v for k, v in option.items() if k != "name"}


def _build(registry: Registry, option: Mapping[str, Any], where: str, *supplied: Any) -> Any:
    """The registered builder called, every failure one FerError naming `where`."""
    name, args = _split(option, where)
    try:
        registry.check_args(name, args, where)
        return registry.build(name, *supplied, **args)
    except FerError as exc:
        raise FerError(f"params.yaml: {exc}") from None
    except ValueError as exc:  # PyTorch's and the builders' own range checks
        raise FerError(f"params.yaml: {where}={dict(option)!r}: {exc}") from None


def param_groups(model: FerModel, lr: float, backbone_lr: float | None) -> list[dict[str, Any]]:
    """The trainable parameters, the head's at `lr` and the rest at `backbone_lr` when set."""
    if backbone_lr is None:
        return [{"params": model.trainable(), "lr": lr}]
    head = {id(w) for w in model.head_parameters()}
    groups = [
        {"params": [w for w in model.trainable() if id(w) in head], "lr": lr},
        {"params": [w for w in model.trainable() if id(w) not in head], "lr": backbone_lr},
    ]
    return [g for g in groups if g["params"]]


@dataclass
class Optimisation:
    """An optimiser and its learning-rate schedule, stepped once an epoch."""

    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None

    @property
    def lr(self) -> float:
        """The learning rate of the first group (the head's when the rates differ)."""
        return self.optimizer.param_groups[0]["lr"]

    def end_epoch(self, val_loss: float) -> None:
        if isinstance(self.scheduler, lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()


def optimisation(model: FerModel, entry: Mapping[str, Any], name: str) -> Optimisation:
    """Entry `name`'s optimiser over `model`'s trainable parameters, and its schedule."""
    groups = param_groups(model, entry["lr"], entry["backbone_lr"])
    where = f"zoo.{name}"
    optimizer = _build(
        OPTIMIZERS, entry["optimizer"], f"{where}.optimizer", groups, entry["lr"],
        entry["weight_decay"],
    )  # fmt: skip
    scheduler = _build(
        SCHEDULES, entry["schedule"], f"{where}.schedule", optimizer, entry["epochs"]
    )
    return Optimisation(optimizer, scheduler)


def check(entry: Mapping[str, Any], name: str) -> None:
    """Refuse a bad optimizer or schedule of entry `name` before any data is loaded, by building
    both over one stand-in parameter."""
    optimisation(_Probe(), entry, name)


class _Probe(FerModel):
    """One parameter, standing in for a model when the options are checked."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def head_parameters(self) -> list[nn.Parameter]:
        return [self.w]
