"""Preparation of the normalised dataset for one task: balance, median-filter denoise, split."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ferpipe.dataset import Images
from ferpipe.errors import FerError
from ferpipe.labels import EMOTIONS, TASK_CLASSES, TRAIN_SPLIT


def balance(images: Images, task: str, max_per_class: int, seed: int) -> Images:
    """Keep the task's classes (relabelled 0..C-1 in task order); cap each class's training
    images at `max_per_class` by a seeded random draw. Test images are all kept."""
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
        if len(train) > max_per_class:
            train = np.sort(rng.choice(train, max_per_class, replace=False))
        keep += [train, test]
        labels += [np.full(len(train) + len(test), label)]
    index = np.concatenate(keep)
    chosen = images.subset(index)
    return Images(chosen.pixels, np.concatenate(labels), chosen.splits, chosen.ids).sorted()


def median_filter(pixels: np.ndarray, kernel_size: int, chunk: int = 4096) -> np.ndarray:
    """Median filter each uint8 image (edges replicated); kernel_size 1 returns a copy."""
    if kernel_size == 1:
        return pixels.copy()
    r = kernel_size // 2
    out = np.empty_like(pixels)
    for start in range(0, len(pixels), chunk):
        x = torch.from_numpy(pixels[start : start + chunk])
        # replicate-pad by indexing, since F.pad's replicate mode needs float tensors
        rows = torch.arange(-r, x.shape[1] + r).clamp(0, x.shape[1] - 1)
        cols = torch.arange(-r, x.shape[2] + r).clamp(0, x.shape[2] - 1)
        padded = x[:, rows][:, :, cols]
        windows = padded.unfold(1, kernel_size, 1).unfold(2, kernel_size, 1).flatten(-2)
        out[start : start + chunk] = windows.sort(-1).values[..., kernel_size**2 // 2].numpy()
    return out


def split(images: Images, val_fraction: float, seed: int) -> dict[str, Images]:
    """Stratified train/validation split of the training pool; test = the archive's test images."""
    pool = np.flatnonzero(images.splits == TRAIN_SPLIT)
    try:
        train, val = train_test_split(
            pool, test_size=val_fraction, stratify=images.labels[pool], random_state=seed
        )
    except ValueError as exc:
        raise FerError(f"cannot split {len(pool)} training images with split.val_fraction={val_fraction}: {exc}") from None
    test = np.flatnonzero(images.splits != TRAIN_SPLIT)
    return {"train": images.subset(np.sort(train)), "val": images.subset(np.sort(val)), "test": images.subset(test)}
