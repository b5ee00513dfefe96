"""A zoo entry's recipe as the train and crossval stages assemble it from params.yaml."""

import copy

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from ferpipe import losses, models, optim, params
from ferpipe.errors import FerError
from ferpipe.recipe import Recipe

from .conftest import ROOT

DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())
CLASSES = ("angry", "fear", "happy", "sad")
LABELS = np.array([0] * 40 + [1] * 20 + [2] * 30 + [3] * 10)


def recipe_of(name: str, tree=DEFAULTS, **args) -> tuple[Recipe, models.FerModel]:
    spec = tree["zoo"][name]
    model = models.build(spec["arch"], len(CLASSES), **{**spec["args"], **args})
    return Recipe.from_params(
        params.StageParams("train", tree), name, model, LABELS, CLASSES
    ), model


def test_seed_000_recipe_is_adam_without_schedule_augmentation_or_smoothing():
    recipe, model = recipe_of("cnn")
    assert recipe.plan.augment is None and recipe.plan.patience == 0 and recipe.plan.epochs == 10
    opt = recipe.optimisation(model)
    assert type(opt.optimizer) is torch.optim.Adam and opt.scheduler is None and opt.lr == 1e-4
    assert isinstance(recipe.loss_fn, nn.CrossEntropyLoss)  # the shared loss: ce
    assert recipe.loss_fn.weight.tolist() == pytest.approx(
        DEFAULTS["train"]["class_weights"]["multiclass"]
    )
    assert recipe.loss_fn.label_smoothing == 0.0


def test_seed_001_recipe_is_adamw_plateau_early_stopping_inverse_frequency_and_augmentation():
    recipe, model = recipe_of("seed001_m2")
    opt = recipe.optimisation(model)
    assert type(opt.optimizer) is torch.optim.AdamW and opt.lr == 1e-5
    assert isinstance(opt.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert opt.scheduler.patience == 10 and opt.scheduler.factor == 0.1
    assert recipe.plan.patience == 30 and recipe.plan.augment is not None
    expected = losses.class_weights("inverse_frequency", [], LABELS, CLASSES)
    assert recipe.loss_fn.weight.tolist() == pytest.approx(expected)


def test_seed_004_recipe_is_smoothed_focal_loss_and_its_resnet_has_differential_rates():
    recipe, _ = recipe_of("seed004")
    assert isinstance(recipe.loss_fn, losses.FocalLoss) and recipe.loss_fn.smoothing == 0.1
    assert recipe.loss_fn.weight.tolist() == [1.0] * 4
    recipe, model = recipe_of("seed004_resnet", weights="none", image_size=32)
    head, backbone = recipe.optimisation(model).optimizer.param_groups
    assert (head["lr"], backbone["lr"]) == (1e-3, 1e-4)


def test_augmenting_cached_features_is_refused_naming_the_way_out():
    tree = copy.deepcopy(DEFAULTS)
    tree["zoo"]["resnet"]["augment"] = "seed004"
    with pytest.raises(FerError, match="zoo.resnet.augment='seed004': this entry trains on feat"):
        recipe_of("resnet", tree, weights="none", image_size=32)


def test_a_bad_schedule_is_refused_before_training():
    tree = copy.deepcopy(DEFAULTS)
    tree["zoo"]["cnn"]["schedule"] = {"name": "warmup"}
    with pytest.raises(FerError, match="schedule 'warmup' is unknown; use one of: cosine, none"):
        recipe_of("cnn", tree)
    assert "warmup" not in optim.SCHEDULES
