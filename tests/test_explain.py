"""Interpretability pictures: the chosen faces, saliency, activations, filters, attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ferpipe import explain, models
from ferpipe.labels import TASK_CLASSES

from .conftest import synthetic

CLASSES = TASK_CLASSES["multiclass"]


def tiny(name: str) -> models.FerModel:
    """`name` at its registered tiny size, no pretrained weights, 4 classes, eval mode."""
    arch = models.architecture(name)
    args = {**arch.tiny, **({"weights": "none"} if "weights" in arch.parameters() else {})}
    torch.manual_seed(0)
    return models.build(name, len(CLASSES), **args).eval()


def faces(n: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (n, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))  # fmt: skip


class LeftHalf(nn.Module):
    """Scores from the left half of the face alone, tanh of a linear map, in float64."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(48 * 24, len(CLASSES)).double()

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels[:, None].double() / 255

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x[:, 0, :, :24].flatten(1)))


class Attending(nn.Module):
    """A stand-in for DACL: a conv block, a classifier and 512 attention weights per image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(4, len(CLASSES))
        self.attention = nn.Linear(4, 512)

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels[:, None].float() / 255

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x).flatten(1))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(self.body(x).flatten(1)).softmax(1)


def test_choose_images_is_per_class_seeded_and_independent_of_the_file_order():
    labels = np.repeat(np.arange(4), 10)
    ids = np.array([f"PublicTest_{i:05d}" for i in range(40)])
    chosen = explain.choose_images(labels, ids, 2, seed=42)
    assert labels[chosen].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert np.array_equal(chosen, explain.choose_images(labels, ids, 2, seed=42))
    assert not np.array_equal(chosen, explain.choose_images(labels, ids, 2, seed=43))
    shuffled = np.random.default_rng(0).permutation(40)
    again = explain.choose_images(labels[shuffled], ids[shuffled], 2, seed=42)
    assert ids[shuffled][again].tolist() == ids[chosen].tolist()
    few = explain.choose_images(labels[:13], ids[:13], 4, seed=42)  # class 1 has only 3 images
    assert labels[:13][few].tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_saliency_is_the_absolute_gradient_and_zero_where_the_model_does_not_look():
    model, pixels, targets = LeftHalf(), faces(), torch.tensor([0, 3, 1])
    maps = explain.saliency(model, pixels, targets)
    assert maps.shape == (3, 48, 48) and (maps >= 0).all()
    assert (maps[:, :, 24:] == 0).all() and (maps[:, :, :24] > 0).all()
    x, eps = model.preprocess(pixels[1:2]), 1e-6
    step = torch.zeros_like(x)
    step[0, 0, 10, 5] = eps
    numeric = (model(x + step)[0, 3] - model(x - step)[0, 3]) / (2 * eps)
    assert maps[1, 10, 5].item() == pytest.approx(abs(numeric.item()), rel=1e-6)


@pytest.mark.parametrize(("name", "size"), [("study_cnn", 48), ("resnet18", 32)])
def test_saliency_has_the_input_resolution_and_each_image_its_own_gradient(name, size):
    model = tiny(name)
    maps = explain.saliency(model, faces(), torch.tensor([0, 1, 2]))
    assert maps.shape == (3, size, size) and (maps >= 0).all()
    assert torch.allclose(maps[1:2], explain.saliency(model, faces()[1:2], torch.tensor([1])))


STAGES = {
    "study_cnn": {"body.2": (32, 48, 48), "body.5": (64, 48, 48), "body.8": (128, 48, 48)},
    "block_cnn": {"body.2": (8, 46, 46), "body.5": (8, 44, 44), "body.9": (16, 20, 20)},
    "resnet18": {"net.relu": (64, 16, 16), "net.layer1": (64, 8, 8), "net.layer2": (128, 4, 4),
                 "net.layer3": (256, 2, 2), "net.layer4": (512, 1, 1)},
    "dacl": {"body.2": (64, 16, 16), "body.4": (64, 8, 8), "body.5": (128, 4, 4),
             "body.6": (256, 2, 2), "body.7": (512, 1, 1)},
}  # fmt: skip


@pytest.mark.parametrize("name", STAGES)
def test_activations_have_one_map_per_stage_and_leave_no_hooks(name):
    model = tiny(name)
    maps = explain.activations(model, faces(2))
    assert {k: tuple(v.shape[1:]) for k, v in maps.items()} == STAGES[name]
    assert all(len(v) == 2 for v in maps.values())
    assert not any(m._forward_hooks for m in model.modules())


def test_activations_are_the_stage_outputs():
    model = tiny("study_cnn")
    with torch.no_grad():
        expected = model.body[:9](model.preprocess(faces()))
    assert torch.equal(explain.activations(model, faces())["body.8"], expected)


@pytest.mark.parametrize("name", models.names())
def test_every_architecture_has_convolutional_stages(name):
    maps = explain.activations(tiny(name), faces(1))
    assert maps and all(v.ndim == 4 for v in maps.values())


@pytest.mark.parametrize(
    ("name", "layer", "shape"),
    [("study_cnn", "body.0", (32, 1, 3, 3)), ("block_cnn", "body.0", (8, 1, 3, 3)),
     ("resnet18", "net.conv1", (64, 3, 7, 7)), ("dacl", "body.0", (64, 3, 7, 7))],
)  # fmt: skip
def test_first_filters_are_the_first_convolutions_weights(name, layer, shape):
    found, weights = explain.first_filters(tiny(name))
    assert (found, tuple(weights.shape)) == (layer, shape)


def test_attention_by_class_averages_each_class_and_is_none_without_attention():
    model, labels = Attending(), torch.tensor([0, 0, 2])
    by_class = explain.attention_by_class(model, faces(), labels, len(CLASSES))
    with torch.no_grad():
        each = model.attention_weights(model.preprocess(faces()))
    assert by_class.shape == (4, 512)
    assert torch.allclose(by_class[0], each[:2].mean(0)) and torch.equal(by_class[2], each[2])
    assert by_class[[1, 3]].isnan().all()  # no images of those classes
    assert explain.attention_by_class(tiny("study_cnn"), faces(), labels, 4) is None


def test_attention_by_class_of_dacl_is_none_without_its_attention_network():
    labels = torch.tensor([0, 1, 1])
    assert explain.attention_by_class(tiny("dacl"), faces(), labels, 4) is None  # center_lambda 0
    args = {"weights": "none", "image_size": 32, "center_lambda": 0.01, "grid": 1}
    dacl = models.build("dacl", len(CLASSES), **args).eval()
    by_class = explain.attention_by_class(dacl, faces(), labels, len(CLASSES))
    assert by_class.shape == (4, 512) and ((by_class[:2] >= 0) & (by_class[:2] <= 1)).all()


@pytest.mark.parametrize("name", [*STAGES, "attending"])
def test_write_pictures_writes_every_png(name, tmp_path):
    test = synthetic(per_class=3)
    test = test.subset(test.labels < len(CLASSES))
    model = Attending() if name == "attending" else tiny(name)
    explain.write_pictures(model, test, CLASSES, 42, name, tmp_path)
    for file in explain.FILES:
        assert (tmp_path / file).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), file


@pytest.mark.parametrize(("shape", "columns", "gap"), [((7, 1, 5, 6), 3, float("nan")),
                                                       ((20, 3, 4, 4), 8, 1.0), ((3, 1, 2, 2), 5, 0.0)])  # fmt: skip
def test_mosaic_is_torchvisions_make_grid_of_images_each_scaled_to_its_range(shape, columns, gap):
    from torchvision.utils import make_grid

    images = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    expected = make_grid(images, columns, padding=1, normalize=True, scale_each=True,
                         pad_value=gap).permute(1, 2, 0).numpy()  # fmt: skip
    assert np.allclose(explain._mosaic(images, columns, gap), expected, atol=1e-6, equal_nan=True)
