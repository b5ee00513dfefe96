"""PNG pictures of the DVC plots (DVC's HTML needs a CDN, so these open anywhere offline)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ferpipe.dataset import atomic_path  # noqa: E402


def confusion_png(matrix: np.ndarray, classes: tuple[str, ...], title: str, path: Path) -> None:
    """Confusion matrix with counts and row percentages (the per-class recall on the diagonal)."""
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.4 * len(classes) + 2, 1.2 * len(classes) + 1.5))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if rows[i, j] > 0.5 else "black"
            ax.text(
                j, i, f"{matrix[i, j]}\n{rows[i, j]:.0%}", ha="center", va="center", color=colour
            )
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
    )
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    save_png(fig, path)


def curves_png(history: pd.DataFrame, title: str, path: Path) -> None:
    """Training and validation loss and accuracy per epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, what in ((left, "loss"), (right, "accuracy")):
        for part in ("train", "val"):
            ax.plot(history["epoch"], history[f"{part}_{what}"], marker="o", label=part)
        ax.set(xlabel="epoch", ylabel=what, title=f"{title}: {what}")
        ax.legend()
        ax.grid(alpha=0.3)
    save_png(fig, path)


def save_png(fig: plt.Figure, path: Path) -> None:
    """Write `fig` atomically, with no software stamp (the same bytes on every run), and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
