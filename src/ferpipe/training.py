"""Training and inference loops over in-memory uint8 tensors (no per-sample decoding)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ferpipe import dataset, models, paths
from ferpipe.errors import FerError


@dataclass(frozen=True)
class EpochRecord:
    """One row of the training history (seed 000's columns plus validation loss)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


@dataclass(frozen=True)
class Schedule:
    """How `fit` trains: epochs, batch size, the shuffling seed, and the weights kept (last
    epoch's, or the best validation epoch's); `name` labels the progress output."""

    epochs: int
    batch_size: int
    seed: int
    keep: str = "last"
    name: str = "model"


class Diverged(Exception):
    """The training loss became NaN or infinite at `step` (1-based) of an epoch."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"loss {loss} at step {step}")
        self.step, self.loss = step, loss


def model_inputs(
    model: models.FerModel, entry: str, parts: tuple[str, ...]
) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """What to run and the (inputs, labels) of each split part: the model on images or, when its
    features are frozen, its head on the features the init stage cached for every part."""
    split = [dataset.load(paths.split_file(part)) for part in parts]
    labels = [torch.from_numpy(s.labels) for s in split]
    if model.frozen_features:
        cached = [torch.from_numpy(np.load(paths.features_file(entry, p))) for p in parts]
        return models.CachedFeatures(model), list(zip(cached, labels, strict=True))
    return model, [(torch.from_numpy(s.pixels), y) for s, y in zip(split, labels, strict=True)]


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One batch on `device`; to a GPU from pinned memory without blocking, so the copy of the
    next batch overlaps this one's compute (the whole split never sits in GPU memory)."""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def batches(n: int, batch_size: int, order: torch.Tensor | None = None):
    """Index tensors of consecutive batches over `order` (or 0..n-1)."""
    order = torch.arange(n) if order is None else order
    return order.split(batch_size)


@torch.no_grad()
def predict(
    model: nn.Module,
    pixels: torch.Tensor,
    batch_size: int,
    device: torch.device,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str | None = None,
) -> torch.Tensor:
    """Outputs for every image in eval mode, a batch at a time: the logits, or what `forward`
    (e.g. `model.trunk`) returns for the preprocessed batch. A progress bar when `desc` is set."""
    model.eval()
    forward = forward or model
    out = []
    with tqdm(
        total=len(pixels), desc=desc, unit="img", mininterval=1.0, disable=desc is None
    ) as bar:
        for idx in batches(len(pixels), batch_size):
            out.append(forward(model.preprocess(to_device(pixels[idx], device))).cpu())
            bar.update(len(idx))
    return torch.cat(out)


def train_one_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    desc: str,
) -> tuple[float, float]:
    """One pass over the shuffled training set; returns (mean loss, accuracy)."""
    model.train()
    total_loss, correct = 0.0, 0
    order = torch.randperm(len(pixels), generator=generator)
    with tqdm(total=len(pixels), desc=desc, unit="img", mininterval=1.0, leave=False) as bar:
        for step, idx in enumerate(batches(len(pixels), batch_size, order), 1):
            x, y = model.preprocess(to_device(pixels[idx], device)), to_device(labels[idx], device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(step, value)  # before the step: one NaN update ruins every weight
            loss.backward()
            optimizer.step()
            total_loss += value * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            bar.update(len(idx))
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    return total_loss / len(pixels), correct / len(pixels)


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    schedule: Schedule,
    device: torch.device,
) -> tuple[list[EpochRecord], int, float]:
    """Train as `schedule` says; leave in `model` the last epoch's weights, or the best
    validation epoch's when keep == "best". Returns the history, the 1-based epoch kept and the
    seconds spent in training steps (validation excluded)."""
    epochs, name = schedule.epochs, schedule.name
    generator = torch.Generator().manual_seed(schedule.seed)
    loss_fn = loss_fn.to(device)
    history: list[EpochRecord] = []
    best_state, best_epoch, best_acc = None, epochs, -1.0
    train_seconds = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        try:
            train_loss, train_acc = train_one_epoch(
                model,
                loss_fn,
                optimizer,
                *train,
                schedule.batch_size,
                generator,
                device,
                f"{name} {epoch}/{epochs}",
            )
        except Diverged as exc:
            lr = optimizer.param_groups[0]["lr"]
            raise FerError(
                f"training {name} diverged: {exc} of epoch {epoch}; nothing was written - lower "
                f"its learning rate (zoo.{name}.lr, now {lr:g}; try {lr / 10:g})"
            ) from None
        seconds = time.perf_counter() - start
        train_seconds += seconds
        logits = predict(model, val[0], schedule.batch_size, device)
        val_loss = loss_fn(logits.to(device), val[1].to(device)).item()
        val_acc = (logits.argmax(1) == val[1]).float().mean().item()
        history.append(EpochRecord(epoch, train_loss, train_acc, val_loss, val_acc))
        tqdm.write(
            f"{name} epoch {epoch}/{epochs}: train loss {train_loss:.4f} acc {train_acc:.2%}, "
            f"val loss {val_loss:.4f} acc {val_acc:.2%}, {len(train[0]) / seconds:.1f} images/s"
        )
        if schedule.keep == "best" and val_acc > best_acc:
            best_state, best_epoch, best_acc = copy.deepcopy(model.state_dict()), epoch, val_acc
    if best_state is not None:
        model.load_state_dict(best_state)
    return history, best_epoch, train_seconds


def history_rows(history: list[EpochRecord]) -> list[dict[str, float]]:
    """History as plain dicts, for CSV output."""
    return [asdict(r) for r in history]
