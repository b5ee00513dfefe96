"""Stage train@<entry>: train one zoo entry by its recipe on the task's train split, selecting on
val; also a picture of its augmented training images.

Usage: python stages/train.py ENTRY
"""

import sys
import time

import pandas as pd
import torch

from ferpipe import augment, dataset, models, params, paths, resume, runinfo, training
from ferpipe.errors import exits_cleanly
from ferpipe.recipe import Recipe
from ferpipe.speed import Speed


@exits_cleanly
def main(name: str) -> None:
    p = params.for_stage(f"train@{name}")
    start = time.perf_counter()
    speed = Speed.from_params(p)
    reusing_memory = speed.configure_allocator()
    entry = p[f"zoo.{name}"]
    device = runinfo.setup(p["train.threads"], p["seed"], p["train.device"])
    model, checkpoint = models.load(paths.init_file(name))
    model = model.to(device)
    classes = tuple(checkpoint["classes"])
    trainee, (train, val) = training.model_inputs(model, name, ("train", "val"))
    recipe = Recipe.from_params(p, name, model, train[1].numpy(), classes)
    trainee = speed.model(trainee, device)  # shares model's parameters: model is what trains
    optimisation, plan = recipe.optimisation(model), recipe.plan
    store = resume.Store.for_run(p, plan, device)
    progress = training.Progress.start(plan.seed)
    if store:
        progress = store.restore(plan, model, optimisation, recipe.augmentation, device)
    resumed = len(progress.history)
    history, kept, train_seconds = training.fit(
        trainee, recipe.loss_fn, optimisation, train, val, plan, device, progress
    )
    if store:
        store.save(model, optimisation, progress, recipe.augmentation, device)
    models.save(model, classes, paths.model_file(name))
    pixels = dataset.load(paths.split_file("train")).pixels[:8]  # images, also for features
    augment.preview(
        torch.from_numpy(pixels), [classes[i] for i in train[1][:8]], recipe.augmentation,
        paths.augmented_png(name),
    )  # fmt: skip
    rows = pd.DataFrame(training.history_rows(history))
    with dataset.atomic_path(paths.history_file(name)) as tmp:
        rows.to_csv(tmp, index=False)
    wall = time.perf_counter() - start
    ips = (len(history) - resumed) * len(train[0]) / train_seconds
    record = {
        "arch": model.arch,
        "epochs": entry["epochs"],
        "epochs_run": len(history),
        "resumed_from_epoch": resumed,
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
        f"{name}: {len(history)} of {entry['epochs']} epochs"
        f"{f' (continued after epoch {resumed})' if resumed else ''}, validation accuracy "
        f"{history[kept - 1].val_accuracy:.2%} (epoch {kept} kept), wall time {wall:.1f} s, "
        f"{ips:.1f} images/s"
    )


if __name__ == "__main__":
    main(sys.argv[1])
