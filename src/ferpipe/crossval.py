"""k-fold cross-validation of a zoo entry (seed 001): split.folds times on stratified folds of
the training pool, each fold trained by the entry's recipe from the same initial weights and
scored on the fold held out; the figures of each fold with their mean and sample standard
deviation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ferpipe import metrics, models, paths, prepare, training
from ferpipe.params import StageParams
from ferpipe.recipe import Recipe
from ferpipe.speed import Speed

FIGURES = ("val_accuracy", "macro_f1", "val_loss", "kept_epoch")
Pool = tuple[torch.Tensor, torch.Tensor]


def pool(p: StageParams, name: str) -> Pool:
    """The inputs and labels folded: train and val for a holdout validation, train alone when
    PublicTest selects (PublicTest is test data; it never joins a fold)."""
    parts = ("train", "val") if p["split.validation"] == "holdout" else ("train",)
    init, _ = models.load(paths.init_file(name))
    _, data = training.model_inputs(init, name, parts)
    return torch.cat([x for x, _ in data]), torch.cat([y for _, y in data])


def train_fold(
    p: StageParams, name: str, data: Pool, held: np.ndarray, device: torch.device
) -> dict[str, Any]:
    """Entry `name` trained from its initial weights on `data` without `held`; its figures on
    `held` with the weights the recipe keeps."""
    inputs, labels = data
    rest = np.setdiff1d(np.arange(len(labels)), held)
    model, checkpoint = models.load(paths.init_file(name))
    model, classes = model.to(device), tuple(checkpoint["classes"])
    recipe = Recipe.from_params(p, name, model, labels[rest].numpy(), classes)
    trainee = Speed.from_params(p).model(training.runner(model), device)
    val = (inputs[held], labels[held])
    _, kept, _ = training.fit(
        trainee, recipe.loss_fn, recipe.optimisation(model), (inputs[rest], labels[rest]), val,
        recipe.plan, device,
    )  # fmt: skip
    logits = training.predict(trainee, val[0], p["train.batch_size"], device)
    loss = recipe.loss_fn(logits.to(device), val[1].to(device)).item()
    scores = metrics.classification_metrics(
        val[1].numpy(), logits.softmax(1).numpy(), classes, loss
    )
    return {"val_accuracy": scores["test_accuracy"], "macro_f1": scores["macro_f1"],
            "val_loss": scores["test_loss"], "kept_epoch": kept}  # fmt: skip


def run(p: StageParams, name: str, device: torch.device) -> dict[str, Any]:
    """Every fold's figures, and their mean and sample standard deviation."""
    k = p["split.folds"]
    data = pool(p, name)
    per_fold = [
        train_fold(p, name, data, held, device)
        for held in prepare.folds(data[1].numpy(), k, p["seed"])
    ]
    table = {f: np.array([r[f] for r in per_fold], dtype=float) for f in FIGURES}
    return {
        "folds": k,
        "mean": {f: metrics.rounded(float(v.mean())) for f, v in table.items()},
        "std": {f: metrics.rounded(float(v.std(ddof=1))) for f, v in table.items()},
        "per_fold": per_fold,
    }
