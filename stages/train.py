"""Stages train_cnn and train_resnet: train one model on the task's train split.

Usage: python stages/train.py {cnn,resnet}
"""

import sys
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from ferpipe import dataset, losses, models, params, paths, runinfo, training
from ferpipe.errors import exits_cleanly
from ferpipe.labels import TASK_CLASSES
from ferpipe.speed import Speed, adam


def initial_model(name: str, classes: tuple[str, ...]) -> tuple[nn.Module, str]:
    """A fresh CNN, or the ResNet18 the resnet_trunk stage built (its weights resolved there)."""
    if name == "cnn":
        return models.build("cnn", len(classes))
    model, checkpoint = models.load_checkpoint(paths.RESNET_INIT)
    return model, checkpoint["weights"]


def trainee_and_inputs(
    model: nn.Module,
) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """What `fit` trains and the (inputs, labels) of the train and val splits: the model on
    images, or, when the ResNet trunk is frozen with eval-mode batch norm, its head on the
    trunk features cached by the resnet_trunk stage."""
    parts = [dataset.load(paths.split_file(part)) for part in ("train", "val")]
    labels = [torch.from_numpy(s.labels) for s in parts]
    if getattr(model, "freeze_bn", False):
        features = [torch.from_numpy(np.load(paths.trunk_file(part))) for part in ("train", "val")]
        return models.CachedTrunk(model), list(zip(features, labels, strict=True))
    return model, [(torch.from_numpy(s.pixels), y) for s, y in zip(parts, labels, strict=True)]


@exits_cleanly
def main(name: str) -> None:
    p = params.for_stage(f"train_{name}")
    start = time.perf_counter()
    speed = Speed.from_params(p)
    reusing_memory = speed.configure_allocator()
    task, opts = p["task"], p[name]
    classes = TASK_CLASSES[task]
    device = runinfo.setup(p["train.threads"], p["seed"])
    model, weights = initial_model(name, classes)
    model = model.to(device)
    trainee, (train, val) = trainee_and_inputs(model)
    trainee = speed.model(trainee)  # shares model's parameters, so model is what gets trained
    loss_fn = losses.make_loss(p["loss"], p[f"train.class_weights.{task}"], p["train.focal_gamma"])
    trainable = [w for w in model.parameters() if w.requires_grad]
    optimizer = adam(trainable, opts["lr"], opts["weight_decay"])
    history, kept, train_seconds = training.fit(
        trainee, loss_fn, optimizer, train, val, opts["epochs"], p["train.batch_size"], p["seed"],
        device, p["train.keep"], name,
    )  # fmt: skip
    models.save_checkpoint(model, name, classes, weights, paths.model_file(name))
    rows = pd.DataFrame(training.history_rows(history))
    with dataset.atomic_path(paths.history_file(name)) as tmp:
        rows.to_csv(tmp, index=False)
    wall = time.perf_counter() - start
    ips = opts["epochs"] * len(train[0]) / train_seconds
    record = {
        "epochs": opts["epochs"],
        "kept_epoch": kept,
        "val_accuracy": round(history[kept - 1].val_accuracy, 6),
        "weights": weights,
        "trunk_cached": getattr(model, "freeze_bn", False),
        "channels_last": speed.channels_last,
        "compiled": speed.compile,
        "reuse_memory": reusing_memory,
        "train_images": len(train[0]),
        "training_seconds": round(train_seconds, 2),
        "wall_seconds": round(wall, 2),
        "images_per_second": round(ips, 2),
        **runinfo.environment(device),
    }
    dataset.write_json(record, paths.training_record(name))
    print(
        f"{name}: {opts['epochs']} epochs, validation accuracy {history[kept - 1].val_accuracy:.2%} "
        f"(epoch {kept} kept), wall time {wall:.1f} s, {ips:.1f} images/s"
    )


if __name__ == "__main__":
    main(sys.argv[1])
