"""Stage evaluate@<model>: test metrics and per-image predictions of one trained model.

Usage: python stages/evaluate.py {cnn,resnet}
"""

import sys

import pandas as pd
import torch

from ferpipe import dataset, losses, metrics, models, params, paths, runinfo, training
from ferpipe.errors import exits_cleanly
from ferpipe.speed import Speed


@exits_cleanly
def main(name: str) -> None:
    p = params.for_stage(f"evaluate@{name}")
    device = runinfo.setup(p["train.threads"])
    speed = Speed.from_params(p)
    speed.configure_allocator()
    model, checkpoint = models.load_checkpoint(paths.model_file(name))
    classes = tuple(checkpoint["classes"])
    test = dataset.load(paths.split_file("test"))
    logits = training.predict(
        speed.model(model.to(device)),
        torch.from_numpy(test.pixels),
        p["train.batch_size"],
        device,
        desc=f"test {name}",
    )
    labels = torch.from_numpy(test.labels)
    loss_fn = losses.make_loss(
        p["loss"], p[f"train.class_weights.{p['task']}"], p["train.focal_gamma"]
    )
    probs = logits.softmax(1).numpy()
    scores = metrics.classification_metrics(
        test.labels, probs, classes, loss_fn(logits, labels).item()
    )
    scores["weights"] = checkpoint["weights"]
    dataset.write_json(scores, paths.metrics_file(name))
    predictions = pd.DataFrame(
        {
            "id": test.ids,
            "actual": [classes[i] for i in test.labels],
            "predicted": [classes[i] for i in probs.argmax(1)],
            **{f"p_{c}": probs[:, i].round(6) for i, c in enumerate(classes)},
        }
    )
    with dataset.atomic_path(paths.predictions_file(name)) as tmp:
        predictions.to_csv(tmp, index=False)
    print(
        f"evaluate {name}: test accuracy {scores['test_accuracy']:.2%}, macro F1 {scores['macro_f1']:.2%}, "
        f"top-2 {scores['top2_accuracy']:.2%} on {len(test)} images"
    )


if __name__ == "__main__":
    main(sys.argv[1])
