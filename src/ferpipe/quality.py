"""Data-quality report: exact duplicates, train/test leakage, conflicting labels, blank images."""

from __future__ import annotations

import numpy as np

from ferpipe.dataset import Images, duplicate_groups
from ferpipe.labels import TRAIN_SPLIT

BLANK_STD = 1.0  # pixel standard deviation below which an image counts as blank


def report(images: Images) -> dict[str, int]:
    """Counts by exact pixel equality; test = PublicTest + PrivateTest."""
    group = duplicate_groups(images.pixels)
    sizes = np.bincount(group)
    in_train = np.bincount(group, weights=images.splits == TRAIN_SPLIT, minlength=len(sizes)) > 0
    in_test = np.bincount(group, weights=images.splits != TRAIN_SPLIT, minlength=len(sizes)) > 0
    n_labels = np.array([len(set(images.labels[group == g])) for g in np.flatnonzero(sizes > 1)])
    is_test = images.splits != TRAIN_SPLIT
    std = images.pixels.reshape(len(images), -1).std(axis=1)
    return {
        "images": int(len(images)),
        "duplicate_groups": int((sizes > 1).sum()),
        "duplicate_extra_copies": int((sizes[sizes > 1] - 1).sum()),
        "test_images_in_train": int((is_test & in_train[group]).sum()),
        "groups_across_train_test": int((in_train & in_test).sum()),
        "conflicting_label_groups": int((n_labels > 1).sum()),
        "blank_images": int((std < BLANK_STD).sum()),
    }
