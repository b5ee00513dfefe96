import numpy as np

from ferpipe import dataset
from ferpipe.dataset import Images
from ferpipe.quality import report


def test_report_counts_duplicates_leaks_conflicts_and_blanks(images):
    px, labels = images.pixels.copy(), images.labels.copy()
    train = np.flatnonzero(images.splits == 0)
    test = np.flatnonzero(images.splits != 0)
    px[train[1]] = px[train[0]]  # a duplicate within train, with a conflicting label
    labels[train[1]] = (labels[train[0]] + 1) % 7
    for i in test[:2]:  # two test images leaked from one train image, same label (3 copies)
        px[i], labels[i] = px[train[5]], labels[train[5]]
    px[train[10]] = 7  # blank image
    out = report(Images(px, labels, images.splits, images.ids))
    assert out == {
        "images": len(images),
        "duplicate_groups": 2,
        "duplicate_extra_copies": 3,
        "test_images_in_train": 2,
        "groups_across_train_test": 1,
        "conflicting_label_groups": 1,
        "blank_images": 1,
    }


def test_full_archive_matches_its_readme(decoded_archive, tmp_path):
    dataset.save(decoded_archive.images, tmp_path / "d.npz")
    assert report(dataset.load(tmp_path / "d.npz")) == {
        "images": 35887,
        "duplicate_groups": 1516,
        "duplicate_extra_copies": 1853,
        "test_images_in_train": 568,
        "groups_across_train_test": 531,
        "conflicting_label_groups": 57,
        "blank_images": 12,
    }
