import numpy as np
import pytest
import scipy.ndimage

from ferpipe import dataset, prepare
from ferpipe.errors import FerError
from ferpipe.labels import EMOTIONS, TRAIN_SPLIT

from .conftest import synthetic


def test_balance_keeps_task_classes_caps_training_and_keeps_all_test(images):
    out = prepare.balance(images, "multiclass", max_per_class=3, seed=0)
    train, test = out.labels[out.splits == TRAIN_SPLIT], out.labels[out.splits != TRAIN_SPLIT]
    assert np.bincount(train).tolist() == [3, 3, 3, 3]  # angry, fear, happy, sad, capped from 4
    assert np.bincount(test).tolist() == [8, 8, 8, 8]  # 4 per test split, all kept
    happy = out.subset(out.labels == 2)
    assert np.isin(happy.ids, images.ids[images.labels == EMOTIONS.index("happy")]).all()


def test_balance_is_seeded(images):
    a, b = (prepare.balance(images, "binary", 2, seed=s) for s in (1, 1))
    c = prepare.balance(images, "binary", 2, seed=2)
    assert (a.ids == b.ids).all()
    assert set(c.ids) != set(a.ids)


def test_balance_refuses_a_missing_class(images):
    no_fear = images.subset(images.labels != EMOTIONS.index("fear"))
    with pytest.raises(FerError, match="no training images of 'fear', which task=multiclass needs"):
        prepare.balance(no_fear, "multiclass", 10, 0)


@pytest.mark.parametrize("k", [3, 5])
def test_median_filter_matches_scipy_with_replicated_edges(images, k):
    got = prepare.median_filter(images.pixels, k, chunk=7)
    want = scipy.ndimage.median_filter(images.pixels, size=(1, k, k), mode="nearest")
    assert got.dtype == np.uint8 and (got == want).all()


def test_median_filter_off_and_on():
    noisy = np.full((1, 48, 48), 100, dtype=np.uint8)
    noisy[0, 10, 10] = 255  # salt
    assert (prepare.median_filter(noisy, 1) == noisy).all()
    assert (prepare.median_filter(noisy, 3) == 100).all()


def test_split_is_stratified_disjoint_and_keeps_test_apart():
    data = prepare.balance(synthetic(per_class=10), "binary", 10, 0)
    parts = prepare.split(data, val_fraction=0.2, seed=0)
    assert [len(parts[p]) for p in ("train", "val", "test")] == [16, 4, 40]
    assert np.bincount(parts["val"].labels).tolist() == [2, 2]
    assert (parts["test"].splits != TRAIN_SPLIT).all()
    ids = [set(parts[p].ids) for p in parts]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    again = prepare.split(data, 0.2, 0)
    assert (again["val"].ids == parts["val"].ids).all()
    assert set(prepare.split(data, 0.2, 1)["val"].ids) != set(parts["val"].ids)


def test_folds_are_stratified_disjoint_cover_the_pool_and_follow_the_seed():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    folds = prepare.folds(labels, 5, seed=0)
    joined = np.concatenate(folds)
    assert len(joined) == len(labels) and set(joined) == set(range(len(labels)))  # disjoint, cover
    assert all(np.bincount(labels[f]).tolist() == [10, 6, 4] for f in folds)  # stratified
    assert all((a == b).all() for a, b in zip(folds, prepare.folds(labels, 5, 0), strict=True))
    assert any((a != b).any() for a, b in zip(folds, prepare.folds(labels, 5, 1), strict=True))
    with pytest.raises(FerError, match="split.folds=200: cannot fold 100 training images"):
        prepare.folds(labels, 200, 0)


def test_drop_duplicates_keeps_the_first_copy_and_removes_leaked_test_images(images):
    px = images.pixels.copy()
    train, test = (
        np.flatnonzero(images.splits == TRAIN_SPLIT),
        np.flatnonzero(images.splits != TRAIN_SPLIT),
    )
    px[train[3]] = px[train[2]]  # a training duplicate
    px[test[0]] = px[train[2]]  # the same face leaked into test
    px[test[5]] = px[test[4]]  # a duplicate within test
    data = type(images)(px, images.labels, images.splits, images.ids)
    kept = prepare.drop_duplicates(data)
    assert len(kept) == len(images) - 3
    dropped = set(images.ids) - set(kept.ids)
    assert dropped == {images.ids[train[3]], images.ids[test[0]], images.ids[test[5]]}


def test_a_saved_split_loads_back_whole_or_labels_alone(images, tmp_path):
    dataset.save(images, tmp_path / "s.npz")
    back = dataset.load(tmp_path / "s.npz")
    assert all(np.array_equal(getattr(back, f), getattr(images, f)) for f in ("pixels", "labels", "splits", "ids"))  # fmt: skip
    assert np.array_equal(dataset.load_labels(tmp_path / "s.npz"), images.labels)
    with pytest.raises(FerError, match="gone.npz: not found; run the stage that writes it"):
        dataset.load_labels(tmp_path / "gone.npz")
