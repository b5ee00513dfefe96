import numpy as np
import pytest

from ferpipe.metrics import classification_metrics, confusion_matrix_of, top_k_accuracy


def test_metrics_match_hand_computed_values():
    # classes a, b, c; predictions: a a b | b b | c a   (argmax of probs below)
    y_true = np.array([0, 0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1],
         [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]]
    )  # fmt: skip
    m = classification_metrics(y_true, probs, ("a", "b", "c"), test_loss=0.5)
    assert m["test_accuracy"] == round(5 / 7, 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    precision = [2 / 3, 2 / 3, 1.0]
    recall = [2 / 3, 1.0, 0.5]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall, strict=True)]
    assert m["macro_precision"] == pytest.approx(np.mean(precision), abs=1e-6)
    assert m["macro_recall"] == pytest.approx(np.mean(recall), abs=1e-6)
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recall), abs=1e-6)
    assert m["macro_f1"] == pytest.approx(np.mean(f1), abs=1e-6)
    # top-2: the last image (true c, probs a 0.5 > c 0.4 > b 0.1) is a top-2 hit; all are
    assert m["top2_accuracy"] == 1.0
    assert m["per_class"]["c"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": round(2 / 3, 6),
        "support": 2,
    }
    assert m["test_loss"] == 0.5 and m["test_images"] == 7


def test_binary_metrics_give_top2_of_one():
    # two classes: scikit-learn's top_k_accuracy_score raises here; every label is in the top 2
    y_true = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    m = classification_metrics(y_true, probs, ("happy", "sad"), test_loss=0.4)
    assert m["test_accuracy"] == 0.5 and m["top2_accuracy"] == 1.0
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]


def test_top2_misses_a_label_ranked_third():
    y_true = np.array([2, 0])
    probs = np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])
    assert top_k_accuracy(y_true, probs, k=2) == 0.5


def test_confusion_from_names_follows_class_order():
    m = confusion_matrix_of(["sad", "happy", "sad"], ["sad", "sad", "happy"], ("happy", "sad"))
    assert m.tolist() == [[0, 1], [1, 1]]
