"""Training-time augmentation of uint8 (N, H, W) batches: registered transforms, named presets.

Every transform mirrors a torchvision transform but works on a whole batch at once, with
per-image random parameters drawn as tensors from a CPU generator (so a seed gives the same
images on any device), and returns a new uint8 batch: models do their own preprocessing.
params.yaml's `augment:` maps preset names to {transforms: [{name, <argument>: <value>}], pick:
all | one, every: N}; a zoo entry selects one with `augment: <name>`, or `none`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from ferpipe.errors import FerError
from ferpipe.labels import IMAGE_SIZE
from ferpipe.plots import plt, save_png  # plots selects matplotlib's Agg backend
from ferpipe.registry import Registry

TRANSFORMS = Registry("transform", supplied=("images", "generator"))
PICKS = ("all", "one")
NONE = "none"  # the reserved preset name: no augmentation
KEYS = ("transforms", "pick", "every")


def _uniform(
    images: torch.Tensor, generator: torch.Generator, low: float, high: float, *shape: int
) -> torch.Tensor:
    """One number per image (times `shape`), uniform in [low, high], on the images' device."""
    draw = torch.rand(len(images), *shape, generator=generator) * (high - low) + low
    return draw.to(images.device)


def _chance(images: torch.Tensor, generator: torch.Generator, p: float) -> torch.Tensor:
    """Per-image booleans, True with probability p (torchvision's `rand < p`)."""
    return _uniform(images, generator, 0.0, 1.0) < p


def _per_image(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *[1] * (new.dim() - 1)), new, old)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    """The value-range rule types cannot express; check_presets prefixes the error's key."""
    if not ok:
        raise FerError(f"{key}={value!r} must {rule}")


def _probability(p: float) -> None:
    _require(0 <= p <= 1, "p", p, "be within [0, 1]")


def _interval(key: str, pair: list[float], high: float = math.inf) -> None:
    ok = len(pair) == 2 and 0 < pair[0] <= pair[1] <= high
    _require(ok, key, pair, f"be 2 numbers, 0 < first <= second <= {high:g}")


@TRANSFORMS.register("hflip")
def hflip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """RandomHorizontalFlip(p): each image mirrored left-right with probability p."""
    _probability(p)
    return _per_image(_chance(images, generator, p), images.flip(-1), images)


@TRANSFORMS.register("affine")
def affine(
    images: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: list[float] = [1.0, 1.0],  # noqa: B006 (never modified)
    shear: float = 0.0,
    interpolation: Literal["nearest", "bilinear"] = "nearest",
) -> torch.Tensor:
    """RandomAffine(degrees, (translate, translate), scale, shear, interpolation, fill=0), and
    RandomRotation(degrees) when only degrees is set: angle uniform in [-degrees, degrees],
    shifts uniform within translate x the side (rounded to pixels), zoom uniform in scale, x-shear
    uniform in [-shear, shear] degrees. One translate fraction serves both axes."""
    _require(degrees >= 0, "degrees", degrees, "be >= 0")
    _require(0 <= translate <= 1, "translate", translate, "be within [0, 1]")
    _interval("scale", scale)
    _require(0 <= shear < 90, "shear", shear, "be within [0, 90)")
    _, h, w = images.shape
    angle = _uniform(images, generator, -degrees, degrees)
    tx = _uniform(images, generator, -translate * w, translate * w).round()
    ty = _uniform(images, generator, -translate * h, translate * h).round()
    zoom = _uniform(images, generator, *scale)
    return warp(
        images, angle, tx, ty, zoom, _uniform(images, generator, -shear, shear), interpolation
    )


def warp(
    images: torch.Tensor,
    angle: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    zoom: torch.Tensor,
    shear: torch.Tensor,
    interpolation: str = "nearest",
) -> torch.Tensor:
    """torchvision's F.affine(fill=0) with one set of parameters per image (angle clockwise, as
    there): its inverse matrix about the centre (y-shear 0), in grid_sample's units."""
    n, h, w = images.shape
    rot, sx = angle.deg2rad(), shear.deg2rad()
    b = -rot.cos() * sx.tan() - rot.sin()
    d = -rot.sin() * sx.tan() + rot.cos()
    inverse = torch.stack([d, -b, -rot.sin(), rot.cos()], 1).view(n, 2, 2) / zoom.view(n, 1, 1)
    shift = -inverse @ torch.stack([tx, ty], 1)[:, :, None]
    half = torch.tensor([w / 2, h / 2], device=images.device)  # pixels -> [-1, 1]
    theta = torch.cat([inverse * half / half[:, None], shift / half[:, None]], 2)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    planes = torch.stack([images.float(), torch.ones_like(images, dtype=torch.float32)], 1)
    out, inside = F.grid_sample(planes, grid, interpolation, "zeros", align_corners=False).unbind(1)
    return _to_uint8(out * inside)  # torchvision's fill-0 blend: edge pixels fade with the mask


@TRANSFORMS.register("crop")
def crop(
    images: torch.Tensor, generator: torch.Generator, size: int = 48, padding: int = 0
) -> torch.Tensor:
    """RandomCrop(size, padding, fill=0): a size x size window at a uniform offset of the
    zero-padded image. Keep size 48, the side the zoo's models take."""
    n, h, w = images.shape
    _require(padding >= 0, "padding", padding, "be >= 0")
    _require(1 <= size <= min(h, w) + 2 * padding, "size", size, "fit the padded image side")
    device = images.device
    rows, cols = (
        torch.randint(side + 2 * padding - size + 1, (n, 1), generator=generator).to(device)
        + torch.arange(size, device=device)
        for side in (h, w)
    )
    padded = F.pad(images, [padding] * 4)
    return padded[torch.arange(n, device=device)[:, None, None], rows[:, :, None], cols[:, None]]


@TRANSFORMS.register("jitter")
def jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
) -> torch.Tensor:
    """ColorJitter(brightness, contrast, saturation): factors uniform in [max(0, 1 - v), 1 + v];
    brightness scales, contrast blends with the image's mean gray level, in a random order per
    image, rounded and clamped after each (torchvision truncates). Saturation blends with the
    grayscale image, for a gray image the image itself: a no-op, kept so recipes can state it."""
    for key, value in dict(brightness=brightness, contrast=contrast, saturation=saturation).items():
        _require(value >= 0, key, value, "be >= 0")
    gain = _uniform(images, generator, max(0.0, 1 - brightness), 1 + brightness)[:, None, None]
    blend = _uniform(images, generator, max(0.0, 1 - contrast), 1 + contrast)[:, None, None]

    def bright(x: torch.Tensor) -> torch.Tensor:
        return (x * gain).round().clamp(0, 255)

    def contrasted(x: torch.Tensor) -> torch.Tensor:
        return (blend * x + (1 - blend) * x.mean((1, 2), keepdim=True)).round().clamp(0, 255)

    x = images.float()
    first = _chance(images, generator, 0.5)
    return _to_uint8(_per_image(first, contrasted(bright(x)), bright(contrasted(x))))


@TRANSFORMS.register("sharpness")
def sharpness(
    images: torch.Tensor,
    generator: torch.Generator,
    low: float = 1.0,
    high: float = 1.0,
    p: float = 0.5,
) -> torch.Tensor:
    """torchvision's adjust_sharpness with a factor uniform in [low, high] per image, applied with
    probability p: a blend with the 3x3 smoothing [[1,1,1],[1,5,1],[1,1,1]] / 13, border pixels
    kept; rounded where torchvision truncates. RandomAdjustSharpness(factor, p) is low = high."""
    _require(0 <= low <= high, "low", low, f"be within [0, high={high!r}]")
    _probability(p)
    factor = _uniform(images, generator, low, high)[:, None, None]
    applied = _chance(images, generator, p)
    kernel = torch.ones(1, 1, 3, 3, device=images.device)
    kernel[..., 1, 1] = 5
    x = images.float()
    blurred = F.conv2d(x[:, None], kernel / 13)[:, 0].round()
    inner = x[:, 1:-1, 1:-1]
    x[:, 1:-1, 1:-1] = blurred + factor * (inner - blurred)
    return _per_image(applied, _to_uint8(x), images)


@TRANSFORMS.register("erase")
def erase(
    images: torch.Tensor,
    generator: torch.Generator,
    p: float = 0.5,
    scale: list[float] = [0.02, 0.33],  # noqa: B006 (never modified)
    ratio: list[float] = [0.3, 3.3],  # noqa: B006
    value: int = 0,
) -> torch.Tensor:
    """RandomErasing(p, scale, ratio, value): a rectangle of area fraction uniform in scale and
    aspect ratio log-uniform in ratio set to value; of 10 attempts per image the first that fits
    strictly inside is used, and none fitting leaves the image as it is."""
    _probability(p)
    _interval("scale", scale, high=1.0)
    _interval("ratio", ratio)
    _require(0 <= value <= 255, "value", value, "be a gray level within [0, 255]")
    n, h, w = images.shape
    applied = _chance(images, generator, p)
    area = h * w * _uniform(images, generator, *scale, 10)
    aspect = _uniform(images, generator, math.log(ratio[0]), math.log(ratio[1]), 10).exp()
    sides = [(area * aspect).sqrt().round(), (area / aspect).sqrt().round()]
    fits = (sides[0] < h) & (sides[1] < w)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)
    eh, ew = (side.gather(1, first).view(n, 1, 1) for side in sides)
    top = (_uniform(images, generator, 0.0, 1.0).view(n, 1, 1) * (h - eh + 1)).floor()
    left = (_uniform(images, generator, 0.0, 1.0).view(n, 1, 1) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
    return images.masked_fill(inside & (applied & fits.any(1)).view(n, 1, 1), value)


@TRANSFORMS.register("equalize")
def equalize(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """RandomEqualize(p): torchvision's uint8 histogram equalisation (PIL's lookup table), each
    image's histogram a slice of one bincount; an image of one gray level stays as it is."""
    _probability(p)
    applied = _chance(images, generator, p)
    n = len(images)
    flat = images.reshape(n, -1).long()
    offsets = 256 * torch.arange(n, device=images.device)[:, None]
    hist = torch.bincount((flat + offsets).flatten(), minlength=256 * n).view(n, 256)
    cumulative = hist.cumsum(1)
    top = hist.gather(1, cumulative.argmax(1, keepdim=True))  # count of the highest level
    step = (flat.shape[1] - top).div(255, rounding_mode="floor")
    lut = (cumulative[:, :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor")
    lut = torch.cat([torch.zeros_like(step), lut.clamp(0, 255)], 1)
    equalized = lut.gather(1, flat).to(torch.uint8).view_as(images)
    return _per_image(applied & (step[:, 0] > 0), equalized, images)


def _seed(*keys: int) -> int:
    """A 64-bit seed mixed from `keys` (NumPy's SeedSequence), so derived streams are unrelated."""
    return int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0])


PROBE = torch.zeros(1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)  # runs a transform's checks


def check_presets(presets: Mapping[str, Any], where: str = "augment") -> None:
    """Refuse a malformed preset, naming its key: keys, pick, every, each transform's name,
    arguments (their types from the signature) and value ranges (checked by the transform)."""
    if not isinstance(presets, Mapping):
        raise FerError(f"{where} must map preset names to {{{', '.join(KEYS)}}}")
    for name, preset in presets.items():
        at = f"{where}.{name}"
        if name == NONE:
            raise FerError(f"{at}: the name none is reserved for no augmentation; rename it")
        keys = ", ".join(KEYS)
        if not isinstance(preset, Mapping):
            raise FerError(f"{at}={preset!r} must be a mapping with the keys: {keys}")
        for key in [k for k in KEYS if k not in preset] + [k for k in preset if k not in KEYS]:
            state = "is missing" if key in KEYS else "is not a preset key"
            raise FerError(f"{at}.{key} {state}; a preset has exactly: {keys}")
        if preset["pick"] not in PICKS:
            raise FerError(f"{at}.pick={preset['pick']!r} must be one of: {', '.join(PICKS)}")
        every = preset["every"]
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise FerError(f"{at}.every={every!r} must be a positive integer (1 = every epoch)")
        steps = preset["transforms"]
        if not isinstance(steps, list) or not steps:
            raise FerError(
                f"{at}.transforms must be a non-empty list of {{name: <transform>, ...}}"
            )
        for i, step in enumerate(steps):
            _check_step(step, f"{at}.transforms[{i}]")


def _check_step(step: Any, where: str) -> None:
    names = ", ".join(TRANSFORMS.names())
    name = step.get("name") if isinstance(step, Mapping) else None
    if not isinstance(name, str) or name not in TRANSFORMS:
        raise FerError(f"{where}.name={name!r} is not a transform; use one of: {names}")
    args = {k: v for k, v in step.items() if k != "name"}
    TRANSFORMS.check_args(name, args, where)
    try:
        TRANSFORMS.get(name).builder(PROBE, torch.Generator(), **args)
    except FerError as exc:
        raise FerError(f"{where}.{exc}") from None


class Augmentation:
    """The preset `name` applied to a zoo entry's training batches. It owns its generator, seeded
    from `seed` mixed with a stream number: turning augmentation on leaves the training's
    shuffling as it was, and its draws are unrelated to a generator seeded with `seed` itself."""

    def __init__(self, name: str, preset: Mapping[str, Any] | None, seed: int):
        self.name, self.preset, self.seed = name, preset, seed
        steps = preset["transforms"] if preset else []
        self.steps = [(s["name"], {k: v for k, v in s.items() if k != "name"}) for s in steps]
        self.pick, self.every = (preset["pick"], preset["every"]) if preset else ("all", 1)
        self.generator = torch.Generator().manual_seed(_seed(seed, 0))

    @classmethod
    def from_params(cls, name: str, presets: Mapping[str, Any], seed: int) -> Augmentation:
        """The preset `name` of params.yaml's `augment` mapping (checked), or none."""
        if name == NONE:
            return cls(NONE, None, seed)
        presets = presets or {}
        if name not in presets:
            known = ", ".join([NONE, *map(str, presets)])
            raise FerError(f"augment={name!r} is not a preset under augment; use one of: {known}")
        check_presets({name: presets[name]})
        return cls(name, presets[name], seed)

    @property
    def active(self) -> bool:
        return self.name != NONE

    def plan(self, epoch: int) -> list[tuple[str, dict[str, Any]]]:
        """The transforms (name, arguments) every batch of 1-based `epoch` goes through, in
        order; for pick one, drawn from (seed, epoch) alone. Empty when it is not augmented."""
        if not self.active or epoch % self.every:
            return []
        if self.pick == "one":
            return [self.steps[_seed(self.seed, 1, epoch) % len(self.steps)]]
        return self.steps

    def __call__(self, images: torch.Tensor, epoch: int) -> torch.Tensor:
        """The batch augmented as `epoch` says, a new tensor; `images` itself when not augmented."""
        for name, args in self.plan(epoch):
            images = TRANSFORMS.get(name).builder(images, self.generator, **args)
        return images

    def restarted(self) -> Augmentation:
        """The same preset and seed with a fresh generator: it gives the outputs this one gave."""
        return Augmentation(self.name, self.preset, self.seed)


def preview(
    images: torch.Tensor,
    labels: list[str],
    augmentation: Augmentation,
    path: Path,
    epochs: int = 3,
) -> None:
    """A PNG of up to 8 images: as they are, then as each of the first `epochs` augmented epochs
    sees them (the kind of change, not training's exact images: draws depend on the batch). Drawn
    with `augmentation.restarted()`, so the picture is the same on every run and the training's
    generator is untouched."""
    fresh, shown = augmentation.restarted(), images[:8]
    rows = [("original", shown)]
    for epoch in [fresh.every * k for k in range(1, epochs + 1)] if fresh.active else []:
        names = [name for name, _ in fresh.plan(epoch)] if fresh.pick == "one" else []
        rows.append((": ".join([f"epoch {epoch}", *names]), fresh(shown, epoch)))
    fig, axes = plt.subplots(
        len(rows), len(shown), figsize=(1.4 * len(shown), 1.5 * len(rows) + 0.5), squeeze=False
    )
    for r, (title, batch) in enumerate(rows):
        for i, ax in enumerate(axes[r]):
            ax.imshow(batch[i].cpu().numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set(xticks=[], yticks=[], title=labels[i] if r == 0 else "")
        axes[r, 0].set_ylabel(title)
    pick = f"pick {fresh.pick}, every {fresh.every}" if fresh.active else "no augmentation"
    fig.suptitle(f"{fresh.name}: {pick}")
    save_png(fig, path)
