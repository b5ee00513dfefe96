"""Write one tiny FER2013 dataset in the forms users download it in (for test_sources.py).

Kaggle forms hold lossless PNGs named `<Usage>_<n>.png`, the id the CSV reader gives row `n`
of that Usage, so every form decodes to the same images, ids and bytes. Bombs (for
test_bombs.py) are small files that decompress to GiBs, written without ever holding them.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ferpipe.dataset import Images
from ferpipe.labels import CSV_EMOTIONS, EMOTIONS, SPLITS


@dataclass(frozen=True)
class Face:
    """One image of the tiny dataset."""

    usage: str  # Training, PublicTest or PrivateTest
    n: int  # row number within its usage in the CSV
    emotion: str
    pixels: np.ndarray  # uint8 (48, 48)

    @property
    def id(self) -> str:
        return f"{self.usage}_{self.n}"

    @property
    def member(self) -> str:
        """Path in the Kaggle layout."""
        folder = "train" if self.usage == "Training" else "test"
        return f"{folder}/{self.emotion}/{self.id}.png"


def tiny_faces(per_emotion: int = 3, seed: int = 0) -> list[Face]:
    """`per_emotion` random faces per emotion and split, seeded."""
    rng = np.random.default_rng(seed)
    faces = []
    for usage in SPLITS:
        emotions = [e for e in EMOTIONS for _ in range(per_emotion)]
        for n, emotion in enumerate(emotions):
            faces.append(Face(usage, n, emotion, rng.integers(0, 256, (48, 48), dtype=np.uint8)))
    return faces


def expected_images(faces: list[Face]) -> Images:
    """What every reader must produce for `faces`."""
    return Images(
        np.stack([f.pixels for f in faces]),
        np.array([EMOTIONS.index(f.emotion) for f in faces]),
        np.array([SPLITS.index(f.usage) for f in faces]),
        np.array([f.id for f in faces]),
    ).sorted()


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    """Lossless image bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def kaggle_members(faces: list[Face], prefix: str = "") -> dict[str, bytes]:
    return {prefix + f.member: png(f.pixels) for f in faces}


def csv_bytes(faces: list[Face]) -> bytes:
    """fer2013.csv with the usages interleaved (rows of one usage stay in `n` order)."""
    rows = ["emotion,pixels,Usage"]
    for f in sorted(faces, key=lambda f: (f.n, SPLITS.index(f.usage))):
        code = CSV_EMOTIONS.index(f.emotion)
        rows.append(f"{code},{' '.join(map(str, f.pixels.ravel().tolist()))},{f.usage}")
    return ("\n".join(rows) + "\n").encode()


def write_zip(members: dict[str, bytes], path: Path, stored: bool = False) -> Path:
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def write_folder(members: dict[str, bytes], root: Path) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_tar_gz(
    members: dict[str, bytes], path: Path, links: dict[str, bytes] | None = None
) -> Path:
    """A tar.gz of `members`, plus link members: name -> tarfile.SYMTYPE or LNKTYPE."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, kind in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return path


# --- bombs: a little compressed data that expands past the reader's limits ------------------

MiB = 1 << 20
GZIP_PIECE = 64 * MiB  # zero bytes per gzip member of a bomb


def write_zip_bomb(path: Path, name: str, size: int) -> Path:
    """A zip whose member `name` is `size` zero bytes, streamed in (1 GiB takes about 2 s)."""
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open(name, "w", force_zip64=True) as member,
    ):
        for _ in range(size // MiB):
            member.write(bytes(MiB))
    return path


def gzip_bomb(head: bytes, size: int, filler: bytes = b"\0") -> bytes:
    """`head`, then `size` bytes of `filler` (a multiple of GZIP_PIECE), gzipped.

    One piece is compressed once and repeated as gzip members (a gzip file may hold many, read
    as one stream), so a GiB takes a fraction of a second and a few hundred KB.
    """
    piece = gzip.compress(filler * (GZIP_PIECE // len(filler)), compresslevel=6)
    return gzip.compress(head) + piece * (size // GZIP_PIECE)


def write_gzip_bomb(path: Path, head: bytes, size: int, filler: bytes = b"\0") -> Path:
    path.write_bytes(gzip_bomb(head, size, filler))
    return path


def write_tar_gz_bomb(path: Path, members: dict[str, int]) -> Path:
    """A tar.gz of members of zero bytes: name -> size (multiples of GZIP_PIECE)."""
    with open(path, "wb") as out:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            out.write(gzip_bomb(info.tobuf(tarfile.USTAR_FORMAT), size))
        out.write(gzip.compress(bytes(2 * tarfile.BLOCKSIZE)))  # the end of the archive
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` grayscale pixels and holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
