"""The zoo's registry and the interface every architecture implements.

An architecture is a builder (a FerModel subclass or a function returning one) registered under
a name; `build(name, num_classes, **args)` is the only constructor. A built model remembers its
name and arguments, so a checkpoint rebuilds it on its own (`save` / `load`).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferpipe.errors import FerError
from ferpipe.registry import Entry, Registry


class FerModel(nn.Module):
    """A classifier of uint8 48x48 faces. `forward(x) == head(features(x))`.

    - `preprocess`: a uint8 (N, 48, 48) batch in, the model's input out. Models do their own
      preprocessing so the data stays compact uint8 in memory and is converted a batch at a time.
    - `features`: the convolutional part up to the classifier or, for a model that freezes its
      first layers, exactly those layers; `head`: the rest.
    - `frozen_features`: whether `features` has nothing to train and computes the same in train
      and eval mode, so the pipeline computes it once per image and trains `head` on the cache.
    - `weights`: where the initial weights came from (recorded beside the metrics).
    """

    weights: str = "random"
    arch: str = ""
    args: dict[str, Any]

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def frozen_features(self) -> bool:
        return False

    def auxiliary_loss(self, labels: torch.Tensor) -> torch.Tensor | None:
        """A term the model adds to the training loss for the batch it last ran in train mode
        (DACL's sparse center loss), or None. Called right after that forward pass."""
        return None

    def trainable(self) -> list[nn.Parameter]:
        """The parameters an optimiser updates (frozen layers have requires_grad False)."""
        return [w for w in self.parameters() if w.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        """The classifier's parameters: what a pretrained backbone lacks, trained at the entry's
        `lr` when `backbone_lr` gives the rest another rate."""
        raise NotImplementedError


class BodyAndClassifier(FerModel):
    """A model made of a convolutional `body` (its features) and a `classifier` (its head)."""

    body: nn.Module
    classifier: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.classifier.parameters())


class CachedFeatures(nn.Module):
    """Trains a model's head on its frozen features computed once (`frozen_features` only)."""

    def __init__(self, model: FerModel):
        super().__init__()
        self.model = model

    @staticmethod
    def preprocess(features: torch.Tensor) -> torch.Tensor:
        return features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(features)


ZOO = Registry("architecture", supplied=("num_classes",))
Architecture = Entry  # a registered architecture: builder, fixed and tiny arguments
register, names, architecture, check_args = ZOO.register, ZOO.names, ZOO.get, ZOO.check_args


def build(name: str, num_classes: int, **args: Any) -> FerModel:
    """The architecture `name` for `num_classes` classes, with `args` from its zoo entry."""
    model = ZOO.build(name, num_classes, **args)
    model.arch, model.args = name, dict(args)
    return model


def save(model: FerModel, classes: tuple[str, ...], path: Path) -> None:
    """One checkpoint dict: the architecture, its arguments, the classes and the weights."""
    from ferpipe.dataset import atomic_path

    checkpoint = {
        "arch": model.arch,
        "args": model.args,
        "classes": list(classes),
        "weights": model.weights,
        "state_dict": model.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def read_torch_file(path: Path, what: str) -> Any:
    """`torch.load(path, weights_only=True)`, with one clear line for each way it fails: a file
    holding Python objects besides tensors is refused, since unpickling them could run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FerError(f"{path}: not found; run the stage that writes it (dvc repro)") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        holds = f" (it holds {found[1]})" if found else ""
        raise FerError(
            f"{path}: refused: not only tensors{holds}, and loading other Python objects could "
            f"run code; use {what} saved with torch.save"
        ) from None
    except Exception as exc:  # torch raises many types for a file that is not its own
        raise FerError(
            f"{path}: not a PyTorch file ({type(exc).__name__}); use {what} saved with torch.save"
        ) from None


def load(path: Path) -> tuple[FerModel, dict[str, Any]]:
    """Rebuild a model saved by `save` (read with weights_only=True). Pretrained-weight arguments
    are replaced by "none": the checkpoint's state holds the weights. A checkpoint with NaN or
    infinite weights (from a run that diverged) is refused."""
    checkpoint = read_torch_file(path, "a checkpoint written by the pipeline")
    if not isinstance(checkpoint, dict) or not {"arch", "args", "classes", "state_dict"} <= set(
        checkpoint
    ):
        raise FerError(f"{path}: not a checkpoint written by the pipeline (models.save)")
    bad = [
        k
        for k, t in checkpoint["state_dict"].items()
        if t.is_floating_point() and not t.isfinite().all()
    ]
    if bad:
        raise FerError(
            f"{path}: {len(bad)} weight tensors hold NaN or infinite values (first: {bad[0]}); "
            "the training that wrote it diverged - retrain it with a lower learning rate"
        )
    args = dict(checkpoint["args"])
    if "weights" in args:
        args["weights"] = "none"
    model = build(checkpoint["arch"], len(checkpoint["classes"]), **args)
    model.load_state_dict(checkpoint["state_dict"])
    model.args, model.weights = dict(checkpoint["args"]), checkpoint["weights"]
    return model, checkpoint


def from_entry(entry: str, spec: Mapping[str, Any], num_classes: int) -> FerModel:
    """Build zoo entry `entry` of params.yaml ({arch, args, ...}); errors name its keys."""
    where = f"params.yaml: zoo.{entry}"
    try:
        args = spec.get("args") or {}
        check_args(spec["arch"], args, f"zoo.{entry}.args")  # names the keys; build checks too
        return build(spec["arch"], num_classes, **args)
    except FerError as exc:
        raise FerError(f"{where}: {exc}") from None
