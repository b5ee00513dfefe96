"""A longer run continues a shorter run's saved end and gives what a fresh run gives, bit for bit."""

import shutil
from dataclasses import replace

import pytest
import torch

from ferpipe import augment, losses, models, params, resume, training
from ferpipe.optim import Optimisation, adam
from ferpipe.speed import Speed

from .conftest import ROOT
from .test_training import _toy

CPU = torch.device("cpu")
PLAN = training.Plan(epochs=4, batch_size=16, seed=3, name="toy")
FLIP_AND_JITTER = {"pick": "all", "every": 1, "transforms": [
    {"name": "hflip", "p": 0.5}, {"name": "jitter", "brightness": 0.3, "contrast": 0.3}]}  # fmt: skip


def _run(epochs: int, store: resume.Store | None = None, precision: str = "fp32"):
    """A small CNN with batch norm and dropout on toy data with augmentation, fused Adam and a step schedule,
    laid out and autocast as the train stage runs it; continued from `store` when given and saved
    there. Returns its weights and history."""
    torch.manual_seed(PLAN.seed)  # as runinfo.setup seeds every stage
    model = models.build("block_cnn", 2, **models.architecture("block_cnn").tiny)
    optimizer = adam(model.parameters(), 1e-3, 1e-4)
    optimisation = Optimisation(optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 3, 0.5))
    augmentation = augment.Augmentation("flip", FLIP_AND_JITTER, PLAN.seed)
    plan = replace(PLAN, epochs=epochs, augment=augmentation)
    progress = store.restore(plan, model, optimisation, augmentation, CPU) if store else None
    trainee = Speed(precision=precision).model(model, CPU)
    loss_fn = losses.make_loss("ce", [1.0, 1.5], 2.0)
    history, kept, _ = training.fit(
        trainee, loss_fn, optimisation, _toy(48), _toy(16, seed=1), plan, CPU, progress
    )
    assert kept == epochs
    if store:
        store.save(model, optimisation, progress, augmentation, CPU)
    return model.state_dict(), history


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_longer_run_continues_a_shorter_ones_end_exactly(tmp_path, precision):
    fresh_weights, fresh_history = _run(4, precision=precision)
    store = resume.Store(tmp_path / "toy" / "f.pt")
    short_weights, short_history = _run(2, store, precision)
    assert short_history == fresh_history[:2] and not _same(short_weights, fresh_weights)
    weights, history = _run(4, store, precision)
    assert history == fresh_history and _same(weights, fresh_weights)
    assert torch.load(store.path, weights_only=True)["epochs"] == 4


def test_a_run_no_longer_than_the_saved_one_starts_afresh(tmp_path):
    """A forced re-run, or a shorter one after a longer, trains from epoch 1."""
    store = resume.Store(tmp_path / "toy" / "f.pt")
    _run(3, store)
    weights, history = _run(2, store)
    fresh_weights, fresh_history = _run(2)
    assert history == fresh_history and _same(weights, fresh_weights)


def test_each_entry_keeps_its_newest_ends(tmp_path):
    states = [resume.Store(tmp_path / "toy" / f"{i}.pt") for i in range(resume.KEEP + 2)]
    for store in states:
        _run(1, store)
    assert sorted((tmp_path / "toy").glob("*.pt")) == [s.path for s in states[2:]]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"keep": "best"}, "train.keep is best"),
        ({"patience": 2}, "zoo.toy.early_stopping is on"),
        ({"schedule": {"name": "cosine"}}, "zoo.toy.schedule cosine spans all the epochs"),
    ],
)
def test_a_recipe_a_longer_run_would_not_repeat_is_not_resumed(change, reason):
    entry = {"schedule": change.pop("schedule", {"name": "none"})}
    assert resume.obstacle(PLAN, {"schedule": {"name": "step"}}) is None
    assert reason in resume.obstacle(replace(PLAN, **change), entry)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """params.yaml and dvc.yaml with stand-ins for train@cnn's data dependencies."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("data/split/train.npz", "data/split/val.npz", "models/init/cnn.pt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    shutil.copytree(ROOT / "src", tmp_path / "src")
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fingerprint(**changes: object) -> str:
    tree = params.read()
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node[leaf] = value
    selected = params._select(tree, params.declared("train@cnn", tree))
    return resume.fingerprint(params.StageParams("train@cnn", selected), CPU)


def test_the_fingerprint_covers_all_but_the_number_of_epochs(project):
    base = _fingerprint()
    assert _fingerprint(**{"zoo.cnn.epochs": 20, "train.resume": False}) == base
    assert _fingerprint(**{"zoo.cnn.lr": 0.5}) != base
    assert _fingerprint(**{"loss": "focal"}) != base
    (project / "data/split/val.npz").write_bytes(b"other images")
    assert _fingerprint() != base
    changed = _fingerprint()
    (project / "src/ferpipe/models/study_cnn.py").write_text("# other code\n")
    code = _fingerprint()
    assert code != changed
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert _fingerprint() != code
    finally:
        torch.set_num_threads(threads)
