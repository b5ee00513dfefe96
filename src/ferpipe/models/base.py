"""The zoo's registry and the interface every architecture implements.

An architecture is a builder (a FerModel subclass or a function returning one) registered under
a name; `build(name, num_classes, **args)` is the only constructor. A built model remembers its
name and arguments, so a checkpoint rebuilds it on its own (`save` / `load`).
"""

from __future__ import annotations

import inspect
import math
import pickle
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferpipe.errors import FerError


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

    def trainable(self) -> list[nn.Parameter]:
        """The parameters an optimiser updates (frozen layers have requires_grad False)."""
        return [w for w in self.parameters() if w.requires_grad]


class BodyAndClassifier(FerModel):
    """A model made of a convolutional `body` (its features) and a `classifier` (its head)."""

    body: nn.Module
    classifier: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


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


@dataclass(frozen=True)
class Architecture:
    """A registered builder, the arguments fixed for this name, and small arguments for tests."""

    name: str
    builder: Callable[..., FerModel]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    tiny: Mapping[str, Any] = field(default_factory=dict)

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The arguments a params.yaml entry may set, with their defaults."""
        signature = inspect.signature(self.builder)
        return {
            name: p
            for name, p in signature.parameters.items()
            if name not in ("self", "num_classes", *self.fixed)
        }


_ZOO: dict[str, Architecture] = {}


def register(
    name: str, *, fixed: Mapping[str, Any] | None = None, tiny: Mapping[str, Any] | None = None
) -> Callable[[Callable[..., FerModel]], Callable[..., FerModel]]:
    """Register a builder under `name`; `fixed` arguments make one builder several architectures
    (resnet18 and resnet50), `tiny` ones make it small enough for a quick test."""

    def decorator(builder: Callable[..., FerModel]) -> Callable[..., FerModel]:
        if name in _ZOO:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ZOO[name] = Architecture(name, builder, dict(fixed or {}), dict(tiny or {}))
        return builder

    return decorator


def names() -> list[str]:
    return sorted(_ZOO)


def architecture(name: str) -> Architecture:
    if name not in _ZOO:
        raise FerError(f"architecture {name!r} is unknown; use one of: {', '.join(names())}")
    return _ZOO[name]


def check_args(name: str, args: Mapping[str, Any], where: str = "args") -> None:
    """Refuse arguments `name` does not take, or values of the wrong type, naming the key."""
    arch = architecture(name)
    allowed = arch.parameters()
    builder = arch.builder.__init__ if inspect.isclass(arch.builder) else arch.builder
    hints = typing.get_type_hints(builder)
    for key, value in args.items():
        if key not in allowed:
            raise FerError(
                f"{where}.{key}: {name} takes no argument {key!r}; "
                f"it takes: {', '.join(allowed) or 'none'}"
            )
        problem = _type_problem(value, hints.get(key, Any))
        if problem:
            raise FerError(f"{where}.{key}={value!r} {problem}")


def _type_problem(value: Any, hint: Any) -> str | None:
    """None when `value` fits the type hint (bool, int, float, str, Literal, list[...])."""
    origin, inner = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if origin is typing.Literal:
        return None if value in inner else f"must be one of: {', '.join(map(str, inner))}"
    if origin is list:
        if not isinstance(value, list):
            return f"must be a list of {inner[0].__name__}"
        problems = [_type_problem(v, inner[0]) for v in value]
        return next((f"must be a list whose items {p}" for p in problems if p), None)
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) else "must be a finite number"
    ok = isinstance(value, hint) and not isinstance(value, bool)
    return None if ok else f"must be of type {hint.__name__}"


def build(name: str, num_classes: int, **args: Any) -> FerModel:
    """The architecture `name` for `num_classes` classes, with `args` from its zoo entry."""
    arch = architecture(name)
    check_args(name, args)
    model = arch.builder(num_classes, **arch.fixed, **args)
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
