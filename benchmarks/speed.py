"""Training throughput of the pipeline's own step against a seed-000-style loop, on this CPU.

Usage (from the project root, with the project's virtualenv):

    python benchmarks/speed.py                # full run: under 10 minutes on an idle 2-core CPU
    python benchmarks/speed.py --images 1024  # more images per measurement (steadier numbers)
    python benchmarks/speed.py --threads 1    # torch thread count (default: torch's default)
    python benchmarks/speed.py --quick        # smoke run with tiny sizes, for tests and CI
    python benchmarks/speed.py --compile --no-channels-last  # other speed settings for ours

It measures, in one run:

1. the CPU model and its bf16-relevant ISA flags, and the fp32 and bf16 matmul peaks (GFLOP/s
   of a large `torch.mm`) at the current thread count;
2. the same models and math through a seed-000-style loop: JPEGs on disk, `ImageFolder` with
   per-sample PIL transforms, `DataLoader(num_workers=0)`, NCHW fp32 eager, plain Adam, and
   the memory allocator as Python starts (measured first, before ours reconfigures it);
3. training images/s of `ferpipe.training.train_one_epoch` on in-memory uint8 tensors, as the
   train stage runs it (the speed settings of params.yaml unless flags say otherwise, fused
   Adam), for the CNN (48x48) and ResNet18 (224, layer4 + fc trainable, the whole network run
   every step), each with its share of the matmul peak of its precision: in fp32 and, where
   the CPU runs bf16 fast (`ferpipe.speed.fast_bf16`: AMX or AVX-512 BF16), under bf16
   autocast as `train.precision: bf16` runs it (elsewhere bf16 is emulated, tens of times
   slower, and skipped with a note);
4. the pipeline's ResNet epoch with `zoo.resnet.args.freeze_bn`: the trunk's features computed once
   (their cost shared by 5 epochs) and layer4 + fc trained on them, in each precision measured;
5. the ratios, as estimated full-epoch times (12,796 training images, the multiclass
   protocol) extrapolated from the per-image times of the measured subset;
6. the seed-style loop's evaluation pass (seed 000's `validate_model`: eval mode, no gradients,
   the same JPEG loader) and, from both seed-style timings, the seconds that loop would need for
   the whole seed-000 grid (2 tasks x 2 losses x CNN 10, ResNet 5 and 10 epochs).

Data: the real archive `../shared/data/fer2013/fer2013.zip` beside the checkout (decoded with
`ferpipe.sources.read_source`; the same images are extracted as JPEGs for the seed-style loop).
Without it, random 48x48 images stand in, and the output says so. The throughput does not
depend on pixel values, so the numbers stay meaningful; only the losses are not.

The last line is machine-readable:

    RESULT cnn_ips=<f> cnn_peak=<percent> resnet_ips=<f> resnet_peak=<percent> cnn_speedup=<x> resnet_epoch_speedup=<x> cnn_bf16_ips=<f> resnet_bf16_ips=<f> cnn_bf16_ratio=<x> resnet_bf16_ratio=<x> resnet_bf16_epoch_speedup=<x> seed_grid_s=<s> seed_grid_train_s=<s>

The first six are fp32. The bf16 figures are 0 where bf16 is not measured; `*_bf16_ratio` is the
bf16 step's images/s over the fp32 step's, `resnet_bf16_epoch_speedup` the seed-style epoch over
the pipeline's bf16 epoch. `seed_grid_s` is the seconds the seed-style loop would need for seed
000's 12-run grid on this machine (each epoch's training and validation, each run's test pass,
at the measured per-image times); `seed_grid_train_s` the training epochs alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from ferpipe import losses, models, params, runinfo, sources, training
from ferpipe.dataset import Images
from ferpipe.labels import EMOTIONS, IMAGE_SIZE, TASK_CLASSES, TRAIN_SPLIT
from ferpipe.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from ferpipe.optim import adam
from ferpipe.speed import BF16_FLAGS, Speed, cpu_flags, fast_bf16

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared/data/fer2013/fer2013.zip"
PARAMS = ROOT / "params.yaml"  # our loop's speed settings default to the project's
SEED = 42
CLASSES = TASK_CLASSES["multiclass"]  # angry, fear, happy, sad: also ImageFolder's sorted order
CLASS_WEIGHTS = [2.0, 1.5, 1.0, 1.3]  # params.yaml train.class_weights.multiclass
BATCH_SIZE = 64  # params.yaml train.batch_size
LR, WEIGHT_DECAY = 1e-3, 1e-4  # params.yaml zoo.cnn and zoo.resnet lr and weight_decay
RESNET_SIZE = 224  # params.yaml zoo.resnet.args.image_size
# Training, validation and test images of each task under the protocol (holdout 20 %, test =
# PublicTest + PrivateTest).
GRID_IMAGES = {"multiclass": (12_796, 3_199, 5_003), "binary": (6_400, 1_600, 3_021)}
EPOCH_IMAGES = GRID_IMAGES["multiclass"][0]  # training images of one multiclass epoch
TRUNK_IMAGES = sum(GRID_IMAGES["multiclass"][:2])  # train + validation: init@resnet's features
RESNET_EPOCHS = 5  # params.yaml zoo.resnet.epochs: the trunk's one-off cost is shared by them
KINDS = ("cnn", "resnet")  # the seed-000 zoo entries of params.yaml
# Their architectures and arguments (params.yaml, with weights none: no ImageNet weights here).
ENTRIES = {
    "cnn": ("study_cnn", {}),
    "resnet": ("resnet18", {"weights": "none", "image_size": RESNET_SIZE}),
}
CPU = torch.device("cpu")
ISA_FLAGS = ("avx2", "avx512f", *BF16_FLAGS, "amx_tile")  # what decides the speed of each precision
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}

# GFLOP per training image (forward + backward; Adam's elementwise update is negligible), with
# 1 FLOP = 1 multiply or add, so a multiply-accumulate is 2 FLOP.
# - CNN at 48x48: forward ~0.50 GFLOP (convs 32->64 and 64->128 at full 48x48 resolution, plus
#   the 73,728->512 linear layer); backward costs ~2x forward (input and weight gradients): x3.
# - ResNet18 at 224, layer4 + fc trainable: the whole net's forward is 1.82 G multiply-adds
#   (torchvision's "1.81 GFLOPS" counts multiply-adds) = 3.63 GFLOP; backward runs through
#   layer4 + fc only (weight gradients of every layer4 conv, input gradients of all but its first
#   conv and downsample, whose input is frozen) ~1.51 GFLOP: 5.14 in all.
# FlopCounterMode recounts both on one batch at run time; the counted figure is used when it works.
GFLOP_PER_IMAGE = {"cnn": 1.50, "resnet": 5.14}


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: full by default, tiny with --quick."""

    images: int  # images per timed measurement
    warmup: int  # images trained on before timing, so one-time allocation is not timed
    matmul_size: int
    matmul_repeats: int


@dataclass(frozen=True)
class Data:
    """The same images twice: uint8 tensors for our step, JPEGs in ImageFolder layout for seed's."""

    pixels: torch.Tensor  # uint8 (N, 48, 48)
    labels: torch.Tensor  # int64 class index in CLASSES order
    image_root: Path  # <root>/<class>/<file>.jpg
    description: str


@dataclass(frozen=True)
class Timing:
    """One timed measurement."""

    images: int
    seconds: float

    @property
    def ips(self) -> float:
        return self.images / self.seconds

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.images

    @property
    def epoch_seconds(self) -> float:
        """Estimated seconds for a full epoch, extrapolated from the measured per-image time."""
        return EPOCH_IMAGES * self.seconds / self.images


# --- peak ---------------------------------------------------------------------------------------


def matmul_gflops(size: int, repeats: int, dtype: torch.dtype) -> float:
    """Best GFLOP/s of `torch.mm` on size x size matrices of `dtype`: the practical peak."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm-up: thread pool start, allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# --- data ---------------------------------------------------------------------------------------


def load_data(archive: Path, count: int, folder: Path) -> Data:
    """`count` training images of the four classes, in memory and as JPEGs under `folder`."""
    if archive.is_file():
        images = pick(sources.read_source(str(archive)).images, count)
        extract_jpegs(archive, images, folder)
        description = f"real archive {archive} ({len(images)} train/ images)"
    else:
        write_synthetic(count, folder)
        images = pick(sources.read_source(str(folder)).images, count)
        description = (
            f"SYNTHETIC stand-in: {archive} not found, so {len(images)} random 48x48 JPEGs "
            "(timings are valid, losses are not)"
        )
    labels = [CLASSES.index(EMOTIONS[code]) for code in images.labels]
    return Data(
        torch.from_numpy(images.pixels.copy()),
        torch.tensor(labels, dtype=torch.int64),
        folder / "train",
        description,
    )


def pick(images: Images, count: int) -> Images:
    """A seeded random subset of the Training split restricted to the four task classes."""
    codes = [EMOTIONS.index(name) for name in CLASSES]
    eligible = np.flatnonzero((images.splits == TRAIN_SPLIT) & np.isin(images.labels, codes))
    rng = np.random.default_rng(SEED)
    return images.subset(np.sort(rng.choice(eligible, min(count, len(eligible)), replace=False)))


def extract_jpegs(archive: Path, images: Images, folder: Path) -> None:
    """Write exactly the picked images' JPEG files into `folder/train/<class>/`."""
    wanted = set(zip(images.labels.tolist(), images.ids.tolist(), strict=True))
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            path = PurePosixPath(name)
            emotion = path.parent.name
            in_train = path.parent.parent.name == "train" and emotion in EMOTIONS
            if in_train and (EMOTIONS.index(emotion), path.stem) in wanted:
                target = folder / "train" / emotion / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))


def write_synthetic(count: int, folder: Path) -> None:
    """Random uint8 48x48 JPEGs in the archive's layout (`train/<class>/Training_<n>.jpg`)."""
    rng = np.random.default_rng(SEED)
    for n in range(count):
        target = folder / "train" / CLASSES[n % len(CLASSES)] / f"Training_{n}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        Image.fromarray(pixels).save(target, quality=95)


# --- models and FLOPs ---------------------------------------------------------------------------


def make_trainer(
    kind: str, speed: Speed | None = None
) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """Model, loss and optimizer from a fixed seed: as stages/train.py builds them with `speed`
    (laid out as it says, fused Adam), or seed-style without it (NCHW, plain Adam)."""
    torch.manual_seed(SEED)
    arch, args = ENTRIES[kind]
    model = models.build(arch, len(CLASSES), **args)
    loss_fn = losses.make_loss("ce", CLASS_WEIGHTS, 2.0)
    trainable = [w for w in model.parameters() if w.requires_grad]
    if speed is None:
        return model, loss_fn, torch.optim.Adam(trainable, lr=LR, weight_decay=WEIGHT_DECAY)
    return speed.layout(model), loss_fn, adam(trainable, LR, WEIGHT_DECAY)


def counted_gflop(kind: str, data: Data) -> float | None:
    """GFLOP per image counted by FlopCounterMode on one batch (forward + backward), or None."""
    model, loss_fn, _ = make_trainer(kind)
    model.train()
    x, y = data.pixels[:BATCH_SIZE], data.labels[:BATCH_SIZE]
    try:
        with FlopCounterMode(display=False) as counter:
            loss_fn(model(model.preprocess(x)), y).backward()
    except Exception as exc:  # an op the counter does not know: fall back to the constant
        print(f"  FlopCounterMode failed for {kind} ({type(exc).__name__}: {exc})")
        return None
    return counter.get_total_flops() / len(x) / 1e9


# --- the two training loops ---------------------------------------------------------------------

# A step trains on the first `n` images of its data and returns how many it trained on.
Step = Callable[[int], int]


def measure(step: Step, images: int, warmup: int) -> Timing:
    """Time `step` on `images` images after an untimed warm-up on `warmup` images."""
    step(warmup)
    start = time.perf_counter()
    done = step(images)
    return Timing(done, time.perf_counter() - start)


def ours_step(kind: str, data: Data, speed: Speed) -> Step:
    """The pipeline's own training step: `train_one_epoch` on in-memory uint8 tensors."""
    model, loss_fn, optimizer = make_trainer(kind, speed)
    model = speed.model(model, CPU)  # under bf16 autocast when speed.precision is bf16
    generator = torch.Generator().manual_seed(SEED)

    def step(n: int) -> int:
        pixels, labels = data.pixels[:n], data.labels[:n]
        plan = training.Plan(epochs=1, batch_size=BATCH_SIZE, seed=SEED, name=f"ours {kind}")
        training.train_one_epoch(
            model, loss_fn, optimizer, (pixels, labels), plan, 1, generator, CPU
        )
        return len(pixels)

    return step


def pipeline_resnet_epoch(data: Data, settings: Settings, speed: Speed) -> float:
    """Estimated seconds of one full ResNet epoch as the pipeline runs it (freeze_bn):
    the init@resnet stage's features, computed once and shared by RESNET_EPOCHS epochs, plus
    training layer4 + fc on them (`models.CachedFeatures`)."""
    model, loss_fn, optimizer = make_trainer("resnet", speed)
    trunk = speed.features(model, CPU)
    training.predict(model, data.pixels[: settings.warmup], BATCH_SIZE, CPU, trunk)
    n = settings.images
    start = time.perf_counter()
    features = training.predict(model, data.pixels[:n], BATCH_SIZE, CPU, trunk)
    trunk_per_image = (time.perf_counter() - start) / n
    head = speed.model(models.CachedFeatures(model), CPU)
    generator = torch.Generator().manual_seed(SEED)

    def step(k: int) -> int:
        plan = training.Plan(epochs=1, batch_size=BATCH_SIZE, seed=SEED, name="head")
        training.train_one_epoch(
            head, loss_fn, optimizer, (features[:k], data.labels[:k]), plan, 1, generator, CPU
        )
        return k

    head_timing = measure(step, n, settings.warmup)
    print(
        f"  resnet: pipeline {speed.precision} trunk {1 / trunk_per_image:.1f} img/s once, "
        f"head {head_timing.ips:.1f} img/s per epoch"
    )
    return head_timing.epoch_seconds + TRUNK_IMAGES * trunk_per_image / RESNET_EPOCHS


def seed_transform(kind: str) -> transforms.Compose:
    """Seed 000's per-sample PIL transforms: grayscale, resize, to tensor, normalise."""
    channels, size, mean, std = (
        (1, IMAGE_SIZE, (0.5,), (0.5,))
        if kind == "cnn"
        else (3, RESNET_SIZE, IMAGENET_MEAN, IMAGENET_STD)
    )
    return transforms.Compose(
        [
            transforms.Grayscale(channels),
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def seed_loader(kind: str, data: Data, shuffle: bool) -> DataLoader:
    """Seed 000's data path: `ImageFolder` over the JPEGs with its per-sample transforms, one
    process (`num_workers=0`)."""
    folder = datasets.ImageFolder(str(data.image_root), transform=seed_transform(kind))
    if tuple(folder.classes) != CLASSES:  # a class missing from a tiny subset shifts labels
        raise SystemExit(f"need images of every class {CLASSES}, found {folder.classes}")
    return DataLoader(folder, batch_size=BATCH_SIZE, shuffle=shuffle, num_workers=0)


def seed_style_step(kind: str, data: Data) -> Step:
    """Seed 000's way: ImageFolder + DataLoader decoding JPEGs per sample, a plain eager loop.

    The same model classes do the math: `StudyCNN.forward` on the already-normalised tensor, and
    ResNet's `model.net` on the transformed 224x224 tensor (the frozen trunk recomputed)."""
    model, loss_fn, optimizer = make_trainer(kind)
    net = model.net if kind == "resnet" else model
    loader = seed_loader(kind, data, shuffle=True)

    def step(n: int) -> int:
        net.train()
        seen, correct, total_loss = 0, 0, 0.0
        for x, y in loader:
            optimizer.zero_grad()
            logits = net(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(y)  # seed 000's per-batch bookkeeping
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            if seen >= n:
                break
        return seen

    return step


def seed_style_eval(kind: str, data: Data) -> Step:
    """Seed 000's `validate_model`, also its test pass: the same JPEG loader, eval mode and no
    gradients, counting correct predictions."""
    model, _, _ = make_trainer(kind)
    net = model.net if kind == "resnet" else model
    loader = seed_loader(kind, data, shuffle=False)

    @torch.no_grad()
    def step(n: int) -> int:
        net.eval()
        seen, correct = 0, 0
        for x, y in loader:
            correct += (net(x).argmax(1) == y).sum().item()
            seen += len(y)
            if seen >= n:
                break
        return seen

    return step


# --- the seed-000 grid --------------------------------------------------------------------------

# The grid's runs per task (GRID_IMAGES) and loss: (model, epochs).
GRID_RUNS = (("cnn", 10), ("resnet", 5), ("resnet", 10))
GRID_LOSSES = 2  # cross-entropy and focal: the same work


def seed_grid_seconds(results: dict[str, ModelResult], validate: bool = True) -> float:
    """Seconds seed 000's loop needs for its 12 runs at the seed-style per-image times: each
    epoch trains, then validates (validate_model), and each run ends with a test pass; with
    `validate` false, the training epochs alone."""
    total = 0.0
    for train, val, test in GRID_IMAGES.values():
        for kind, epochs in GRID_RUNS:
            r = results[kind]
            per_epoch = train * r.seed.seconds_per_image
            checks = epochs * val + test if validate else 0
            total += GRID_LOSSES * (epochs * per_epoch + checks * r.seed_eval.seconds_per_image)
    return total


# --- report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelResult:
    """Both loops' timings for one model and the FLOPs per image used for its % of peak. `ours`
    and `pipeline_epoch_seconds` (ResNet with the cached trunk) hold each measured precision;
    `seed` is the seed-style training step, `seed_eval` its validation and test pass."""

    kind: str
    gflop: float
    ours: dict[str, Timing]
    seed: Timing
    seed_eval: Timing
    pipeline_epoch_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def peak_percent(self, timing: Timing, peak: float) -> float:
        return 100 * timing.ips * self.gflop / peak

    def speedup(self, precision: str = "fp32") -> float:
        """Seed-style epoch seconds over ours (both extrapolated to EPOCH_IMAGES); for ResNet,
        ours is the pipeline's cached-trunk epoch."""
        ours = self.pipeline_epoch_seconds.get(precision) or self.ours[precision].epoch_seconds
        return self.seed.epoch_seconds / ours

    def bf16_ratio(self) -> float:
        """The bf16 step's images/s over the fp32 step's (0 when bf16 was not measured)."""
        return self.ours["bf16"].ips / self.ours["fp32"].ips if "bf16" in self.ours else 0.0


def benchmark_model(
    kind: str, data: Data, settings: Settings, speeds: list[Speed], seed: tuple[Timing, Timing]
) -> ModelResult:
    """FLOPs per image and our loop's timing in each of `speeds`, beside the seed-style loop's
    (training, evaluation)."""
    counted = counted_gflop(kind, data)
    constant = GFLOP_PER_IMAGE[kind]
    counted_text = f"{counted:.3f}" if counted is not None else "n/a"
    print(f"  {kind}: GFLOP per training image: counted {counted_text}, constant {constant:.2f}")
    result = ModelResult(kind, counted if counted is not None else constant, {}, *seed)
    for speed in speeds:
        ours = measure(ours_step(kind, data, speed), settings.images, settings.warmup)
        result.ours[speed.precision] = ours
        print(f"  {kind}: ours {speed.precision} {ours.images} images in {ours.seconds:.1f} s")
        if kind == "resnet":
            epoch = pipeline_resnet_epoch(data, settings, speed)
            result.pipeline_epoch_seconds[speed.precision] = epoch
    return result


def benchmark(data: Data, settings: Settings, speeds: list[Speed]) -> dict[str, ModelResult]:
    """The seed-style loops first, with the allocator as any Python process starts; then ours,
    after `speeds[0]` has configured it (a process-wide change that cannot be undone)."""
    seeds = {}
    for kind in KINDS:
        train = measure(seed_style_step(kind, data), settings.images, settings.warmup)
        evaluate = measure(seed_style_eval(kind, data), settings.images, settings.warmup)
        seeds[kind] = train, evaluate
        print(
            f"  {kind}: seed-style {train.images} images in {train.seconds:.1f} s, "
            f"evaluated in {evaluate.seconds:.1f} s"
        )
    reusing = speeds[0].configure_allocator()
    print(f"  allocator: freed memory {'reused' if reusing else 'handled as by default'}")
    return {kind: benchmark_model(kind, data, settings, speeds, seeds[kind]) for kind in KINDS}


def print_table(results: list[ModelResult], peaks: dict[str, float]) -> None:
    """One row per model, loop and precision (% of that precision's peak), then the ratios."""
    header = (
        f"{'model':<7} {'loop':<11} {'images':>6} {'seconds':>8} {'img/s':>7} "
        f"{'GFLOP/img':>9} {'GFLOP/s':>8} {'% peak':>7} {'epoch s (est.)':>15}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        rows = [(f"ours {p}", t, peaks[p]) for p, t in r.ours.items()]
        for loop, t, peak in [*rows, ("seed-style", r.seed, peaks["fp32"])]:
            print(
                f"{r.kind:<7} {loop:<11} {t.images:>6} {t.seconds:>8.1f} {t.ips:>7.1f} "
                f"{r.gflop:>9.2f} {t.ips * r.gflop:>8.1f} {r.peak_percent(t, peak):>7.1f} "
                f"{t.epoch_seconds:>15.0f}"
            )
    print("-" * len(header))
    for r in results:
        for precision, seconds in r.pipeline_epoch_seconds.items():
            print(
                f"{r.kind}: pipeline {precision} epoch with the cached trunk (trunk shared by "
                f"{RESNET_EPOCHS} epochs): {seconds:.0f} s (est.)"
            )
        for precision in r.ours:
            print(
                f"{r.kind}: ours {precision} is {r.speedup(precision):.2f}x seed-style per epoch "
                f"(estimated for {EPOCH_IMAGES:,} images from {r.ours[precision].images}/"
                f"{r.seed.images} measured)"
            )
        if r.bf16_ratio():
            print(f"{r.kind}: bf16 step {r.bf16_ratio():.2f}x the fp32 step")
        print(f"{r.kind}: seed-style evaluation (validation, test) {r.seed_eval.ips:.1f} img/s")
    by_kind = {r.kind: r for r in results}
    print(
        f"seed-000 grid, seed-style loop (12 runs, est.): {seed_grid_seconds(by_kind):,.0f} s "
        f"with each epoch's validation and each run's test pass; training epochs alone "
        f"{seed_grid_seconds(by_kind, validate=False):,.0f} s"
    )


def result_line(results: dict[str, ModelResult], peak: float) -> str:
    """The machine-readable summary, always the last line of output; bf16 figures 0 where
    bf16 was not measured."""
    cnn, resnet = results["cnn"], results["resnet"]
    bf16_ips = {k: r.ours["bf16"].ips if "bf16" in r.ours else 0.0 for k, r in results.items()}
    bf16_epoch = resnet.speedup("bf16") if "bf16" in resnet.ours else 0.0
    return (
        f"RESULT cnn_ips={cnn.ours['fp32'].ips:.1f} "
        f"cnn_peak={cnn.peak_percent(cnn.ours['fp32'], peak):.1f} "
        f"resnet_ips={resnet.ours['fp32'].ips:.1f} "
        f"resnet_peak={resnet.peak_percent(resnet.ours['fp32'], peak):.1f} "
        f"cnn_speedup={cnn.speedup():.2f} resnet_epoch_speedup={resnet.speedup():.2f} "
        f"cnn_bf16_ips={bf16_ips['cnn']:.1f} resnet_bf16_ips={bf16_ips['resnet']:.1f} "
        f"cnn_bf16_ratio={cnn.bf16_ratio():.2f} resnet_bf16_ratio={resnet.bf16_ratio():.2f} "
        f"resnet_bf16_epoch_speedup={bf16_epoch:.2f} "
        f"seed_grid_s={seed_grid_seconds(results):.0f} "
        f"seed_grid_train_s={seed_grid_seconds(results, validate=False):.0f}"
    )


def load_text() -> str:
    """The 1-minute load average, because other work on the machine depresses every number."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=None, help="images per measurement (default 512; 64 quick)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: torch's default)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny sizes")
    defaults = Speed.from_params(params.flatten(params.read(PARAMS)))
    for flag in ("channels-last", "compile", "reuse-memory"):
        default = getattr(defaults, flag.replace("-", "_"))
        parser.add_argument(
            f"--{flag}",
            action=argparse.BooleanOptionalAction,
            default=default,
            help=f"our loop's train.{flag.replace('-', '_')} (default: params.yaml's, {default})",
        )
    parser.add_argument(
        "--archive", type=Path, default=ARCHIVE, help="FER2013 zip (absent: synthetic stand-in)"
    )
    return parser.parse_args()


def settings_for(args: argparse.Namespace) -> Settings:
    """Default sizes fit in 10 minutes on an idle 2-core CPU (ResNet trains at ~20 img/s).

    The matmul stays 2048x2048 even when quick: smaller ones fall far short of the peak."""
    if args.quick:
        images = args.images or BATCH_SIZE
        return Settings(images, min(BATCH_SIZE, images), 2048, 3)
    images = args.images or 512
    return Settings(images, min(2 * BATCH_SIZE, images), 2048, 10)


def main() -> None:
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines interleave with tqdm's stderr
    settings = settings_for(args)
    speed = Speed(args.channels_last, args.compile, args.reuse_memory)
    runinfo.setup(args.threads or torch.get_num_threads(), SEED)  # as the train stage does
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {load_text()}; ours: {speed}"
    )
    flags = [f for f in ISA_FLAGS if f in cpu_flags()]
    fast = fast_bf16(CPU)
    print(
        f"CPU: {runinfo.cpu_model()}; flags: {' '.join(flags) or 'none of ' + ' '.join(ISA_FLAGS)}"
    )
    peaks = {
        name: matmul_gflops(settings.matmul_size, settings.matmul_repeats, dtype)
        for name, dtype in PRECISIONS.items()
    }
    for name, peak in peaks.items():
        print(
            f"matmul peak {name}: {peak:.1f} GFLOP/s (torch.mm {settings.matmul_size}x"
            f"{settings.matmul_size}, best of {settings.matmul_repeats})"
        )
    speeds = [speed]
    if fast:
        speeds.append(dataclasses.replace(speed, precision="bf16"))
    else:
        print(f"bf16 steps not measured: no {' or '.join(BF16_FLAGS)}, so bf16 is emulated here")
    with tempfile.TemporaryDirectory(prefix="ferpipe-speed-") as tmp:
        data = load_data(args.archive, settings.images, Path(tmp))
        print(f"data: {data.description}")
        results = benchmark(data, settings, speeds)
    print()
    print_table(list(results.values()), peaks)
    print(f"load average at the end: {load_text()}")
    print(result_line(results, peaks["fp32"]))


if __name__ == "__main__":
    main()
