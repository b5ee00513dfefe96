"""ferpipe.sources against hostile input: bombs are refused fast, in little memory, in one line.

The bombs are built here, in a few seconds and a few MB each, and read in a child process whose
peak memory is measured: a reader that held what they decompress to would need GiBs.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ferpipe import sources
from ferpipe.errors import FerError
from tests.source_forms import (
    MiB,
    csv_bytes,
    expected_images,
    kaggle_members,
    png,
    png_header,
    tiny_faces,
    write_folder,
    write_gzip_bomb,
    write_tar_gz,
    write_tar_gz_bomb,
    write_zip,
    write_zip_bomb,
)

ROOT = Path(__file__).resolve().parents[1]
GiB = 1 << 30
PEAK_MB = 200  # the reader's own memory is about 40 MB (Python, numpy and PIL)
IMAGE = "train/happy/Training_0.jpg"
HEADER = b"emotion,pixels,Usage\n"

# Reads argv[1] and prints the refusal, the time and the peak memory as JSON. The peak is the
# child's VmHWM: ru_maxrss would not do, Linux carries the parent's peak into it across exec.
READ = """
import json, re, sys, time
from ferpipe.errors import FerError
from ferpipe.sources import read_source
start = time.perf_counter()
try:
    read_source(sys.argv[1])
    message = "no error"
except FerError as exc:
    message = str(exc)
status = open("/proc/self/status").read()
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024
print(json.dumps({"message": message, "seconds": time.perf_counter() - start, "peak_mb": peak}))
"""


# case: (file name, builder, what the refusal says after "<file>")
BOMBS: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    "zip, 1.25 GiB CSV member": (
        "fer2013.zip",
        lambda p: write_zip_bomb(p, "fer2013.csv", 1280 * MiB),
        ": member fer2013.csv is over the limit of 1,200,000,000 bytes",
    ),
    "zip, 1 GiB image member": (
        "fer2013.zip",
        lambda p: write_zip_bomb(p, IMAGE, GiB),
        f": image {IMAGE} is over the limit of 1,048,576 bytes",
    ),
    "tar.gz, 512 MiB CSV member": (
        "fer2013.tar.gz",
        lambda p: write_tar_gz_bomb(p, {"fer2013/fer2013.csv": 512 * MiB}),
        " member fer2013/fer2013.csv: line 1 is over the limit of 65,536 bytes",
    ),
    "tar.gz, 1 GiB image member": (
        "fer2013.tar.gz",
        lambda p: write_tar_gz_bomb(p, {IMAGE: GiB}),
        f": image {IMAGE} is over the limit of 1,048,576 bytes",
    ),
    "tar.gz, 1.1 GiB in all": (
        "fer2013.tar.gz",
        lambda p: write_tar_gz_bomb(p, {"extra/a.bin": 64 * MiB, "extra/b.bin": 1088 * MiB}),
        ": decompresses to over the limit of 1,200,000,000 bytes",
    ),
    "gzip, 2 GiB CSV": (
        "fer2013.csv.gz",
        lambda p: write_gzip_bomb(p, HEADER, 2 * GiB),
        ": line 2 is over the limit of 65,536 bytes",
    ),
    "gzip, 1 GiB CSV of blank lines": (
        "fer2013.csv.gz",
        lambda p: write_gzip_bomb(p, HEADER, GiB, filler=b"\n"),
        ": the CSV has over the limit of 143,548 lines",
    ),
}


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc/self/status")
@pytest.mark.parametrize("case", BOMBS)
def test_bomb_is_refused_in_one_line_and_little_memory(case: str, tmp_path: Path) -> None:
    name, build, refusal = BOMBS[case]
    path = build(tmp_path / name)
    child = subprocess.run(
        [sys.executable, "-c", READ, str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,  # a reader that decompresses everything takes minutes, or is killed
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    size, seconds, peak = path.stat().st_size, result["seconds"], result["peak_mb"]
    print(f"{case}: {size:,} bytes, refused in {seconds:.1f} s, peak {peak:.0f} MB")  # -rP shows
    assert result["message"].startswith(f"{path}{refusal}; FER2013 is far below it")
    assert peak < PEAK_MB
    assert child.stderr == ""


# --- every limit, at a small size --------------------------------------------------------------


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("forms")
    faces = tiny_faces(per_emotion=1, seed=1)
    write_zip(kaggle_members(faces), root / "kaggle.zip")
    write_zip({"fer2013.csv": csv_bytes(faces)}, root / "csv_in.zip")
    write_tar_gz({"fer2013/fer2013.csv": csv_bytes(faces)}, root / "fer2013.tar.gz")
    write_tar_gz(kaggle_members(faces), root / "kaggle.tar.gz")
    (root / "fer2013.csv").write_bytes(csv_bytes(faces))
    (root / "fer2013.csv.gz").write_bytes(gzip.compress(csv_bytes(faces)))
    return root


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("kaggle.zip", "kaggle.zip: its images decompress to"),
        ("csv_in.zip", "csv_in.zip: member fer2013.csv is"),
        ("fer2013.tar.gz", "fer2013.tar.gz: member fer2013/fer2013.csv is"),
        ("fer2013.csv", "fer2013.csv: the CSV is"),
        ("fer2013.csv.gz", "fer2013.csv.gz: decompresses to"),
    ],
)
def test_total_limit_in_every_form(
    name: str, refusal: str, forms: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "TOTAL_LIMIT", 10_000)
    with pytest.raises(FerError, match=f"{refusal} over the limit of 10,000 bytes"):
        sources.read_source(str(forms / name))


@pytest.mark.parametrize("name", ["kaggle.zip", "kaggle.tar.gz", "fer2013.csv"])
def test_count_limit(name: str, forms: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "COUNT_LIMIT", 5)
    with pytest.raises(FerError, match=r"has over the limit of 5 (members|lines)"):
        sources.read_source(str(forms / name))


def test_image_file_past_the_limit_is_refused_unread(tmp_path: Path) -> None:
    """A folder declares no sizes: the read itself stops at the limit."""
    folder = write_folder({IMAGE: b"\xff\xd8" + bytes(sources.IMAGE_LIMIT)}, tmp_path / "faces")
    with pytest.raises(FerError, match=f"image {IMAGE} is over the limit of 1,048,576 bytes"):
        sources.read_source(str(folder))


@pytest.mark.filterwarnings("error")  # PIL's DecompressionBombWarning must not come out
@pytest.mark.parametrize("side", [5000, 10_000, 20_000])  # under, between and past PIL's limits
def test_image_with_too_many_pixels(side: int, tmp_path: Path) -> None:
    path = write_zip({"train/happy/Training_0.png": png_header(side, side)}, tmp_path / "big.zip")
    with pytest.raises(FerError, match="png .*has over the limit of 16,777,216 pixels"):
        sources.read_source(str(path))


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_member_inflated_without_a_bound_is_refused(method: int, tmp_path: Path) -> None:
    """zipfile inflates bzip2 and LZMA a block at a time: a few KB can become GiBs in one read."""
    path = tmp_path / "odd.zip"
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("fer2013.csv", csv_bytes(tiny_faces(per_emotion=1)))
    with pytest.raises(FerError, match=f"fer2013.csv uses compression method {method}; only"):
        sources.read_source(str(path))


def test_encrypted_zip_member_is_refused(forms: Path, tmp_path: Path) -> None:
    data = bytearray((forms / "csv_in.zip").read_bytes())
    data[data.rindex(b"PK\x01\x02") + 8] |= 1  # the encrypted flag, in the central directory
    path = tmp_path / "locked.zip"
    path.write_bytes(data)
    with pytest.raises(FerError, match="member fer2013.csv is encrypted"):
        sources.read_source(str(path))


def tar_with(path: Path, headers: bytes) -> Path:
    """A tar of `headers` (built by hand) before a small fer2013.csv."""
    data = csv_bytes(tiny_faces(per_emotion=1))
    info = tarfile.TarInfo("fer2013.csv")
    info.size = len(data)
    padding = bytes(-len(data) % tarfile.BLOCKSIZE)
    path.write_bytes(headers + info.tobuf() + data + padding + bytes(2 * tarfile.BLOCKSIZE))
    return path


def pax(records: dict[str, str], kind: bytes = tarfile.XHDTYPE) -> bytes:
    """A pax header and its record, as tarfile writes them."""
    header = tarfile.TarInfo._create_pax_generic_header  # type: ignore[attr-defined]
    return header(records, kind, "utf-8")


def gnu_sparse() -> bytes:
    info = tarfile.TarInfo("fer2013.csv")
    info.type = tarfile.GNUTYPE_SPARSE
    return info.tobuf(tarfile.GNU_FORMAT)


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        (pax({"comment": "x" * 100_000}), "a header record of 100,016 bytes is over the limit"),
        (pax({"comment": "x"}, tarfile.XGLTYPE), "it has a pax global header"),
        (gnu_sparse(), "it holds a sparse file"),
        (pax({"GNU.sparse.map": "0,10"}), "it holds a sparse file"),
        (pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}), "it holds a sparse file"),
        (pax({"comment": "x"}) * 2000, r"corrupt or truncated tar archive \(maximum recursion"),
    ],
    ids=[
        "big pax record",
        "pax global header",
        "GNU sparse",
        "pax sparse 0.1",
        "pax sparse 1.0",
        "chained pax",
    ],
)
def test_tar_headers_tarfile_would_follow_unbounded(
    headers: bytes, refusal: str, tmp_path: Path
) -> None:
    with pytest.raises(FerError, match=f"odd.tar: {refusal}"):
        sources.read_source(str(tar_with(tmp_path / "odd.tar", headers)))


def test_device_is_refused_unread() -> None:
    """/dev/zero would be read for ever; /dev/null shows the same refusal, and fails safely."""
    with pytest.raises(FerError, match="/dev/null: not a regular file or folder"):
        sources.read_source("/dev/null")


# --- error messages quote input briefly --------------------------------------------------------

PIXELS = b" ".join([b"7"] * 2304)
HUGE_INPUT = {
    "10 MB header": HEADER[:-1] + b"a" * 10_000_000 + b"\n",
    "60 KB header": HEADER[:-1] + b"a" * 60_000 + b"\n",
    "binary start": b"\x1b[2J\x00\xff\r" * 100_000,
    "10 MB first line": b"a" * 10_000_000,
    "60 KB emotion code": HEADER + b"9" * 60_000 + b"," + PIXELS + b",Training\n",
    "60 KB Usage": HEADER + b"0," + PIXELS + b"," + b"\x07" * 60_000 + b"\n",
}


@pytest.mark.parametrize("case", HUGE_INPUT)
def test_error_messages_quote_input_briefly(case: str, tmp_path: Path) -> None:
    path = tmp_path / "fer2013.csv"
    path.write_bytes(HUGE_INPUT[case])
    with pytest.raises(FerError) as error:
        sources.read_source(str(path))
    message = str(error.value)
    assert len(message) < len(str(path)) + 300, message
    assert message.isprintable(), message  # one line, no control characters


def test_member_names_are_quoted_briefly(tmp_path: Path) -> None:
    path = write_zip({"../" + "\n" * 60_000: b""}, tmp_path / "evil.zip")
    with pytest.raises(FerError, match=r"member '\.\./(\\n)+\.\.\.' would escape") as error:
        sources.read_source(str(path))
    assert len(str(error.value)) < 600


def test_unreadable_image_is_named_without_python_objects(tmp_path: Path) -> None:
    path = write_zip({"train/happy/Training_0.png": b"not an image"}, tmp_path / "bad.zip")
    with pytest.raises(FerError) as error:
        sources.read_source(str(path))
    assert str(error.value) == (
        f"{path}: image train/happy/Training_0.png is corrupt (not a JPEG, PNG, BMP image); "
        "replace it or re-download"
    )


# --- streaming keeps every byte ----------------------------------------------------------------


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_csv_read_in_blocks_splitting_line_ends(
    newline: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """21-byte blocks end between the \\r and \\n of the header; rows span many blocks."""
    faces = tiny_faces(per_emotion=1, seed=2)
    path = tmp_path / "fer2013.csv"
    path.write_bytes(csv_bytes(faces).replace(b"\n", newline))
    monkeypatch.setattr(sources, "BLOCK", len(HEADER))
    images = sources.read_source(str(path)).images
    expected = expected_images(faces)
    assert np.array_equal(images.pixels, expected.pixels)
    assert images.ids.tolist() == expected.ids.tolist()


def test_images_converted_as_before(tmp_path: Path) -> None:
    """A photo-sized RGB image under the limits is converted, as any other size is."""
    photo = np.full((1000, 1500, 3), 100, np.uint8)
    path = write_zip({"train/happy/Training_0.png": png(photo, mode="RGB")}, tmp_path / "p.zip")
    decoded = sources.read_source(str(path))
    assert decoded.converted == 1
    assert (decoded.images.pixels == 100).all()
