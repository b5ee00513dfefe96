"""The normalised dataset: uint8 48x48 images with emotion, split and file id, in one .npz file.

Every source format is decoded once into this form; later stages only read arrays from it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferpipe.errors import FerError
from ferpipe.labels import EMOTIONS, IMAGE_SIZE, SPLITS


@dataclass(frozen=True)
class Images:
    """A set of face images in memory, with one entry per image in each array."""

    pixels: np.ndarray  # uint8, (N, 48, 48)
    labels: np.ndarray  # int64, emotion code (EMOTIONS) or task class index
    splits: np.ndarray  # int64, index into SPLITS
    ids: np.ndarray  # unicode, e.g. "Training_10118481"

    def __post_init__(self) -> None:
        n = len(self.pixels)
        if self.pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or self.pixels.dtype != np.uint8:
            raise ValueError(
                f"pixels must be uint8 (N, 48, 48), got {self.pixels.dtype} {self.pixels.shape}"
            )
        if not len(self.labels) == len(self.splits) == len(self.ids) == n:
            raise ValueError("pixels, labels, splits and ids must have the same length")

    def __len__(self) -> int:
        return len(self.pixels)

    def subset(self, index: np.ndarray) -> Images:
        """The images at `index` (an index array or boolean mask), in that order."""
        return Images(self.pixels[index], self.labels[index], self.splits[index], self.ids[index])

    def sorted(self) -> Images:
        """Canonical order (split, then id), so every source format yields the same bytes."""
        order = np.lexsort((self.ids, self.splits))
        return self.subset(order)


def duplicate_groups(pixels: np.ndarray) -> np.ndarray:
    """Group id per image: images with identical pixels share one id."""
    flat = np.ascontiguousarray(pixels.reshape(len(pixels), -1))
    rows = flat.view(np.dtype((np.void, flat.shape[1]))).ravel()
    _, group = np.unique(rows, return_inverse=True)
    return group.ravel()


def save(images: Images, path: Path) -> None:
    """Write `images` to an uncompressed .npz atomically (loads in well under a second)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            pixels=images.pixels,
            labels=images.labels.astype(np.int64),
            splits=images.splits.astype(np.int64),
            ids=images.ids.astype(str),
        )


def load(path: Path) -> Images:
    """Read a file written by `save`."""
    with _opened(path) as z:
        return Images(z["pixels"], z["labels"], z["splits"], z["ids"])


def load_labels(path: Path) -> np.ndarray:
    """The labels of a file written by `save`, without reading its pixels."""
    with _opened(path) as z:
        return z["labels"]


@contextmanager
def _opened(path: Path) -> Iterator[np.lib.npyio.NpzFile]:
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except FileNotFoundError:
        raise FerError(f"{path}: not found; run the stage that writes it (dvc repro)") from None


def counts(images: Images, names: tuple[str, ...] = EMOTIONS) -> dict[str, dict[str, int]]:
    """Image counts per split and label name, for manifests and reports."""
    table: dict[str, dict[str, int]] = {}
    for s, split in enumerate(SPLITS):
        in_split = images.labels[images.splits == s]
        if len(in_split):
            table[split] = {name: int((in_split == i).sum()) for i, name in enumerate(names)}
    return table


def write_json(obj: object, path: Path) -> None:
    """Write JSON atomically with stable formatting (sorted keys) so reruns are byte-identical."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# Files atomic_path has put in place in this process: a stage that fails or is interrupted
# removes them (discard_written), so it leaves no half-made set of outputs.
_written: list[Path] = []


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds,
    with the permissions the umask gives (mkstemp's temporary files are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _written.append(path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def writes_so_far() -> int:
    """A mark for discard_written: how many files atomic_path has put in place so far."""
    return len(_written)


def discard_written(since: int) -> None:
    """Remove the files atomic_path put in place after the mark `since`."""
    for path in dict.fromkeys(_written[since:]):
        path.unlink(missing_ok=True)
    del _written[since:]
