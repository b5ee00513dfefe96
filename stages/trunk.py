"""Stage resnet_trunk: the initial ResNet18 and, with resnet.freeze_bn, its frozen trunk's
features of the train and val images, computed once and shared by every experiment that
changes only the loss, epochs, learning rate or other training settings."""

import numpy as np
import torch

from ferpipe import dataset, models, params, paths, runinfo, training
from ferpipe.errors import exits_cleanly
from ferpipe.labels import TASK_CLASSES
from ferpipe.speed import Speed


@exits_cleanly
def main() -> None:
    p = params.for_stage("resnet_trunk")
    speed = Speed.from_params(p)
    speed.configure_allocator()
    device = runinfo.setup(p["train.threads"], p["seed"])
    classes = TASK_CLASSES[p["task"]]
    model, weights = models.build(
        "resnet", len(classes), p["resnet.weights"], p["resnet.image_size"], p["resnet.freeze_bn"]
    )
    models.save_checkpoint(model, "resnet", classes, weights, paths.RESNET_INIT)
    paths.TRUNK_DIR.mkdir(parents=True, exist_ok=True)
    model = speed.layout(model.to(device))
    trunk = speed.function(model.trunk)
    shapes = {}
    for part in ("train", "val") if p["resnet.freeze_bn"] else ():
        pixels = torch.from_numpy(dataset.load(paths.split_file(part)).pixels)
        features = training.predict(
            model, pixels, p["train.batch_size"], device, trunk, f"trunk {part}"
        ).numpy()  # NHWC in memory when channels_last; np.save writes it in NCHW order
        with dataset.atomic_path(paths.trunk_file(part)) as tmp, open(tmp, "wb") as f:
            np.save(f, features)
        shapes[part] = list(features.shape)
    dataset.write_json(
        {"freeze_bn": p["resnet.freeze_bn"], "shapes": shapes}, paths.TRUNK_DIR / "info.json"
    )
    print(f"resnet_trunk: weights {weights}, features {shapes or 'not cached (freeze_bn false)'}")


if __name__ == "__main__":
    main()
