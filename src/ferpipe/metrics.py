"""Test-set metrics per model (SPEC "Metrics"): fractions in 0..1, rounded for stable JSON."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

DIGITS = 6
# What `dvc exp show` and `dvc metrics diff` show per model; the rest stays in the detail file.
HEADLINE = ("test_accuracy", "macro_f1", "top2_accuracy", "balanced_accuracy", "test_loss")


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: tuple[str, ...], test_loss: float
) -> dict[str, object]:
    """Overall, macro and per-class scores, the confusion matrix and the test loss."""
    labels = np.arange(len(classes))
    y_pred = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    scores: dict[str, object] = {
        "test_accuracy": float((y_pred == y_true).mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "top2_accuracy": top_k_accuracy(y_true, probs, k=2),
        "test_loss": float(test_loss),
        "test_images": int(len(y_true)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    return rounded(scores)


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of images whose label is among the `k` most probable classes. With `k` classes or
    fewer every label is (1.0); scikit-learn refuses that case for the binary task."""
    if k >= probs.shape[1]:
        return 1.0
    return float(top_k_accuracy_score(y_true, probs, k=k, labels=np.arange(probs.shape[1])))


def rounded(value: object) -> object:
    """Round every float in a nested structure to DIGITS places."""
    if isinstance(value, float):
        return round(value, DIGITS)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def confusion_matrix_of(
    actual: Sequence[str], predicted: Sequence[str], classes: tuple[str, ...]
) -> np.ndarray:
    """Confusion matrix (rows actual, columns predicted) from class names, in `classes` order."""
    return confusion_matrix(actual, predicted, labels=list(classes))
