"""A zoo entry's training recipe, assembled from a stage's parameters: its loss, optimiser and
schedule, early stopping, augmentation and the weights kept. Shared by the train and crossval
stages, so a fold trains exactly as the entry does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ferpipe import augment, losses, optim
from ferpipe.errors import FerError
from ferpipe.models import FerModel
from ferpipe.params import StageParams
from ferpipe.training import Plan


@dataclass(frozen=True)
class Recipe:
    name: str
    entry: dict[str, Any]
    loss_fn: nn.Module
    plan: Plan
    augmentation: augment.Augmentation

    def optimisation(self, model: FerModel) -> optim.Optimisation:
        """A fresh optimiser and schedule over `model` (one per fold)."""
        return optim.optimisation(model, self.entry, self.name)

    @classmethod
    def from_params(
        cls,
        p: StageParams,
        name: str,
        model: FerModel,
        train_labels: np.ndarray,
        classes: Sequence[str],
    ) -> Recipe:
        """Entry `name`'s recipe; its options are checked before any training starts."""
        entry = dict(p[f"zoo.{name}"])
        optim.check(entry, name)
        presets = p["augment"]
        augment.check_presets(presets)
        if entry["augment"] != "none" and model.frozen_features:
            raise FerError(
                f"params.yaml: zoo.{name}.augment={entry['augment']!r}: this entry trains on features "
                "cached once per image, which augmentation cannot change; use augment none, or "
                f"zoo.{name}.args.freeze_bn false"
            )
        augmentation = augment.Augmentation.from_params(entry["augment"], presets, p["seed"])
        plan = Plan(
            epochs=entry["epochs"],
            batch_size=p["train.batch_size"],
            seed=p["seed"],
            keep=p["train.keep"],
            patience=entry["early_stopping"],
            augment=augmentation if augmentation.active else None,
            auxiliary=model.auxiliary_loss,
            name=name,
        )
        loss_fn = losses.for_entry(p, name, train_labels, classes)
        return cls(name, entry, loss_fn, plan, augmentation)
