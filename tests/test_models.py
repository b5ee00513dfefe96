import urllib.error

import pytest
import torch
from torchvision.models import resnet18

from ferpipe import models
from ferpipe.errors import FerError


def test_cnn_follows_seed_000_and_outputs_one_score_per_class():
    model = models.SeedCNN(num_classes=4)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (32, (3, 3), (1, 1)), (64, (3, 3), (1, 1)), (128, (3, 3), (1, 1))
    ]  # fmt: skip
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 3
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5]
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [512, 4]
    pixels = torch.randint(0, 256, (5, 48, 48), dtype=torch.uint8)
    x = model.preprocess(pixels)
    assert x.shape == (5, 1, 48, 48) and x.min() >= -1 and x.max() <= 1
    assert model(x).shape == (5, 4)


def test_resnet_trains_only_layer4_and_fc_on_imagenet_normalised_input():
    model, used = models.build("resnet", 2, "none", image_size=64)
    assert used == "none"
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    assert model.net.fc.out_features == 2
    gray = torch.full((3, 48, 48), 255, dtype=torch.uint8)
    x = model.preprocess(gray)
    assert x.shape == (3, 3, 64, 64)
    expected = (1 - torch.tensor(models.IMAGENET_MEAN)) / torch.tensor(models.IMAGENET_STD)
    assert torch.allclose(x[0, :, 10, 10], expected)
    assert model(x).shape == (3, 2)


def _reference_state(seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return resnet18(weights=None).state_dict()


def _same_trunk(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return torch.equal(model.net.conv1.weight, state["conv1.weight"]) and torch.equal(
        model.net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"]
    )


def test_imagenet_weights_load_through_torchvision_weights_api(tmp_path, monkeypatch):
    state = _reference_state()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "resnet18-f37072fd.pth")  # the file name torchvision caches
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for setting in ("imagenet", "auto"):
        model, used = models.build("resnet", 4, setting)
        assert used == "imagenet"
        assert _same_trunk(model, state)


def _offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", refuse)


def test_imagenet_is_strict_when_weights_cannot_be_had(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(
        FerError, match="resnet.weights=imagenet: the ImageNet weights cannot be had"
    ):
        models.build("resnet", 4, "imagenet")


def test_auto_falls_back_to_scratch_loudly(tmp_path, monkeypatch, capsys):
    _offline(monkeypatch, tmp_path)
    _, used = models.build("resnet", 4, "auto")
    assert used == "none (auto: imagenet unavailable)"
    assert "WARNING" in capsys.readouterr().out


def test_weights_from_a_local_file(tmp_path):
    state = _reference_state(seed=3)
    path = tmp_path / "mine.pth"
    torch.save(state, path)
    model, used = models.build("resnet", 2, str(path))
    assert _same_trunk(model, state)
    assert used.startswith("file mine.pth sha256:")


def test_bad_weights_settings_are_refused(tmp_path):
    with pytest.raises(FerError, match="no such file"):
        models.build("resnet", 2, str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, junk)
    with pytest.raises(FerError, match="not a ResNet18 state dict"):
        models.build("resnet", 2, str(junk))
    with pytest.raises(FerError, match="model 'vgg' is unknown"):
        models.build("vgg", 2)


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model, used = models.build("resnet", 2, "none", image_size=40)
    path = tmp_path / "resnet.pt"
    models.save_checkpoint(model, "resnet", ("happy", "sad"), used, path)
    loaded, checkpoint = models.load_checkpoint(path)
    assert checkpoint["classes"] == ["happy", "sad"] and loaded.image_size == 40
    pixels = torch.randint(0, 256, (2, 48, 48), dtype=torch.uint8)
    model.eval(), loaded.eval()
    assert torch.equal(model(model.preprocess(pixels)), loaded(loaded.preprocess(pixels)))


def test_frozen_batch_norm_lets_the_trunk_be_cached_without_changing_the_math():
    torch.manual_seed(0)
    model, _ = models.build("resnet", 2, "none", image_size=32, freeze_bn=True)
    model.train()
    assert not model.net.bn1.training and not model.net.layer3[0].bn1.training
    assert model.net.layer4[0].bn1.training  # the trainable part keeps batch statistics
    pixels = torch.randint(0, 256, (6, 48, 48), dtype=torch.uint8)
    x = model.preprocess(pixels)
    cached = models.CachedTrunk(model)
    with torch.no_grad():
        features = model.trunk(x)
    assert torch.allclose(cached(cached.preprocess(features)), model(x), atol=1e-6)


def test_seed_000_batch_norm_uses_batch_statistics_in_the_frozen_layers():
    torch.manual_seed(0)
    model, _ = models.build("resnet", 2, "none", image_size=32, freeze_bn=False)
    model.train()
    assert model.net.bn1.training and model.net.layer2[1].bn2.training
    before = model.net.bn1.running_mean.clone()
    model(model.preprocess(torch.randint(0, 256, (4, 48, 48), dtype=torch.uint8)))
    assert not torch.equal(before, model.net.bn1.running_mean)
