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
from ferpipe.optim import Optimisation


@dataclass(frozen=True)
class EpochRecord:
    """One row of the training history (seed 000's columns, validation loss, learning rate)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float


@dataclass(frozen=True)
class Plan:
    """How `fit` trains: epochs, batch size, the shuffling seed, the weights kept (last epoch's,
    or the best validation accuracy's), early stopping (stop after `patience` epochs without a
    lower validation loss and keep the lowest's weights; 0 = off), the augmentation of the
    training batches (`augment(batch, epoch)`), a model's own loss term added to each training
    step's (`auxiliary(labels)`, FerModel.auxiliary_loss), and `name` for the progress output."""

    epochs: int
    batch_size: int
    seed: int
    keep: str = "last"
    patience: int = 0
    augment: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    auxiliary: Callable[[torch.Tensor], torch.Tensor | None] | None = None
    name: str = "model"


@dataclass
class Progress:
    """Where a run stands: the epochs done and the generator that shuffles the next one. `fit`
    extends it; a longer run handed a shorter one's (ferpipe.resume) continues where it ended."""

    history: list[EpochRecord]
    generator: torch.Generator

    @classmethod
    def start(cls, seed: int) -> Progress:
        """Before epoch 1: no history, the shuffling generator seeded with `seed`."""
        return cls([], torch.Generator().manual_seed(seed))


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
        inputs = [torch.from_numpy(np.load(paths.features_file(entry, p))) for p in parts]
    else:
        inputs = [torch.from_numpy(s.pixels) for s in split]
    return runner(model), list(zip(inputs, labels, strict=True))


def runner(model: models.FerModel) -> nn.Module:
    """What runs on `model_inputs`: its head alone when its features are cached, else itself."""
    return models.CachedFeatures(model) if model.frozen_features else model


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
    train: tuple[torch.Tensor, torch.Tensor],
    plan: Plan,
    epoch: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[float, float]:
    """One pass over the shuffled (and augmented) training set; returns (mean loss, accuracy)."""
    model.train()
    pixels, labels = train
    total_loss, correct = 0.0, 0
    order = torch.randperm(len(pixels), generator=generator)
    desc = f"{plan.name} {epoch}/{plan.epochs}"
    with tqdm(total=len(pixels), desc=desc, unit="img", mininterval=1.0, leave=False) as bar:
        for step, idx in enumerate(batches(len(pixels), plan.batch_size, order), 1):
            batch = pixels[idx] if plan.augment is None else plan.augment(pixels[idx], epoch)
            x, y = model.preprocess(to_device(batch, device)), to_device(labels[idx], device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            extra = plan.auxiliary(y) if plan.auxiliary else None
            loss = loss if extra is None else loss + extra
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


@dataclass
class _Keeper:
    """The weights `fit` leaves in the model: the last epoch's, the best validation accuracy's
    (keep best) or, with early stopping, the lowest validation loss's."""

    plan: Plan
    epoch: int = 0
    score: float = -math.inf
    state: dict | None = None
    waited: int = 0

    def update(self, model: nn.Module, record: EpochRecord) -> bool:
        """Note this epoch; True when early stopping says to stop."""
        by_loss = self.plan.patience > 0
        if by_loss or self.plan.keep == "best":
            score = -record.val_loss if by_loss else record.val_accuracy
            if score > self.score:
                self.epoch, self.score, self.waited = record.epoch, score, 0
                self.state = copy.deepcopy(model.state_dict())
                return False
            self.waited += 1
            return by_loss and self.waited >= self.plan.patience
        self.epoch = record.epoch
        return False


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    optimisation: Optimisation,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    plan: Plan,
    device: torch.device,
    progress: Progress | None = None,
) -> tuple[list[EpochRecord], int, float]:
    """Train as `plan` says, stepping the learning-rate schedule after each epoch's validation;
    leave in `model` the weights kept (see `_Keeper`). Starts after the epochs `progress` holds
    (none by default) and extends it. Returns the whole history, the 1-based epoch kept and the
    seconds spent in this call's training steps (validation excluded)."""
    progress = progress or Progress.start(plan.seed)
    history, generator = progress.history, progress.generator
    loss_fn = loss_fn.to(device)
    keeper = _Keeper(plan, epoch=len(history))
    train_seconds = 0.0
    for epoch in range(len(history) + 1, plan.epochs + 1):
        lr = optimisation.lr
        start = time.perf_counter()
        try:
            train_loss, train_acc = train_one_epoch(
                model, loss_fn, optimisation.optimizer, train, plan, epoch, generator, device
            )
        except Diverged as exc:
            raise FerError(
                f"training {plan.name} diverged: {exc} of epoch {epoch}; nothing was written - "
                f"lower its learning rate (zoo.{plan.name}.lr, now {lr:g}; try {lr / 10:g})"
            ) from None
        seconds = time.perf_counter() - start
        train_seconds += seconds
        logits = predict(model, val[0], plan.batch_size, device)
        val_loss = loss_fn(logits.to(device), val[1].to(device)).item()
        val_acc = (logits.argmax(1) == val[1]).float().mean().item()
        history.append(EpochRecord(epoch, train_loss, train_acc, val_loss, val_acc, lr))
        tqdm.write(
            f"{plan.name} epoch {epoch}/{plan.epochs}: train loss {train_loss:.4f} acc "
            f"{train_acc:.2%}, val loss {val_loss:.4f} acc {val_acc:.2%}, lr {lr:.3g}, "
            f"{len(train[0]) / seconds:.1f} images/s"
        )
        if keeper.update(model, history[-1]):
            tqdm.write(
                f"{plan.name}: early stop, no lower validation loss for {plan.patience} epochs"
            )
            break
        optimisation.end_epoch(val_loss)
    if keeper.state is not None:
        model.load_state_dict(keeper.state)
    return history, keeper.epoch, train_seconds


def history_rows(history: list[EpochRecord]) -> list[dict[str, float]]:
    """History as plain dicts, for CSV output."""
    return [asdict(r) for r in history]
