"""The zoo: every registered architecture is tested by iterating the registry, so a new one is
covered the moment it is registered; then what each family must follow from its seed."""

import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision.models import get_model, get_model_weights

from ferpipe import models
from ferpipe.errors import FerError
from ferpipe.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from ferpipe.speed import Speed

ARCHITECTURES = models.names()


def tiny(name: str, **changes) -> models.FerModel:
    """`name` built small (its registered tiny arguments, no pretrained weights), 7 classes."""
    arch = models.architecture(name)
    args = {**arch.tiny, **changes}
    if "weights" in arch.parameters():
        args.setdefault("weights", "none")
    torch.manual_seed(0)
    return models.build(name, 7, **args)


def faces(n: int = 4) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_forward_and_backward_on_a_batch_of_its_own_input(name):
    model = tiny(name).train()
    x = model.preprocess(faces())
    assert x.dtype == torch.float32 and x.shape[0] == 4 and x.ndim == 4
    labels = torch.arange(4)
    loss = torch.nn.functional.cross_entropy(model(x), labels)
    extra = model.auxiliary_loss(labels)  # DACL's sparse center loss trains its attention
    (loss if extra is None else loss + extra).backward()
    trainable = model.trainable()
    assert trainable and all(w.grad is not None for w in trainable)
    assert all(w.grad is None for w in model.parameters() if not w.requires_grad)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_forward_is_head_of_features(name):
    model = tiny(name).eval()
    x = model.preprocess(faces())
    with torch.no_grad():
        assert torch.equal(model.head(model.features(x)), model(x))
    assert model(x).shape == (4, 7)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_checkpoint_rebuilds_the_model_on_its_own(name, tmp_path):
    model = tiny(name).eval()
    path = tmp_path / f"{name}.pt"
    models.save(model, tuple("abcdefg"), path)
    loaded, checkpoint = models.load(path)
    assert (loaded.arch, loaded.args, checkpoint["classes"]) == (name, model.args, list("abcdefg"))
    assert loaded.weights == model.weights
    x = model.preprocess(faces())
    with torch.no_grad():
        assert torch.equal(loaded.eval()(loaded.preprocess(faces())), model(x))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_channels_last_gives_the_same_logits(name):
    model = tiny(name).eval()
    x = model.preprocess(faces())
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(Speed(channels_last=True).layout(model)(x), expected, atol=1e-4)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_frozen_features_give_the_same_training_outputs_when_cached(name):
    model = tiny(name).train()
    if not model.frozen_features:
        assert any(w.requires_grad for w in model.parameters())
        return
    x = model.preprocess(faces(6))
    with torch.no_grad():
        cached = model.features(x)
    head = models.CachedFeatures(model)
    torch.manual_seed(3)
    a = head(head.preprocess(cached))
    torch.manual_seed(3)
    assert torch.allclose(a, model(x), atol=1e-6)


def test_the_registry_lists_every_family_and_refuses_unknown_names_and_arguments():
    assert {"study_cnn", "resnet18", "resnet50", "small_cnn_m1", "small_cnn_m2", "small_cnn_m3",
            "block_cnn", "vgg_cnn"} <= set(ARCHITECTURES)  # fmt: skip
    with pytest.raises(FerError, match="architecture 'vgg' is unknown; use one of: block_cnn"):
        models.build("vgg", 2)
    with pytest.raises(FerError, match="args.depth: block_cnn takes no argument 'depth'"):
        models.build("block_cnn", 2, depth=5)
    with pytest.raises(FerError, match="args.norm='layer' must be one of: none, batch, instance"):
        models.build("block_cnn", 2, norm="layer")
    with pytest.raises(FerError, match=r"args.channels=\[32, 'x'\] must be a list whose items"):
        models.build("block_cnn", 2, channels=[32, "x"], kernel_sizes=[3, 3])
    with pytest.raises(FerError, match="args.freeze_bn='yes' must be true or false"):
        models.build("resnet18", 2, freeze_bn="yes")
    with pytest.raises(FerError, match="zoo.mine: architecture 'nope' is unknown"):
        models.from_entry("mine", {"arch": "nope", "args": {}}, 2)
    with pytest.raises(
        FerError, match="zoo.mine: zoo.mine.args.image_size=16.5 must be of type int"
    ):
        models.from_entry("mine", {"arch": "resnet18", "args": {"image_size": 16.5}}, 2)


# --- seed 000 ---------------------------------------------------------------------------------


def test_study_cnn_follows_seed_000():
    model = tiny("study_cnn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (32, (3, 3), (1, 1)), (64, (3, 3), (1, 1)), (128, (3, 3), (1, 1))
    ]  # fmt: skip
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 3
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5]
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [512, 7]
    x = model.preprocess(faces(5))
    assert x.shape == (5, 1, 48, 48) and x.min() >= -1 and x.max() <= 1


def test_resnet18_trains_only_layer4_and_fc_on_imagenet_normalised_input():
    model = tiny("resnet18", image_size=64)
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"} and model.frozen_features
    x = model.preprocess(torch.full((3, 48, 48), 255, dtype=torch.uint8))
    assert x.shape == (3, 3, 64, 64)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 10, 10], expected)


def test_train_from_chooses_the_first_trained_stage():
    whole = tiny("resnet18", train_from="conv1")
    assert all(w.requires_grad for w in whole.parameters()) and not whole.frozen_features
    assert whole.features(whole.preprocess(faces())).shape == (4, 512)  # the pooled embedding
    from_layer2 = tiny("resnet18", train_from="layer2")
    trained = {n.split(".")[1] for n, p in from_layer2.named_parameters() if p.requires_grad}
    assert trained == {"layer2", "layer3", "layer4", "fc"}


def test_frozen_batch_norm_stays_in_eval_mode_and_seed_000_batch_norm_does_not():
    model = tiny("resnet18").train()
    assert not model.net.bn1.training and not model.net.layer3[0].bn1.training
    assert model.net.layer4[0].bn1.training  # the trainable part keeps batch statistics
    seed000 = tiny("resnet18", freeze_bn=False).train()
    assert seed000.net.bn1.training and not seed000.frozen_features
    before = seed000.net.bn1.running_mean.clone()
    seed000(seed000.preprocess(faces()))
    assert not torch.equal(before, seed000.net.bn1.running_mean)


def _weights_file(tmp_path: Path, name: str, monkeypatch) -> dict[str, torch.Tensor]:
    """A state dict saved where torchvision caches `name`'s default ImageNet weights."""
    torch.manual_seed(7)
    state = get_model(name, weights=None).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / Path(get_model_weights(name).DEFAULT.url).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return state


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_weights_load_through_torchvision_weights_api(name, tmp_path, monkeypatch):
    state = _weights_file(tmp_path, name, monkeypatch)
    for setting in ("imagenet", "auto"):
        model = models.build(name, 4, weights=setting, image_size=32)
        assert model.weights == "imagenet"
        assert torch.equal(model.net.conv1.weight, state["conv1.weight"])
        assert torch.equal(model.net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def _offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", refuse)


def test_imagenet_is_strict_and_auto_falls_back_to_scratch_loudly(tmp_path, monkeypatch, capsys):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(
        FerError, match="resnet50 weights=imagenet: the ImageNet weights cannot be had"
    ):
        models.build("resnet50", 4, weights="imagenet")
    assert (
        models.build("resnet18", 4, weights="auto").weights == "none (auto: imagenet unavailable)"
    )
    assert "WARNING" in capsys.readouterr().out


def test_weights_from_a_local_file_and_bad_files_refused(tmp_path):
    torch.manual_seed(3)
    state = get_model("resnet18", weights=None).state_dict()
    torch.save(state, tmp_path / "mine.pth")
    model = models.build("resnet18", 2, weights=str(tmp_path / "mine.pth"), image_size=32)
    assert torch.equal(model.net.conv1.weight, state["conv1.weight"])
    assert model.weights.startswith("file mine.pth sha256:")
    with pytest.raises(FerError, match="no such file"):
        models.build("resnet18", 2, weights=str(tmp_path / "missing.pth"))
    faces = {f"module.{k}": v for k, v in state.items()} | {  # MS-Celeb-1M style: 8631 identities
        "module.fc.weight": torch.zeros(8631, 512),
        "module.fc.bias": torch.zeros(8631),
    }
    torch.save({"state_dict": faces}, tmp_path / "msceleb.pth")
    model = models.build("resnet18", 2, weights=str(tmp_path / "msceleb.pth"), image_size=32)
    assert torch.equal(model.net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "junk.pth")
    with pytest.raises(FerError, match="not a resnet18 state dict"):
        models.build("resnet18", 2, weights=str(tmp_path / "junk.pth"))


# --- seeds 001, 002 and 004 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count"),
    [("small_cnn_m1", 1_849_223), ("small_cnn_m2", 5_223_047), ("small_cnn_m3", 8_409_543)],
)
def test_seed_001_models_have_the_tables_parameter_counts_and_three_channel_input(name, count):
    model = tiny(name)
    assert sum(w.numel() for w in model.parameters()) == count
    assert model.preprocess(faces()).shape == (4, 3, 48, 48)


def test_seed_001_resnet50_puts_a_linear_layer_on_its_1000_way_fc():
    model = tiny("resnet50", keep_fc=True, train_from="conv1")
    assert [m.out_features for m in model.net.fc] == [1000, 7]


def test_seed_002_block_cnn_is_configurable_in_depth_kernels_and_normalisation():
    baseline = tiny("block_cnn", channels=[32, 32, 64, 64], kernel_sizes=[3, 3, 3, 3])
    convs = [m for m in baseline.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in baseline.modules()) == 2
    assert baseline.features(baseline.preprocess(faces())).shape == (4, 64 * 5 * 5)
    final = tiny(
        "block_cnn", channels=[32, 32, 64, 64, 128, 128, 256], kernel_sizes=[3] * 7, norm="batch"
    )
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in final.modules()) == 7
    wide = tiny("block_cnn", channels=[32, 32, 64, 64], kernel_sizes=[7, 5, 3, 3], norm="instance")
    assert [c.kernel_size for c in wide.modules() if isinstance(c, torch.nn.Conv2d)][:2] == [
        (7, 7),
        (5, 5),
    ]
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in wide.modules()) == 4
    with pytest.raises(FerError, match="one kernel size per block"):
        tiny("block_cnn", channels=[8, 8], kernel_sizes=[3])


def test_seed_004_vgg_follows_its_slides():
    model = tiny("vgg_cnn")
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [64, 64, 128, 128, 256, 256, 512, 512]
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.3] * 4 + [0.5] * 2
    linears = [
        (m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert linears == [(4608, 512), (512, 256), (256, 7)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == 2


def test_seed_004_resnet_head_is_features_256_classes():
    model = tiny("resnet18", train_from="conv1", hidden=[256])
    layers = [
        (m.in_features, m.out_features) for m in model.net.fc if isinstance(m, torch.nn.Linear)
    ]
    assert layers == [(512, 256), (256, 7)]


def test_unreadable_and_unsafe_weight_files_are_refused_with_one_clear_line(tmp_path):
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    with pytest.raises(FerError, match=r"notes.txt: not a PyTorch file \(\w+\); use a resnet18"):
        models.build("resnet18", 2, weights=str(tmp_path / "notes.txt"))
    torch.save({"conv1.weight": torch.zeros(1), "extra": Path("x")}, tmp_path / "unsafe.pth")
    with pytest.raises(FerError) as refused:
        models.build("resnet18", 2, weights=str(tmp_path / "unsafe.pth"))
    message = str(refused.value)
    assert "refused: not only tensors (it holds pathlib" in message
    assert "weights_only" not in message and "\n" not in message


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    model = tiny("study_cnn")
    with torch.no_grad():
        model.classifier[0].weight[0, 0] = float("nan")
    models.save(model, ("a", "b"), tmp_path / "diverged.pt")
    with pytest.raises(
        FerError,
        match="1 weight tensors hold NaN or infinite values .first: classifier.0.weight.; the training that wrote it diverged",
    ):
        models.load(tmp_path / "diverged.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(FerError, match="not a checkpoint written by the pipeline"):
        models.load(tmp_path / "other.pt")
