import pytest
import torch

from ferpipe import losses, models, runinfo, training
from ferpipe.errors import FerError
from ferpipe.optim import Optimisation

CPU = torch.device("cpu")
LR = 1e-2


def _toy(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two easy classes: dark faces (0) and bright faces (1)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    base = torch.where(labels[:, None, None] == 1, 180, 60)
    noise = torch.randint(-40, 40, (n, 48, 48), generator=gen)
    return (base + noise).clamp(0, 255).to(torch.uint8), labels


def _model(seed: int = 0) -> models.FerModel:
    """A small CNN (block_cnn at its registered tiny size): fit's logic, quickly."""
    torch.manual_seed(seed)
    return models.build("block_cnn", 2, **models.architecture("block_cnn").tiny)


def _fit(epochs: int, keep: str = "last", seed: int = 0, patience: int = 0, step_every: int = 0):
    model = _model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_every, 0.5) if step_every else None
    loss_fn = losses.make_loss("ce", [1.0, 1.5], 2.0)
    history, kept, seconds = training.fit(
        model,
        loss_fn,
        Optimisation(optimizer, scheduler),
        _toy(),
        _toy(32, seed=1),
        training.Plan(epochs, batch_size=16, seed=seed, keep=keep, patience=patience),
        torch.device("cpu"),
    )
    return model, history, kept, seconds


def test_fit_learns_an_easy_task_and_records_history():
    model, history, kept, seconds = _fit(epochs=3)
    assert [r.epoch for r in history] == [1, 2, 3] and kept == 3 and seconds > 0
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_accuracy == 1.0
    pixels, labels = _toy(32, seed=2)
    logits = training.predict(model, pixels, 8, torch.device("cpu"))
    assert (logits.argmax(1) == labels).all()


def test_fit_is_deterministic():
    a, b = _fit(epochs=2)[1], _fit(epochs=2)[1]
    assert a == b


def test_keep_best_restores_the_best_validation_epoch(monkeypatch):
    snapshots = _scripted_validation(monkeypatch, [8, 24, 16])
    model, history, kept, _ = _fit(epochs=3, keep="best")
    assert [r.val_accuracy for r in history] == [0.25, 0.75, 0.5]
    assert kept == 2
    assert all(torch.equal(v, snapshots[1][k]) for k, v in model.state_dict().items())


def _scripted_validation(monkeypatch, right: list[int]) -> list[dict]:
    """Make `fit`'s validation answer right[e] of 32 images correctly at epoch e (fewer right:
    a higher loss); returns the weights seen at each validation."""
    answers, snapshots = iter(right), []

    def scripted_predict(model, pixels, batch_size, device):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        labels = _toy(32, seed=1)[1]
        logits = torch.nn.functional.one_hot(labels, 2).float()
        n = next(answers)
        logits[n:] = logits[n:].flip(1)
        return logits

    monkeypatch.setattr(training, "predict", scripted_predict)
    return snapshots


def test_early_stopping_stops_after_patience_and_restores_the_lowest_validation_loss(monkeypatch):
    snapshots = _scripted_validation(monkeypatch, [8, 24, 16, 12, 30, 30])
    model, history, kept, _ = _fit(epochs=6, patience=2)
    assert len(history) == 4 and kept == 2  # epochs 3 and 4 did not beat epoch 2's loss
    assert history[1].val_loss == min(r.val_loss for r in history)
    assert all(torch.equal(v, snapshots[1][k]) for k, v in model.state_dict().items())


def test_history_records_each_epochs_learning_rate():
    _, history, _, _ = _fit(epochs=3, step_every=2)
    assert [r.lr for r in history] == pytest.approx([LR, LR, LR / 2])


def test_training_that_diverges_stops_at_once_naming_model_epoch_step_and_learning_rate():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class Diverging(torch.nn.CrossEntropyLoss):  # the third step's loss is NaN
        calls = 0

        def forward(self, logits, target):
            self.calls += 1
            loss = super().forward(logits, target)
            return loss * float("nan") if self.calls == 3 else loss

    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)
    with pytest.raises(FerError) as refused:
        training.fit(
            model, Diverging(), Optimisation(optimizer, None), _toy(), _toy(32, seed=1),
            training.Plan(2, batch_size=16, seed=0, name="cnn"), torch.device("cpu"),
        )  # fmt: skip
    assert str(refused.value) == (
        "training cnn diverged: loss nan at step 3 of epoch 1; nothing was written - lower its "
        "learning rate (zoo.cnn.lr, now 0.5; try 0.05)"
    )
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(v.isfinite().all() for v in model.state_dict().values())


def test_device_auto_takes_a_gpu_when_there_is_one_and_a_missing_gpu_is_refused():
    assert runinfo.choose_device("auto", cuda_devices=0) == torch.device("cpu")
    assert runinfo.choose_device("auto", cuda_devices=2) == torch.device("cuda:0")
    assert runinfo.choose_device("cuda:1", cuda_devices=2) == torch.device("cuda:1")
    assert runinfo.choose_device("cpu", cuda_devices=2) == torch.device("cpu")
    with pytest.raises(
        FerError, match=r"train.device=cuda: no such CUDA device \(PyTorch sees 0\)"
    ):
        runinfo.choose_device("cuda", cuda_devices=0)
    with pytest.raises(FerError, match="train.device=cuda:2: no such CUDA device"):
        runinfo.choose_device("cuda:2", cuda_devices=2)


def test_batches_stay_where_they_are_on_the_cpu():
    batch = torch.arange(6)
    assert training.to_device(batch, torch.device("cpu")) is batch


def test_augmentation_changes_training_batches_only(monkeypatch):
    train, val = _toy(), _toy(32, seed=1)
    seen_train, seen_val = [], []

    def invert(batch: torch.Tensor, epoch: int) -> torch.Tensor:
        seen_train.append(batch.clone())
        return 255 - batch

    real_predict = training.predict

    def spying_predict(model, pixels, batch_size, device):
        seen_val.append(pixels.clone())
        return real_predict(model, pixels, batch_size, device)

    monkeypatch.setattr(training, "predict", spying_predict)
    model = _model()
    optimizer = Optimisation(torch.optim.Adam(model.parameters(), lr=LR), None)
    plan = training.Plan(2, batch_size=16, seed=0, augment=invert)
    training.fit(model, losses.make_loss("ce", [1, 1], 0), optimizer, train, val, plan, CPU)
    assert sum(len(b) for b in seen_train) == 2 * len(train[0])  # every training image, each epoch
    assert len(seen_val) == 2 and all(torch.equal(v, val[0]) for v in seen_val)  # val untouched
