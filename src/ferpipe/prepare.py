"""Preparation of the normalised dataset for one task: balance, median-filter denoise, split."""

from __future__ import annotations

import numpy as np

from ferpipe.dataset import Images, duplicate_groups
from ferpipe.errors import FerError
from ferpipe.labels import EMOTIONS, SPLITS, TASK_CLASSES, TRAIN_SPLIT


def drop_duplicates(images: Images) -> Images:
    """Keep only the first image of each identical-pixel group, in canonical (split, id) order.

    Training sorts first, so test images that leak from training are dropped from the test set,
    and extra copies within a split are dropped too.
    """
    _, first = np.unique(duplicate_groups(images.pixels), return_index=True)
    return images.subset(np.sort(first))


def balance(images: Images, task: str, max_per_class: int, seed: int) -> Images:
    """Keep the task's classes (relabelled 0..C-1 in task order); cap each class's training
    images at `max_per_class` (0: no cap) by a seeded random draw. Test images are all kept."""
    rng = np.random.default_rng(seed)
    keep, labels = [], []
    for label, emotion in enumerate(TASK_CLASSES[task]):
        code = EMOTIONS.index(emotion)
        train = np.flatnonzero((images.labels == code) & (images.splits == TRAIN_SPLIT))
        test = np.flatnonzero((images.labels == code) & (images.splits != TRAIN_SPLIT))
        for part, idx in (("training", train), ("test", test)):
            if len(idx) == 0:
                raise FerError(
                    f"the data has no {part} images of '{emotion}', which task={task} needs "
                    f"({', '.join(TASK_CLASSES[task])}); use a source with every class"
                )
        if max_per_class and len(train) > max_per_class:
            train = np.sort(rng.choice(train, max_per_class, replace=False))
        keep += [train, test]
        labels += [np.full(len(train) + len(test), label)]
    index = np.concatenate(keep)
    chosen = images.subset(index)
    return Images(chosen.pixels, np.concatenate(labels), chosen.splits, chosen.ids).sorted()


def median_filter(pixels: np.ndarray, kernel_size: int, chunk: int = 2048) -> np.ndarray:
    """Median filter each uint8 image (edges replicated); kernel_size 1 returns a copy.

    A sorting network of element-wise min/max over the k*k shifted copies of a chunk of images:
    a few vectorised passes instead of a sort per pixel (35,887 images in about a second).
    """
    if kernel_size == 1:
        return pixels.copy()
    r, n = kernel_size // 2, kernel_size**2
    comparators = _sorting_network(n)
    out = np.empty_like(pixels)
    height, width = pixels.shape[1:]
    for start in range(0, len(pixels), chunk):
        padded = np.pad(pixels[start : start + chunk], ((0, 0), (r, r), (r, r)), mode="edge")
        wires = [
            padded[:, dy : dy + height, dx : dx + width].copy()
            for dy in range(kernel_size)
            for dx in range(kernel_size)
        ]
        for i, j in comparators:
            low = np.minimum(wires[i], wires[j])
            np.maximum(wires[i], wires[j], out=wires[j])
            wires[i] = low
        out[start : start + chunk] = wires[n // 2]
    return out


def _sorting_network(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort comparators for n wires (the (i, j), i < j, pairs that put
    the smaller value on wire i). Built for the next power of two; comparators touching wires
    >= n are dropped, which is exact because those wires would only ever hold +infinity."""
    size = 1 << (n - 1).bit_length()
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def split(
    images: Images, val_fraction: float, seed: int, validation: str = "holdout"
) -> dict[str, Images]:
    """train, val and test. test is always the archive's test images (PublicTest and
    PrivateTest); val is a stratified `val_fraction` of the training pool ("holdout", seed 000)
    or PublicTest ("publictest", the 7-class benchmark: train on the whole pool, select on
    PublicTest, report PrivateTest)."""
    pool = np.flatnonzero(images.splits == TRAIN_SPLIT)
    test = np.flatnonzero(images.splits != TRAIN_SPLIT)
    if validation == "publictest":
        val = np.flatnonzero(images.splits == SPLITS.index("PublicTest"))
        if len(val) == 0:
            raise FerError(
                "split.validation=publictest: the data has no PublicTest images; use holdout"
            )
        return {
            "train": images.subset(pool),
            "val": images.subset(val),
            "test": images.subset(test),
        }
    # Imported here: balance and denoise share this module and need no scikit-learn (1.5 s).
    from sklearn.model_selection import train_test_split

    try:
        train, val = train_test_split(
            pool, test_size=val_fraction, stratify=images.labels[pool], random_state=seed
        )
    except ValueError as exc:
        raise FerError(
            f"cannot split {len(pool)} training images with split.val_fraction={val_fraction}: {exc}"
        ) from None
    return {
        "train": images.subset(np.sort(train)),
        "val": images.subset(np.sort(val)),
        "test": images.subset(test),
    }


def folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """`k` stratified folds (scikit-learn's StratifiedKFold, shuffled with `seed`) of the images
    labelled `labels`: disjoint, covering every image. Returns each fold's sorted indices."""
    from sklearn.model_selection import StratifiedKFold  # as in split

    try:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [np.sort(held) for _, held in splitter.split(np.zeros(len(labels)), labels)]
    except ValueError as exc:
        raise FerError(
            f"split.folds={k}: cannot fold {len(labels)} training images: {exc}"
        ) from None
