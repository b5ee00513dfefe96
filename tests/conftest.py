"""Shared fixtures: small synthetic datasets, faces of the embedded sample, the real archive."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferpipe import sources
from ferpipe.dataset import Images
from ferpipe.labels import EMOTIONS, SPLITS

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "fer2013" / "fer2013.zip"
SAMPLE = ROOT / "data" / "sample" / "fer2013_sample.zip"


def sample_faces(*names: str) -> np.ndarray:
    """Faces of the embedded FER2013 sample by file name, uint8 (n, 48, 48)."""
    with zipfile.ZipFile(SAMPLE) as z:
        return np.stack([np.array(Image.open(io.BytesIO(z.read(n))).convert("L")) for n in names])


def synthetic(per_class: int = 4, seed: int = 0) -> Images:
    """`per_class` random images of every emotion in every split, ids like the Kaggle files."""
    rng = np.random.default_rng(seed)
    labels, splits, ids = [], [], []
    for s, split in enumerate(SPLITS):
        for e in range(len(EMOTIONS)):
            for i in range(per_class):
                labels.append(e)
                splits.append(s)
                ids.append(f"{split}_{e}{i:04d}")
    n = len(labels)
    pixels = rng.integers(0, 256, size=(n, 48, 48), dtype=np.uint8)
    return Images(pixels, np.array(labels), np.array(splits), np.array(ids)).sorted()


@pytest.fixture
def images() -> Images:
    return synthetic()


@pytest.fixture(scope="session")
def decoded_archive() -> sources.Decoded:
    """The real archive read once for the tests that check its contents (about 5 s a read)."""
    if not ARCHIVE.is_file():
        pytest.skip(f"the real FER2013 archive is absent ({ARCHIVE})")
    return sources.read_source(str(ARCHIVE))
