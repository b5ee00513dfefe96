"""Where each stage reads and writes, relative to the project root (mirrors dvc.yaml).

Per-model files are named after the zoo entry (`cnn`, `resnet`, `seed004`, ...)."""

from pathlib import Path

DATA = Path("data")
NORMALISED_DIR = DATA / "normalised"
NORMALISED = NORMALISED_DIR / "dataset.npz"
MANIFEST = NORMALISED_DIR / "manifest.json"
BALANCED = DATA / "balanced.npz"
DENOISED = DATA / "denoised.npz"
SPLIT_DIR = DATA / "split"
FEATURES = DATA / "features"
METRICS = Path("metrics")
QUALITY = METRICS / "data_quality.json"
MODELS = Path("models")
PLOTS = Path("plots")


def split_file(part: str) -> Path:
    """train, val or test images of the task."""
    return SPLIT_DIR / f"{part}.npz"


def init_file(entry: str) -> Path:
    """The entry's initial model, its pretrained weights resolved once (init stage)."""
    return MODELS / "init" / f"{entry}.pt"


def features_dir(entry: str) -> Path:
    """Cached frozen features of the entry's train, val and test images (init stage)."""
    return FEATURES / entry


def features_file(entry: str, part: str) -> Path:
    """Frozen features of the train, val or test split, float32 .npy."""
    return features_dir(entry) / f"{part}.npy"


def model_file(entry: str) -> Path:
    return MODELS / f"{entry}.pt"


def training_record(entry: str) -> Path:
    """Wall time, images/s, weights and environment of a training run (varies run to run)."""
    return METRICS / f"{entry}_training.json"


def metrics_file(entry: str) -> Path:
    """Headline test metrics on the protocol's test split (the DVC metric)."""
    return METRICS / f"{entry}.json"


def detail_file(entry: str) -> Path:
    """All test metrics on PublicTest, PrivateTest and both, the reported split and weights."""
    return METRICS / f"{entry}_detail.json"


def history_file(entry: str) -> Path:
    return PLOTS / entry / "history.csv"


def predictions_file(entry: str) -> Path:
    return PLOTS / entry / "predictions.csv"


def confusion_png(entry: str) -> Path:
    return PLOTS / entry / "confusion.png"


def curves_png(entry: str) -> Path:
    return PLOTS / entry / "curves.png"


def augmented_png(entry: str) -> Path:
    return PLOTS / entry / "augmented.png"


def crossval_file(entry: str) -> Path:
    return METRICS / f"{entry}_crossval.json"
