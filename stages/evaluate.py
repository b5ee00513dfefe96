"""Stage evaluate@<entry>: test metrics and per-image predictions of one trained model.

The reported test split follows split.validation: PublicTest and PrivateTest together with a
holdout validation split (seed 000), PrivateTest alone when PublicTest selected the model. Its
headline figures are the DVC metric metrics/<entry>.json, so `dvc exp show` stays readable; the
detail (per class, confusion matrices, each split and both together, the weights used) goes to
metrics/<entry>_detail.json.

Usage: python stages/evaluate.py ENTRY
"""

import sys

import numpy as np
import pandas as pd
import torch

from ferpipe import dataset, losses, metrics, models, params, paths, runinfo, training
from ferpipe.errors import FerError, exits_cleanly
from ferpipe.labels import SPLITS
from ferpipe.speed import Speed

TEST_SPLITS = {"PublicTest": ("PublicTest",), "PrivateTest": ("PrivateTest",),
               "PublicTest+PrivateTest": ("PublicTest", "PrivateTest")}  # fmt: skip
REPORTED = {"holdout": "PublicTest+PrivateTest", "publictest": "PrivateTest"}


def rows_of(test: dataset.Images, split: str) -> np.ndarray:
    """Mask of the test images in `split` (a key of TEST_SPLITS)."""
    return np.isin(test.splits, [SPLITS.index(s) for s in TEST_SPLITS[split]])


@exits_cleanly
def main(name: str) -> None:
    p = params.for_stage(f"evaluate@{name}")
    device = runinfo.setup(p["train.threads"], device=p["train.device"])
    speed = Speed.from_params(p)
    speed.configure_allocator()
    model, checkpoint = models.load(paths.model_file(name))
    classes = tuple(checkpoint["classes"])
    test = dataset.load(paths.split_file("test"))
    runner, [(inputs, labels)] = training.model_inputs(model.to(device), name, ("test",))
    logits = training.predict(
        speed.model(runner, device), inputs, p["train.batch_size"], device, desc=f"test {name}"
    )
    train_labels = dataset.load_labels(paths.split_file("train"))  # inverse-frequency weights
    loss_fn = losses.for_entry(p, name, train_labels, classes)
    probs = logits.softmax(1).numpy()

    def scores_on(split: str) -> dict[str, object]:
        mask = rows_of(test, split)
        if not mask.any():
            raise FerError(f"the test data has no {split} images; use split.validation=holdout")
        rows = torch.from_numpy(mask)
        loss = loss_fn(logits[rows], labels[rows]).item()
        return metrics.classification_metrics(test.labels[mask], probs[mask], classes, loss)

    present = [s for s in TEST_SPLITS if rows_of(test, s).any()]
    reported = REPORTED[p["split.validation"]]
    by_split = {s: scores_on(s) for s in present}
    scores = by_split[reported]
    dataset.write_json({k: scores[k] for k in metrics.HEADLINE}, paths.metrics_file(name))
    detail = {"test_split": reported, "weights": checkpoint["weights"], "splits": by_split}
    dataset.write_json(detail, paths.detail_file(name))
    shown = rows_of(test, reported)
    predictions = pd.DataFrame(
        {
            "id": test.ids[shown],
            "actual": [classes[i] for i in test.labels[shown]],
            "predicted": [classes[i] for i in probs[shown].argmax(1)],
            **{f"p_{c}": probs[shown, i].round(6) for i, c in enumerate(classes)},
        }
    )
    with dataset.atomic_path(paths.predictions_file(name)) as tmp:
        predictions.to_csv(tmp, index=False)
    print(
        f"evaluate {name}: {reported} accuracy {scores['test_accuracy']:.2%}, macro F1 "
        f"{scores['macro_f1']:.2%}, top-2 {scores['top2_accuracy']:.2%} on {scores['test_images']} images"
    )


if __name__ == "__main__":
    main(sys.argv[1])
