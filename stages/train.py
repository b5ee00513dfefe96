"""Stages train_cnn and train_resnet: train one model on the task's train split.

Usage: python stages/train.py {cnn,resnet}
"""

import sys
import time

import pandas as pd
import torch

from ferpipe import dataset, losses, models, params, paths, runinfo, training
from ferpipe.errors import exits_cleanly
from ferpipe.labels import TASK_CLASSES


@exits_cleanly
def main(name: str) -> None:
    p = params.for_stage(f"train_{name}")
    start = time.perf_counter()
    task, opts = p["task"], p[name]
    classes = TASK_CLASSES[task]
    device = runinfo.setup(p["train.threads"], p["seed"])
    model, weights = models.build(
        name, len(classes), opts.get("weights", "none"), opts.get("image_size", 224)
    )
    model = model.to(device)
    loss_fn = losses.make_loss(p["loss"], p[f"train.class_weights.{task}"], p["train.focal_gamma"])
    trainable = [w for w in model.parameters() if w.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=opts["lr"], weight_decay=opts["weight_decay"])
    train, val = (dataset.load(paths.split_file(part)) for part in ("train", "val"))
    tensors = [(torch.from_numpy(s.pixels), torch.from_numpy(s.labels)) for s in (train, val)]
    history, kept, train_seconds = training.fit(
        model, loss_fn, optimizer, *tensors, opts["epochs"], p["train.batch_size"], p["seed"],
        device, p["train.keep"], name,
    )  # fmt: skip
    models.save_checkpoint(model, name, classes, weights, paths.model_file(name))
    rows = pd.DataFrame(training.history_rows(history))
    with dataset.atomic_path(paths.history_file(name)) as tmp:
        rows.to_csv(tmp, index=False)
    wall = time.perf_counter() - start
    ips = opts["epochs"] * len(train) / train_seconds
    record = {
        "epochs": opts["epochs"],
        "kept_epoch": kept,
        "val_accuracy": round(history[kept - 1].val_accuracy, 6),
        "weights": weights,
        "train_images": len(train),
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
