"""The seed-000 models: a small CNN trained from scratch and ResNet18 fine-tuned on layer4 + fc.

Each model takes a batch of uint8 48x48 images and does its own preprocessing, so the data
stays as compact uint8 tensors in memory and is transformed a batch at a time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import ResNet18_Weights, resnet18

from ferpipe.errors import FerError
from ferpipe.labels import IMAGE_SIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SeedCNN(nn.Module):
    """Three 3x3 conv + batch norm + ReLU blocks (32, 64, 128), one 2x2 max pool, dropout 0.5,
    a 512-unit ReLU layer and one output per class."""

    def __init__(self, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, 32), (32, 64), (64, 128)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        # Dropout after Flatten draws its mask in NCHW order whatever the memory layout, so
        # channels_last drops the same units (elementwise, it commutes with Flatten).
        self.features = nn.Sequential(*layers, nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5))
        self.classifier = nn.Sequential(
            nn.Linear(128 * (IMAGE_SIZE // 2) ** 2, 512), nn.ReLU(), nn.Linear(512, num_classes)
        )

    @staticmethod
    def preprocess(pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 48, 48) -> float (N, 1, 48, 48) normalised to [-1, 1]."""
        return pixels[:, None].float().div_(127.5).sub_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ResNetClassifier(nn.Module):
    """torchvision ResNet18 with a new fc for the task; only layer4 and fc are trainable.

    The frozen part (conv1 to layer3) is the `trunk`. With `freeze_bn` its batch norms stay in
    eval mode during training, so its output depends on the image alone and can be computed
    once (the resnet_trunk stage); without it they use batch statistics, as in seed 000.
    """

    TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")

    def __init__(self, net: nn.Module, num_classes: int, image_size: int, freeze_bn: bool = True):
        super().__init__()
        net.fc = nn.Linear(net.fc.in_features, num_classes)
        for name, param in net.named_parameters():
            param.requires_grad = name.startswith(("layer4.", "fc."))
        self.net = net
        self.image_size = image_size
        self.freeze_bn = freeze_bn
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 48, 48) -> float (N, 3, S, S): bilinear resize, gray to RGB, ImageNet norm."""
        x = pixels[:, None].float().div_(255.0)
        x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.TRUNK:
            x = getattr(self.net, name)(x)
        return x

    def head(self, features: torch.Tensor) -> torch.Tensor:
        x = self.net.avgpool(self.net.layer4(features))
        return self.net.fc(torch.flatten(x, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def train(self, mode: bool = True) -> ResNetClassifier:
        super().train(mode)
        if self.freeze_bn:
            for name in self.TRUNK:
                getattr(self.net, name).eval()
        return self


class CachedTrunk(nn.Module):
    """Trains a ResNetClassifier's head on trunk features computed once (freeze_bn only)."""

    def __init__(self, model: ResNetClassifier):
        super().__init__()
        self.model = model

    @staticmethod
    def preprocess(features: torch.Tensor) -> torch.Tensor:
        return features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(features)


def build(
    name: str,
    num_classes: int,
    weights: str = "none",
    image_size: int = 224,
    freeze_bn: bool = True,
) -> tuple[nn.Module, str]:
    """The model called `name` and a description of the initial weights it got."""
    if name == "cnn":
        return SeedCNN(num_classes), "random"
    if name == "resnet":
        net, used = _resnet18(weights)
        return ResNetClassifier(net, num_classes, image_size, freeze_bn), used
    raise FerError(f"model {name!r} is unknown; use one of: cnn, resnet")


def _resnet18(weights: str) -> tuple[nn.Module, str]:
    """ResNet18 with the weights `resnet.weights` asks for: auto | imagenet | none | a file."""
    if weights == "none":
        return resnet18(weights=None), "none"
    if weights in ("imagenet", "auto"):
        try:
            return resnet18(weights=ResNet18_Weights.IMAGENET1K_V1), "imagenet"
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            if weights == "imagenet":
                cache = Path(torch.hub.get_dir()) / "checkpoints"
                raise FerError(
                    f"resnet.weights=imagenet: the ImageNet weights cannot be had ({exc}); put "
                    f"resnet18-f37072fd.pth in {cache}, or set resnet.weights to a file, auto or none"
                ) from None
            print(
                "WARNING: resnet.weights=auto: ImageNet weights unavailable "
                f"({type(exc).__name__}); training ResNet18 FROM SCRATCH (recorded in the metrics)",
                flush=True,
            )
            return resnet18(weights=None), "none (auto: imagenet unavailable)"
    return _resnet18_from_file(Path(weights).expanduser())


def _resnet18_from_file(path: Path) -> tuple[nn.Module, str]:
    if not path.is_file():
        raise FerError(
            f"resnet.weights={str(path)!r}: no such file; use auto, imagenet, none or a .pth path"
        )
    data = path.read_bytes()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = resnet18(weights=None)
        net.load_state_dict(state)
    except Exception as exc:  # torch raises many types for a bad file
        raise FerError(f"{path}: not a ResNet18 state dict ({str(exc).splitlines()[0]})") from None
    return net, f"file {path.name} sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def save_checkpoint(
    model: nn.Module, name: str, classes: tuple[str, ...], weights: str, path: Path
) -> None:
    """One checkpoint dict: the state and what is needed to rebuild the model for evaluation."""
    from ferpipe.dataset import atomic_path

    checkpoint = {
        "model": name,
        "classes": list(classes),
        "weights": weights,
        "image_size": getattr(model, "image_size", IMAGE_SIZE),
        "freeze_bn": getattr(model, "freeze_bn", False),
        "state_dict": model.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by `save_checkpoint` (loaded with weights_only=True)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FerError(f"{path}: not found; run the stage that writes it (dvc repro)") from None
    model, _ = build(
        checkpoint["model"],
        len(checkpoint["classes"]),
        "none",
        checkpoint["image_size"],
        checkpoint["freeze_bn"],
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model, checkpoint
