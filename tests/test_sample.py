"""The embedded sample: a seeded, stratified draw that `python -m ferpipe.sample` rebuilds."""

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import PurePosixPath

import pytest

from ferpipe import sample

from .conftest import ARCHIVE, SAMPLE


def kaggle_names(per_group: int) -> list[str]:
    """Member names as in the Kaggle zip: train/<emotion>/Training_<n>.jpg, test/... ."""
    names = []
    for emotion in ("angry", "disgust", "happy"):
        names += [f"train/{emotion}/Training_{emotion}{i}.jpg" for i in range(per_group)]
        for split in ("PublicTest", "PrivateTest"):
            names += [f"test/{emotion}/{split}_{emotion}{i}.jpg" for i in range(per_group)]
    return names + ["README.txt", "train/"]


def groups(names: list[str]) -> Counter:
    return Counter((PurePosixPath(n).stem.split("_")[0], PurePosixPath(n).parts[1]) for n in names)


def test_draw_takes_the_asked_count_per_split_and_emotion_and_all_of_a_smaller_one():
    names = kaggle_names(10)
    names = [n for n in names if not (n.startswith("train/disgust/") and n[-5] in "56789")]
    chosen = sample.draw(names, {"Training": 6, "PublicTest": 2, "PrivateTest": 3}, seed=0)
    counts = groups(chosen)
    assert counts[("Training", "angry")] == 6 and counts[("Training", "disgust")] == 5
    assert counts[("PublicTest", "happy")] == 2 and counts[("PrivateTest", "happy")] == 3
    assert sum(counts.values()) == len(chosen) == 6 + 5 + 6 + 3 * (2 + 3)
    assert chosen == sorted(chosen) and set(chosen) <= set(names)


def test_draw_is_seeded():
    names, per_split = kaggle_names(50), {"Training": 5, "PublicTest": 5, "PrivateTest": 5}
    assert sample.draw(names, per_split, seed=3) == sample.draw(names[::-1], per_split, seed=3)
    assert sample.draw(names, per_split, seed=3) != sample.draw(names, per_split, seed=4)


def test_the_committed_sample_is_what_the_command_builds(tmp_path):
    if not ARCHIVE.is_file():
        pytest.skip(f"the real FER2013 archive is absent ({ARCHIVE})")
    out = tmp_path / "sample.zip"
    done = subprocess.run(
        [sys.executable, "-m", "ferpipe.sample", str(ARCHIVE), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "wrote 4596 images" in done.stdout  # 600 x 6 emotions + disgust's 436 + 7 x 80 test
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (out, SAMPLE)]
    assert digest[0] == digest[1]
