"""torchvision ResNets with a new head, partly or wholly fine-tuned (seeds 000, 001 and 004)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from ferpipe.errors import FerError
from ferpipe.models.base import FerModel, read_torch_file, register
from ferpipe.models.inputs import imagenet_buffers, imagenet_rgb

BACKBONE = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
Stage = Literal["conv1", "layer1", "layer2", "layer3", "layer4"]


@register("resnet18", fixed={"depth": 18}, tiny={"image_size": 32})
@register("resnet50", fixed={"depth": 50}, tiny={"image_size": 32})
class ResNet(FerModel):
    """torchvision ResNet (18 or 50 layers) with a new classifier head; the layers before
    `train_from` stay frozen. Gray faces resized to `image_size`, copied to three channels,
    ImageNet normalisation.

    - `weights`: auto (ImageNet when obtainable, else from scratch with a warning) | imagenet
      (strict) | none | a local state-dict file (e.g. another pretraining of the same depth);
    - `train_from`: the first stage that trains (seed 000: layer4; conv1 fine-tunes it all);
    - `freeze_bn`: the frozen layers' batch norm runs in eval mode, so their output depends on
      the image alone and is computed once; false: batch statistics at every step (seed 000);
    - `hidden`, `dropout`: hidden ReLU layers of the head, each followed by dropout (seed 004:
      [256]); `keep_fc`: keep ImageNet's 1000-way fc and add the new layers on top (seed 001).
    """

    def __init__(
        self,
        num_classes: int,
        depth: int,
        weights: str = "auto",
        image_size: int = 224,
        train_from: Stage = "layer4",
        freeze_bn: bool = True,
        hidden: list[int] = (),  # type: ignore[assignment]  # a list in params.yaml
        dropout: float = 0.5,
        keep_fc: bool = False,
    ):
        super().__init__()
        if image_size < 32:
            raise FerError(f"image_size={image_size} must be at least 32 (ResNet downsamples 32x)")
        net, self.weights = pretrained(f"resnet{depth}", weights)
        width = net.fc.out_features if keep_fc else net.fc.in_features
        layers: list[nn.Module] = [net.fc] if keep_fc else []
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(dropout)]
            width = units
        layers.append(nn.Linear(width, num_classes))
        net.fc = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
        # Modules before `split` are frozen (features); conv1 trains them all.
        self.split = len(BACKBONE) if train_from == "conv1" else BACKBONE.index(train_from)
        frozen = BACKBONE[: self.split] if self.split < len(BACKBONE) else ()
        for name, param in net.named_parameters():
            param.requires_grad = not name.startswith(tuple(f"{m}." for m in frozen))
        self.net, self.image_size, self.freeze_bn = net, image_size, freeze_bn
        imagenet_buffers(self)

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        return imagenet_rgb(pixels, self.image_size, self.mean, self.std)

    def _run(self, x: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
        for name in names:
            x = getattr(self.net, name)(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._run(x, BACKBONE[: self.split])
        return torch.flatten(self.net.avgpool(x), 1) if self.split == len(BACKBONE) else x

    def head(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        if self.split < len(BACKBONE):
            x = torch.flatten(self.net.avgpool(self._run(x, BACKBONE[self.split :])), 1)
        return self.net.fc(x)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.net.fc.parameters())  # with keep_fc, ImageNet's fc counts as head

    @property
    def frozen_features(self) -> bool:
        return self.freeze_bn and self.split < len(BACKBONE)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        if self.frozen_features:
            for name in BACKBONE[: self.split]:
                getattr(self.net, name).eval()
        return self


def _torchvision() -> ModuleType:
    """torchvision.models, imported only when a ResNet is built: the import loads torch._dynamo
    (about 2.5 s), which every stage process of the other architectures would pay for nothing."""
    import torchvision.models

    return torchvision.models


def pretrained(name: str, weights: str) -> tuple[nn.Module, str]:
    """torchvision's `name` with the weights asked for, and what was used."""
    get_model = _torchvision().get_model
    if weights == "none":
        return get_model(name, weights=None), "none"
    if weights in ("imagenet", "auto"):
        try:
            return get_model(name, weights="DEFAULT"), "imagenet"
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            if weights == "imagenet":
                cache = Path(torch.hub.get_dir()) / "checkpoints"
                file = Path(_torchvision().get_model_weights(name).DEFAULT.url).name
                raise FerError(
                    f"{name} weights=imagenet: the ImageNet weights cannot be had ({exc}); put "
                    f"{file} in {cache}, or set weights to a file, auto or none"
                ) from None
            print(
                f"WARNING: {name} weights=auto: ImageNet weights unavailable "
                f"({type(exc).__name__}); training {name} FROM SCRATCH (recorded in the metrics)",
                flush=True,
            )
            return get_model(name, weights=None), "none (auto: imagenet unavailable)"
    return _from_file(name, Path(weights).expanduser())


def _from_file(name: str, path: Path) -> tuple[nn.Module, str]:
    if not path.is_file():
        raise FerError(
            f"{name} weights={str(path)!r}: no such file; use auto, imagenet, none or a .pth path"
        )
    data = path.read_bytes()
    state = read_torch_file(path, f"a {name} state dict")
    net = _torchvision().get_model(name, weights=None)
    try:
        net.load_state_dict(backbone_of(state, net.fc))
    except (RuntimeError, TypeError, AttributeError) as exc:  # wrong keys or shapes, not a dict
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise FerError(f"{path}: not a {name} state dict ({first})") from None
    return net, f"file {path.name} sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def backbone_of(state: Any, fc: nn.Linear) -> Any:
    """A saved ResNet's state as torchvision names it: unwrapped from {"state_dict": ...} and
    DataParallel's "module." prefix, its fc replaced by `fc`'s own when it has another number of
    outputs (a face-recognition pretraining, e.g. MS-Celeb-1M's thousands of identities: only
    the backbone is wanted, the pipeline puts a new head on it)."""
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        return state  # load_state_dict refuses it with the reason
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if getattr(state.get("fc.weight"), "shape", fc.weight.shape) != fc.weight.shape:
        state |= {"fc.weight": fc.weight.detach(), "fc.bias": fc.bias.detach()}
    return state
