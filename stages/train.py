"""Stage train@<entry>: train one zoo entry on the task's train split, selecting on val.

Usage: python stages/train.py ENTRY
"""

import sys
import time

import pandas as pd

from ferpipe import dataset, losses, models, params, paths, runinfo, training
from ferpipe.errors import exits_cleanly
from ferpipe.speed import Speed, adam


@exits_cleanly
def main(name: str) -> None:
    p = params.for_stage(f"train@{name}")
    start = time.perf_counter()
    speed = Speed.from_params(p)
    reusing_memory = speed.configure_allocator()
    task, entry = p["task"], p[f"zoo.{name}"]
    device = runinfo.setup(p["train.threads"], p["seed"], p["train.device"])
    model, checkpoint = models.load(paths.init_file(name))
    model = model.to(device)
    trainee, (train, val) = training.model_inputs(model, name, ("train", "val"))
    trainee = speed.model(
        trainee, device
    )  # shares model's parameters, so model is what gets trained
    loss_fn = losses.make_loss(p["loss"], p[f"train.class_weights.{task}"], p["train.focal_gamma"])
    optimizer = adam(model.trainable(), entry["lr"], entry["weight_decay"])
    schedule = training.Schedule(
        entry["epochs"], p["train.batch_size"], p["seed"], p["train.keep"], name
    )
    history, kept, train_seconds = training.fit(
        trainee, loss_fn, optimizer, train, val, schedule, device
    )
    models.save(model, tuple(checkpoint["classes"]), paths.model_file(name))
    rows = pd.DataFrame(training.history_rows(history))
    with dataset.atomic_path(paths.history_file(name)) as tmp:
        rows.to_csv(tmp, index=False)
    wall = time.perf_counter() - start
    ips = entry["epochs"] * len(train[0]) / train_seconds
    record = {
        "arch": model.arch,
        "epochs": entry["epochs"],
        "kept_epoch": kept,
        "val_accuracy": round(history[kept - 1].val_accuracy, 6),
        "weights": model.weights,
        "features_cached": model.frozen_features,
        "channels_last": speed.channels_last,
        "compiled": speed.compile,
        "reuse_memory": reusing_memory,
        "precision": "bf16" if speed.bf16(device) else "fp32",
        "train_images": len(train[0]),
        "training_seconds": round(train_seconds, 2),
        "wall_seconds": round(wall, 2),
        "images_per_second": round(ips, 2),
        "peak_memory_mb": runinfo.peak_memory_mb(),
        **runinfo.environment(device),
    }
    dataset.write_json(record, paths.training_record(name))
    print(
        f"{name}: {entry['epochs']} epochs, validation accuracy "
        f"{history[kept - 1].val_accuracy:.2%} (epoch {kept} kept), wall time {wall:.1f} s, "
        f"{ips:.1f} images/s"
    )


if __name__ == "__main__":
    main(sys.argv[1])
