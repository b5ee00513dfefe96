"""Interpretability pictures of one trained model on a few fixed test faces (stage explain).

- saliency: |d logit of the predicted class / d input| (Simonyan et al. 2014), max over the
  input's channels, at the model's input resolution (after its preprocess: resize, scaling);
- activations of each convolutional stage, one rule for the whole zoo: the output of every
  residual layer (a Sequential of torchvision BasicBlocks or Bottlenecks: a ResNet's or DACL's
  layer1..layer4) and of every ReLU outside one whose output is a feature map (N, C, H, W): the
  ResNet stem's relu (after conv1, bn1) and each conv -> [norm] -> ReLU block of study_cnn,
  small_cnn, block_cnn and vgg_cnn, before its pooling;
- the first Conv2d's filters (in module order: the layer every zoo family meets its input with);
- for a model with an attention network (DACL: `attention_weights`), the mean weights per class.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferpipe.dataset import Images
from ferpipe.errors import FerError
from ferpipe.paths import PLOTS
from ferpipe.plots import plt, save_png

PER_CLASS = 2  # test faces chosen per class; a row of the saliency picture per class
SHOWN = 2  # faces of the activation picture: the first chosen of the first two classes
CHANNELS = 6  # channels shown per stage, beside their mean
FILTERS = 64  # first-layer filters shown at most
FILES = ("saliency.png", "activations.png", "filters.png", "attention.png")


def explain_dir(entry: str) -> Path:
    return PLOTS / entry / "explain"


def choose_images(labels: np.ndarray, ids: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of the first `per_class` images of each class (ascending) in a `seed`-drawn
    permutation of the sorted ids: they depend on ids, labels and seed alone, so every model of
    an experiment shows the same faces, whatever the order of the test file."""
    order = np.argsort(ids, kind="stable")[np.random.default_rng(seed).permutation(len(ids))]
    return np.concatenate([order[labels[order] == c][:per_class] for c in np.unique(labels)])


def _inputs(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The model's input for uint8 (N, 48, 48) faces, on the model's device."""
    return model.preprocess(pixels.to(next(model.parameters()).device))


@torch.no_grad()
def predict(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return model(_inputs(model, pixels)).argmax(1).cpu()


def saliency(model: nn.Module, pixels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, H, W) |d logit_target / d input|, max over channels, at the model's input size. The
    model must be in eval mode, so that each image's score depends on that image alone."""
    x = _inputs(model, pixels).requires_grad_()
    with torch.enable_grad():
        score = model(x).gather(1, targets.to(x.device)[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)
    return grad.abs().amax(1).cpu()


def _residual_blocks() -> tuple[type, ...]:
    """torchvision's BasicBlock and Bottleneck, if torchvision is loaded: a model made of them
    has loaded it, and importing it for a model that has none costs about 2.5 s."""
    resnet = sys.modules.get("torchvision.models.resnet")
    return (resnet.BasicBlock, resnet.Bottleneck) if resnet else ()


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules whose outputs are the convolutional stages (module docstring), by name."""
    stages: dict[str, nn.Module] = {}
    blocks = _residual_blocks()
    for name, module in model.named_modules():  # a parent comes before its children
        residual = isinstance(module, nn.Sequential) and any(
            isinstance(block, blocks) for block in module.children()
        )
        inside = any(name.startswith(f"{stage}.") for stage in stages)
        if (residual or isinstance(module, nn.ReLU)) and not inside:
            stages[name] = module
    return stages


def _keep(maps: dict[str, torch.Tensor], name: str, module, inputs, output) -> None:
    if output.ndim == 4:  # a feature map, not the classifier's vectors
        maps[name] = output.detach().to("cpu", copy=True)  # a later in-place op may change it


@torch.no_grad()
def activations(model: nn.Module, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each convolutional stage's output (N, C, H, W) for `pixels`, by module name, in the
    order the forward pass meets them."""
    maps: dict[str, torch.Tensor] = {}
    stages = stage_modules(model).items()
    hooks = [m.register_forward_hook(partial(_keep, maps, name)) for name, m in stages]
    try:
        model(_inputs(model, pixels))
    finally:
        for hook in hooks:
            hook.remove()
    return maps


def first_filters(model: nn.Module) -> tuple[str, torch.Tensor]:
    """The first Conv2d's name and weights (out, in, k, k)."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    return name, conv.weight.detach().cpu()


@torch.no_grad()
def attention_by_class(
    model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor | None:
    """(num_classes, channels) mean attention weights over each class's images (NaN for a class
    without any); None for a model without an attention network: no `attention_weights`, or
    one that refuses (DACL with center_lambda 0)."""
    if not hasattr(model, "attention_weights"):
        return None
    try:
        weights = model.attention_weights(_inputs(model, pixels)).cpu()
    except FerError:
        return None
    return torch.stack([weights[labels == c].mean(0) for c in range(num_classes)])


def _mosaic(images: torch.Tensor, columns: int, gap: float) -> np.ndarray:
    """(N, C, h, w) images in one (H, W, 3) picture, `columns` a row, each scaled to its range,
    `gap` between them (NaN: drawn blank). One matplotlib axis for them all: axes are most of a
    figure's drawing time."""
    n, channels, h, w = images.shape
    low = images.amin((1, 2, 3), keepdim=True)
    span = (images.amax((1, 2, 3), keepdim=True) - low).clamp_min(1e-5)
    scaled = ((images - low) / span).expand(n, 3, h, w).permute(0, 2, 3, 1).numpy()
    columns = min(columns, n)
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, 3), gap, dtype=np.float32)
    for i, image in enumerate(scaled):
        top, left = 1 + (i // columns) * (h + 1), 1 + (i % columns) * (w + 1)
        grid[top : top + h, left : left + w] = image
    return grid


def _face(ax: plt.Axes, face: torch.Tensor, caption: str) -> None:
    ax.imshow(face.numpy(), cmap="gray", vmin=0, vmax=255)
    ax.set_title(caption, fontsize=8)


def _axes(rows: int, cols: int, width: float, height: float) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def saliency_png(
    pixels: torch.Tensor, maps: torch.Tensor, captions: list[str], title: str, path: Path
) -> None:
    """Each face beside its saliency map (scaled per map), PER_CLASS pairs a row."""
    fig, axes = _axes(-(-len(pixels) // PER_CLASS), 2 * PER_CLASS, 2.0, 2.2)
    for i, (face, heat, caption) in enumerate(zip(pixels, maps, captions, strict=True)):
        row, col = divmod(i, PER_CLASS)
        _face(axes[row, 2 * col], face, caption)
        axes[row, 2 * col + 1].imshow(heat.numpy(), cmap="hot")
        axes[row, 2 * col + 1].set_title(f"saliency {heat.shape[0]}x{heat.shape[1]}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def activations_png(
    pixels: torch.Tensor, maps: dict[str, torch.Tensor], captions: list[str], title: str, path: Path
) -> None:
    """A column per face: the face, then per stage its channels' mean and first CHANNELS
    channels, each scaled to its own range."""
    fig, axes = _axes(1 + len(maps), len(pixels), 7.0, 1.4)
    for i, (face, caption) in enumerate(zip(pixels, captions, strict=True)):
        _face(axes[0, i], face, caption)
        for ax, (name, out) in zip(axes[1:, i], maps.items(), strict=True):
            shown = torch.cat([out[i].mean(0, keepdim=True), out[i][:CHANNELS]])
            ax.imshow(_mosaic(shown[:, None], len(shown), float("nan"))[..., 0], cmap="viridis")
            shape = "x".join(map(str, out.shape[1:]))
            ax.set_title(f"{name} ({shape}): mean, channels 0-{len(shown) - 2}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def filters_png(name: str, weights: torch.Tensor, title: str, path: Path) -> None:
    """The first FILTERS filters, each scaled to its own range: RGB for three input channels,
    else the mean over them (gray)."""
    shown = weights[:FILTERS] if weights.shape[1] == 3 else weights[:FILTERS].mean(1, keepdim=True)
    fig, axes = _axes(1, 1, 6.0, 6.0 * -(-len(shown) // 8) / 8)
    axes[0, 0].imshow(_mosaic(shown, 8, 1.0), interpolation="nearest")
    axes[0, 0].set_title(f"{name}: {tuple(weights.shape)}, first {len(shown)}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def attention_png(
    weights: torch.Tensor | None,
    classes: tuple[str, ...],
    counts: list[int],
    title: str,
    path: Path,
) -> None:
    """A heat strip of the mean attention weight of each channel per class, its top channels in
    the label; for a model without attention, a figure that says so (the same files for all)."""
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(classes) + 1.5))
    if weights is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "no attention network", ha="center", va="center", fontsize=14)
    else:
        image = ax.imshow(weights.numpy(), aspect="auto", cmap="magma", interpolation="nearest")
        top = weights.nan_to_num(float("-inf")).topk(3, dim=1).indices.tolist()
        labels = [
            f"{c} ({n} img; top {', '.join(map(str, t))})"
            for c, n, t in zip(classes, counts, top, strict=True)
        ]
        ax.set(yticks=range(len(classes)), yticklabels=labels, xlabel="channel")
        fig.colorbar(image, ax=ax, label="mean attention weight")
    ax.set_title(title, fontsize=10)
    save_png(fig, path)


def write_pictures(
    model: nn.Module, test: Images, classes: tuple[str, ...], seed: int, title: str, folder: Path
) -> None:
    """The four FILES for `model` on the faces `choose_images` picks from `test`."""
    model.eval()
    chosen = choose_images(test.labels, test.ids, PER_CLASS, seed)
    pixels, labels = torch.from_numpy(test.pixels[chosen]), torch.from_numpy(test.labels[chosen])
    predicted = predict(model, pixels)
    captions = [
        f"{i}\ntrue {classes[t]}, pred {classes[p]}"
        for i, t, p in zip(test.ids[chosen], labels, predicted, strict=True)
    ]
    heat = saliency(model, pixels, predicted)
    saliency_png(pixels, heat, captions, f"{title}: |d logit(pred) / d input|", folder / FILES[0])
    shown = np.unique(labels.numpy(), return_index=True)[1][:SHOWN]
    maps = activations(model, pixels[shown])
    captions_shown = [captions[i] for i in shown]
    activations_png(pixels[shown], maps, captions_shown, f"{title}: activations", folder / FILES[1])
    filters_png(*first_filters(model), f"{title}: first layer's filters", folder / FILES[2])
    counts = [int((labels == c).sum()) for c in range(len(classes))]
    weights = attention_by_class(model, pixels, labels, len(classes))
    attention_png(weights, classes, counts, f"{title}: attention by class", folder / FILES[3])
