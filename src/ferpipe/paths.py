"""Where each stage reads and writes, relative to the project root (mirrors dvc.yaml)."""

from pathlib import Path

DATA = Path("data")
NORMALISED_DIR = DATA / "normalised"
NORMALISED = NORMALISED_DIR / "dataset.npz"
MANIFEST = NORMALISED_DIR / "manifest.json"
BALANCED = DATA / "balanced.npz"
DENOISED = DATA / "denoised.npz"
SPLIT_DIR = DATA / "split"
METRICS = Path("metrics")
QUALITY = METRICS / "data_quality.json"
MODELS = Path("models")
PLOTS = Path("plots")


def split_file(part: str) -> Path:
    """train, val or test images of the task."""
    return SPLIT_DIR / f"{part}.npz"


def model_file(model: str) -> Path:
    return MODELS / f"{model}.pt"


def training_record(model: str) -> Path:
    """Wall time, images/s, weights and environment of a training run (varies run to run)."""
    return METRICS / f"{model}_training.json"


def metrics_file(model: str) -> Path:
    """Test metrics (identical across reruns with the same params)."""
    return METRICS / f"{model}.json"


def history_file(model: str) -> Path:
    return PLOTS / model / "history.csv"


def predictions_file(model: str) -> Path:
    return PLOTS / model / "predictions.csv"


def confusion_png(model: str) -> Path:
    return PLOTS / model / "confusion.png"


def curves_png(model: str) -> Path:
    return PLOTS / model / "curves.png"


TRUNK_DIR = DATA / "trunk"
RESNET_INIT = MODELS / "resnet_init.pt"


def trunk_file(part: str) -> Path:
    """Frozen-trunk (conv1..layer3) features of the train or val split, float32 .npy."""
    return TRUNK_DIR / f"{part}.npy"
