"""Build the embedded sample (`data/sample/`) from a full Kaggle FER2013 archive.

    python -m ferpipe.sample ../shared/data/fer2013/fer2013.zip data/sample/fer2013_sample.zip

A seeded, stratified draw of the original JPEG files (bytes copied, never re-encoded): the same
number of images of every emotion from Training, PublicTest and PrivateTest (all of an emotion
that has fewer: disgust has 436 training images).
"""

from __future__ import annotations

import argparse
import zipfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np

from ferpipe.dataset import atomic_path
from ferpipe.errors import exits_cleanly
from ferpipe.labels import SPLITS

# A fixed timestamp makes the sample zip byte-identical on every build.
ZIP_DATE = (2013, 2, 15, 0, 0, 0)
# Training images per emotion: the largest draw under about 10 MB (700 would be 10.4 MB), since
# the default CNN's validation accuracy grows with it (README, On the embedded sample).
TRAIN_PER_EMOTION = 600
TEST_PER_EMOTION = 40  # per emotion in each of PublicTest and PrivateTest


def draw(names: list[str], per_split: dict[str, int], seed: int) -> list[str]:
    """Pick `per_split[split]` members per (split, emotion), split read from the file name."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in names:
        path = PurePosixPath(name)
        split = path.stem.split("_", 1)[0]
        if split in SPLITS and len(path.parts) >= 3:
            groups[(split, path.parts[-2])].append(name)
    rng = np.random.default_rng(seed)
    chosen = []
    for key in sorted(groups):
        members = sorted(groups[key])
        n = min(per_split[key[0]], len(members))
        chosen += [members[i] for i in np.sort(rng.choice(len(members), n, replace=False))]
    return sorted(chosen)


def build(archive: Path, out: Path, train: int, test: int, seed: int) -> int:
    """Write the sample zip; returns the number of images."""
    per_split = {"Training": train, "PublicTest": test, "PrivateTest": test}
    with zipfile.ZipFile(archive) as src:
        chosen = draw(src.namelist(), per_split, seed)
        with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
            for name in chosen:
                dst.writestr(zipfile.ZipInfo(name, ZIP_DATE), src.read(name))
    return len(chosen)


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("archive", type=Path, help="full Kaggle FER2013 zip")
    parser.add_argument("out", type=Path, help="sample zip to write")
    parser.add_argument(
        "--train", type=int, default=TRAIN_PER_EMOTION, help="Training images per emotion"
    )
    parser.add_argument(
        "--test", type=int, default=TEST_PER_EMOTION, help="images per emotion in each test split"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    args = parser.parse_args()
    n = build(args.archive, args.out, args.train, args.test, args.seed)
    print(f"wrote {n} images to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
