"""Stage init@<entry>: the entry's initial model, built from the seed with its pretrained weights
resolved once, and, when its features are frozen (a ResNet trunk with eval-mode batch norm),
their values for the train, val and test images, computed once and shared by every experiment
that changes only the loss, epochs, learning rate or other training settings (train and evaluate
then run only the head).

Usage: python stages/init.py ENTRY
"""

import sys

import numpy as np
import torch

from ferpipe import dataset, models, params, paths, runinfo, training
from ferpipe.errors import exits_cleanly
from ferpipe.labels import TASK_CLASSES
from ferpipe.speed import Speed


@exits_cleanly
def main(name: str) -> None:
    p = params.for_stage(f"init@{name}")
    speed = Speed.from_params(p)
    speed.configure_allocator()
    device = runinfo.setup(p["train.threads"], p["seed"], p["train.device"])
    classes = TASK_CLASSES[p["task"]]
    model = models.from_entry(name, p[f"zoo.{name}"], len(classes))
    models.save(model, classes, paths.init_file(name))
    model = speed.layout(model.to(device))
    features = speed.features(model, device)
    shapes = {}
    for part in ("train", "val", "test") if model.frozen_features else ():
        pixels = torch.from_numpy(dataset.load(paths.split_file(part)).pixels)
        cached = training.predict(
            model, pixels, p["train.batch_size"], device, features, f"features {part}"
        ).numpy()  # NHWC in memory when channels_last; np.save writes it in NCHW order
        with dataset.atomic_path(paths.features_file(name, part)) as tmp, open(tmp, "wb") as f:
            np.save(f, cached)
        shapes[part] = list(cached.shape)
    info = {"arch": model.arch, "frozen_features": model.frozen_features, "shapes": shapes}
    dataset.write_json(info, paths.features_dir(name) / "info.json")
    print(f"init {name}: {model.arch}, weights {model.weights}, cached features {shapes or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1])
