"""Check that two checkouts' runs give the same results: test accuracy, macro F1, top-2 accuracy,
confusion matrix, per-class figures and test loss of every model, and the per-epoch history.

Usage: python scripts/compare_runs.py DIR_A DIR_B [MODEL ...]   (default models: cnn resnet)

Used to show that the model-zoo redesign changed nothing for seed 000: run `dvc repro` on the
embedded sample at commit b508ebc and at the new code, on the same machine, and compare.
Exits 1 and lists the differences when there are any.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("test_accuracy", "macro_f1", "top2_accuracy", "macro_precision", "macro_recall",
        "balanced_accuracy", "test_loss", "test_images", "confusion_matrix", "per_class")  # fmt: skip


def figures(checkout: Path, model: str) -> dict:
    """The reported split's figures: from metrics/<model>_detail.json, or, in checkouts before
    the headline/detail split, metrics/<model>.json."""
    detail = checkout / "metrics" / f"{model}_detail.json"
    if detail.exists():
        data = json.loads(detail.read_text())
        return data["splits"][data["test_split"]]
    return json.loads((checkout / "metrics" / f"{model}.json").read_text())


def differences(a: Path, b: Path, model: str) -> list[str]:
    found = []
    ma, mb = figures(a, model), figures(b, model)
    for key in KEYS:
        if ma[key] != mb[key]:
            found.append(f"{model} {key}: {ma[key]} != {mb[key]}")
    ha, hb = ((d / "plots" / model / "history.csv").read_text() for d in (a, b))
    if ha != hb:
        found.append(f"{model} history:\n{ha}\n!=\n{hb}")
    return found


def main(argv: list[str]) -> int:
    a, b, *names = argv
    found = [d for m in names or ["cnn", "resnet"] for d in differences(Path(a), Path(b), m)]
    for line in found:
        print(line)
    if not found:
        for model in names or ["cnn", "resnet"]:
            metrics = figures(Path(b), model)
            print(
                f"{model}: identical (test accuracy {metrics['test_accuracy']}, macro F1 "
                f"{metrics['macro_f1']}, top-2 {metrics['top2_accuracy']}, confusion matrix, "
                "per-class figures, test loss and every epoch of the history)"
            )
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
