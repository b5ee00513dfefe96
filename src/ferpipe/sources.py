"""Read FER2013 from the forms users download it in and decode it once into `Images`.

Supported forms (`data.source`):

- the Kaggle archive (`[prefix/]train/<emotion>/*.jpg`, `test/<emotion>/*.jpg`) as a .zip, a
  tar(.gz) or an unpacked folder;
- the original challenge `fer2013.csv` (`emotion,pixels,Usage`), bare, gzipped, or inside a
  tar.gz / zip / folder (e.g. `fer2013/fer2013.csv` in the challenge's `fer2013.tar.gz`);
- an http(s) URL to any of these, checked against `data.sha256`;
- `kaggle:<owner>/<dataset>`, fetched with the Kaggle client.

The format of a file is decided from its first bytes, never from its name, because downloads
are often renamed. Archives are read in memory and never extracted, and members that would
escape an extraction folder (absolute paths, `..`, links) are refused all the same, so an
archive that is unsafe to unpack elsewhere is never accepted as data.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferpipe.dataset import Images, atomic_path
from ferpipe.errors import FerError
from ferpipe.labels import CSV_EMOTIONS, EMOTIONS, IMAGE_SIZE, SPLITS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
FOLDER_SPLITS = {"train": "Training", "test": "PrivateTest"}
CSV_COLUMNS = ("emotion", "pixels", "Usage")
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
# The challenge CSV numbers emotions differently from the Kaggle folders: CSV code -> label.
CSV_TO_LABEL = tuple(EMOTIONS.index(name) for name in CSV_EMOTIONS)
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
GZIP_MAGIC = b"\x1f\x8b"
DOWNLOAD_TIMEOUT = 60  # seconds without data before a download is given up

# Reads one member of an archive or folder by name.
Reader = Callable[[str], bytes]


@dataclass
class Decoded:
    """What reading a source produced: the images and facts for the manifest."""

    images: Images
    source_sha256: str
    converted: int = 0  # images that were not 48x48 grayscale and were converted
    notes: list[str] = field(default_factory=list)


def read_source(source: str, sha256: str = "", workdir: Path | None = None) -> Decoded:
    """Decode `source` (path, URL or `kaggle:owner/dataset`) into the normalised form.

    `sha256` is the expected SHA-256 of the source file (required for URLs, checked when given
    otherwise); `workdir` is where a download is kept (default: a temporary folder, removed).
    """
    expected = _expected_sha256(sha256)
    if source.startswith(("http://", "https://")):
        return _read_url(source, expected, workdir)
    if source.startswith("kaggle:"):
        return _read_kaggle(source, expected, workdir)
    return _read_path(Path(source).expanduser(), source, expected)


# --- where the bytes come from: local path, URL, Kaggle ---------------------------------------


def _read_path(path: Path, label: str, expected: str) -> Decoded:
    """A local file (any supported format) or an unpacked folder."""
    if not path.exists():
        raise FerError(f"{label}: no such file or folder; set data.source to your FER2013 download")
    if path.is_dir():
        return _read_folder(path, label, expected)
    data = _read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    _check_sha256(label, expected, digest)
    return _decode_bytes(data, label, digest)


def _read_url(url: str, expected: str, workdir: Path | None) -> Decoded:
    """Download `url` (checksum required: the bytes come from elsewhere) and decode it."""
    if not expected:
        raise FerError(
            f"{url}: a URL source needs its expected SHA-256; set data.sha256 in params.yaml to "
            "the file's sha256sum"
        )
    with _work_folder(workdir) as folder:
        path = _download(url, folder, expected)
        return _decode_bytes(_read_bytes(path), url, expected)


def _read_kaggle(source: str, expected: str, workdir: Path | None) -> Decoded:
    """Fetch `kaggle:<owner>/<dataset>` with the Kaggle client, then read the downloaded zip."""
    dataset = source.removeprefix("kaggle:").strip("/")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", dataset):
        raise FerError(f"{source}: expected kaggle:<owner>/<dataset>, e.g. kaggle:msambare/fer2013")
    api = _kaggle_api(source)
    with _work_folder(workdir) as folder:
        before = set(folder.iterdir())
        try:
            api.dataset_download_files(dataset, path=str(folder), unzip=False)
        except Exception as exc:  # the client raises many types (HTTP, API, OS errors)
            raise FerError(
                f"{source}: Kaggle download failed ({exc}); check the dataset name, your Kaggle "
                "credentials and the network"
            ) from None
        path = _kaggle_download(source, folder, before, dataset)
        return _read_path(path, f"{source} ({path.name})", expected)


def _kaggle_api(source: str) -> Any:
    """Import and authenticate the Kaggle client lazily: it is optional and reads credentials."""
    hint = (
        "pip install kaggle, and put your API token in ~/.kaggle/kaggle.json "
        "(or set KAGGLE_USERNAME and KAGGLE_KEY)"
    )
    try:
        import kaggle  # the real client authenticates on import and may raise then
    except ImportError:
        raise FerError(f"{source}: the Kaggle client is not installed; {hint}") from None
    except Exception as exc:
        raise FerError(f"{source}: the Kaggle client cannot start ({exc}); {hint}") from None
    try:
        kaggle.api.authenticate()
    except Exception as exc:
        raise FerError(f"{source}: Kaggle authentication failed ({exc}); {hint}") from None
    return kaggle.api


def _kaggle_download(source: str, folder: Path, before: set[Path], dataset: str) -> Path:
    """The file the Kaggle client wrote: `<dataset>.zip`, else the one new file."""
    named = folder / f"{dataset.split('/')[1]}.zip"
    if named.is_file():
        return named
    new = [p for p in folder.iterdir() if p not in before and p.is_file()]
    if len(new) != 1:
        raise FerError(
            f"{source}: expected the Kaggle client to write one archive in {folder}, found "
            f"{len(new)} new files; check the dataset name"
        )
    return new[0]


@contextmanager
def _work_folder(workdir: Path | None) -> Iterator[Path]:
    """`workdir` (created if needed, kept), or a temporary folder removed afterwards."""
    if workdir is not None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="ferpipe-download-") as tmp:
        yield Path(tmp)


def _download(url: str, folder: Path, expected: str) -> Path:
    """Stream `url` into `folder`; the file appears only when complete and its digest matches."""
    name = re.sub(r"[^\w.-]", "_", PurePosixPath(urllib.parse.urlparse(url).path).name)
    target = folder / (name.lstrip(".") or "download")
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            atomic_path(target) as tmp,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response,
            open(tmp, "wb") as out,
        ):
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            announced = response.headers.get("Content-Length")
            if announced is not None and announced.isdigit() and size != int(announced):
                raise FerError(
                    f"{url}: download was cut short ({size} of {announced} bytes); check the "
                    "network, then rerun"
                )
            out.close()
            _check_sha256(url, expected, digest.hexdigest())
    except urllib.error.HTTPError as exc:
        raise FerError(
            f"{url}: download failed (HTTP {exc.code} {exc.reason}); check the URL"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or repr(exc)
        raise FerError(
            f"{url}: download failed or was cut short ({reason}); check the URL and the network, "
            "then rerun"
        ) from None
    return target


# --- checksums and file access ----------------------------------------------------------------


def _expected_sha256(sha256: str) -> str:
    """The expected digest normalised to lower case; a malformed one is refused up front."""
    expected = (sha256 or "").strip().lower()
    if expected and not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise FerError(f"data.sha256 {sha256!r} is not a SHA-256 digest; use 64 hex digits or ''")
    return expected


def _check_sha256(label: str, expected: str, actual: str) -> None:
    """Refuse data whose digest differs from the expected one (when one is given)."""
    if expected and actual != expected:
        raise FerError(
            f"{label}: SHA-256 mismatch: expected {expected}, got {actual}; the download is "
            "corrupt or changed - download it again or update data.sha256"
        )


def _read_bytes(path: Path) -> bytes:
    """The whole file, with a clear error when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise FerError(
            f"{path}: cannot be read ({exc.strerror or exc}); check that it is a readable file"
        ) from None


# --- containers: bytes, zip, gzip, tar, folder ------------------------------------------------


def _decode_bytes(data: bytes, label: str, digest: str, *, gunzipped: bool = False) -> Decoded:
    """Pick the reader from the first bytes, not the name: URLs and renamed downloads mislead."""
    if data.startswith(ZIP_MAGICS):
        return _read_zip(data, label, digest)
    if data.startswith(GZIP_MAGIC) and not gunzipped:
        return _decode_bytes(_gunzip(data, label), label, digest, gunzipped=True)
    if data[257:262] == b"ustar":
        return _read_tar(data, label, digest)
    if b"," in _first_line(data):
        return _decode_csv(data, label, digest)
    start = _first_line(data)[:40].decode("utf-8", "replace")
    raise FerError(
        f"{label}: unknown data format (starts with {start!r}); expected the Kaggle FER2013 .zip "
        "or folder, fer2013.csv or fer2013.tar.gz"
    )


def _read_zip(data: bytes, label: str, digest: str) -> Decoded:
    """A zip in memory; every member name is checked before any member is read."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            for info in infos:
                _check_member_name(label, info.filename)
            names = [info.filename for info in infos if not info.is_dir()]

            def read(name: str) -> bytes:
                try:
                    return archive.read(name)
                except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                    raise FerError(
                        f"{label}: member {name} is corrupt ({exc}); download the archive again"
                    ) from None

            return _decode_tree(names, read, label, digest)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise FerError(
            f"{label}: corrupt or truncated zip archive ({exc}); download it again"
        ) from None


def _gunzip(data: bytes, label: str) -> bytes:
    """Decompress a gzip file in memory."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise FerError(
            f"{label}: corrupt or truncated gzip file ({exc}); download it again"
        ) from None


def _read_tar(data: bytes, label: str, digest: str) -> Decoded:
    """A tar in memory; links and unsafe names are refused before any member is read."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            members = archive.getmembers()
            for member in members:
                _check_tar_member(label, member)
            files = {m.name: m for m in members if m.isfile()}

            def read(name: str) -> bytes:
                return archive.extractfile(files[name]).read()  # type: ignore[union-attr]

            return _decode_tree(list(files), read, label, digest)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise FerError(
            f"{label}: corrupt or truncated tar archive ({exc}); download it again"
        ) from None


def _check_tar_member(label: str, member: tarfile.TarInfo) -> None:
    """Only plain files and folders with safe names: links could point anywhere."""
    _check_member_name(label, member.name)
    if member.issym() or member.islnk():
        raise FerError(
            f"{label}: member {member.name!r} is a link (to {member.linkname!r}); refusing the "
            "archive - use an archive of plain files"
        )
    if not (member.isfile() or member.isdir()):
        raise FerError(
            f"{label}: member {member.name!r} is not a regular file; refusing the archive"
        )


def _check_member_name(label: str, name: str) -> None:
    """Refuse members that would land outside an extraction folder (absolute or `..`)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise FerError(
            f"{label}: member {name!r} would escape the target folder; refusing the archive"
        )


def _read_folder(root: Path, label: str, expected: str) -> Decoded:
    """An unpacked folder; its checksum covers every relative path and file content."""
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def read(name: str) -> bytes:
        return _read_bytes(root / name)

    tree = hashlib.sha256()
    for name in names:
        tree.update(name.encode() + b"\0" + hashlib.sha256(read(name)).digest())
    digest = tree.hexdigest()
    _check_sha256(label, expected, digest)
    return _decode_tree(names, read, label, digest)


def _decode_tree(names: Sequence[str], read: Reader, label: str, digest: str) -> Decoded:
    """Files of an archive or folder: the Kaggle image layout, else a fer2013.csv inside."""
    places = {name: place for name in names if (place := _image_place(name))}
    if places:
        return _decode_images(places, read, label, digest, skipped=_skipped_images(names, places))
    csv_name = _pick_csv(names)
    if csv_name:
        return _decode_csv(read(csv_name), f"{label} member {csv_name}", digest)
    raise FerError(
        f"{label}: unknown layout; expected train/<emotion>/*.jpg and test/<emotion>/*.jpg "
        f"(emotions {', '.join(EMOTIONS)}) or a fer2013.csv - point data.source at the FER2013 "
        "download itself"
    )


def _pick_csv(names: Sequence[str]) -> str | None:
    """`fer2013.csv` anywhere in the tree, else the only .csv file (macOS `._` files ignored)."""
    csvs = [
        n
        for n in names
        if n.lower().endswith(".csv") and not PurePosixPath(n).name.startswith("._")
    ]
    named = [n for n in csvs if PurePosixPath(n).name.lower() == "fer2013.csv"]
    if named:
        return min(named, key=len)
    return csvs[0] if len(csvs) == 1 else None


# --- the two payloads: Kaggle images and the challenge CSV ------------------------------------


def _image_place(name: str) -> tuple[int, int, str] | None:
    """(split, emotion label, id) of `[prefix/]{train,test}/<emotion>/<file>`, else None.

    The split comes from the file name (`PublicTest_123.jpg`) when it says so, else from the
    folder; ids are the file stem, prefixed with the split when the stem lacks it.
    """
    path = PurePosixPath(name)
    if path.suffix.lower() not in IMAGE_SUFFIXES or len(path.parts) < 3:
        return None
    folder, emotion = path.parts[-3].lower(), path.parts[-2].lower()
    if folder not in FOLDER_SPLITS or emotion not in EMOTIONS or path.name.startswith("._"):
        return None
    prefix = path.stem.split("_", 1)[0]
    split = prefix if prefix in SPLITS else FOLDER_SPLITS[folder]
    image_id = path.stem if prefix in SPLITS else f"{split}_{path.stem}"
    return SPLITS.index(split), EMOTIONS.index(emotion), image_id


def _skipped_images(names: Sequence[str], places: dict[str, tuple[int, int, str]]) -> int:
    """Image files outside the layout (e.g. an unknown emotion folder), reported in notes."""
    return sum(PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES for n in names if n not in places)


def _decode_images(
    places: dict[str, tuple[int, int, str]], read: Reader, label: str, digest: str, skipped: int
) -> Decoded:
    """Decode the Kaggle image files into `Images`, counting the ones that needed converting."""
    pixels = np.empty((len(places), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    converted = 0
    for row, name in enumerate(places):
        pixels[row], was_converted = _decode_image(label, name, read(name))
        converted += was_converted
    splits, labels, ids = zip(*places.values(), strict=True)
    images = Images(pixels, np.array(labels), np.array(splits), np.array(ids)).sorted()
    notes = [f"skipped {skipped} image files outside train|test/<emotion>/"] if skipped else []
    return Decoded(images, digest, converted, notes)


def _decode_image(label: str, name: str, data: bytes) -> tuple[np.ndarray, bool]:
    """Decode one image to uint8 48x48 grayscale; convert other sizes and modes (flagged)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            converted = im.mode != "L" or im.size != (IMAGE_SIZE, IMAGE_SIZE)
            if im.mode != "L":
                im = im.convert("L")
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8), converted
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FerError(
            f"{label}: image {name} is corrupt ({exc}); replace it or re-download"
        ) from None


def _decode_csv(data: bytes, label: str, digest: str) -> Decoded:
    """Decode the challenge CSV (`emotion,pixels,Usage`, columns in any order).

    The CSV has no file ids, so row ids are `f"{Usage}_{n}"` with `n` the 0-based row number
    within that Usage (e.g. the third PublicTest row is `PublicTest_2`): stable for a given file.
    Pixels are parsed one row at a time with numpy (about 2 s for the full 35,887 rows).
    """
    lines = data.splitlines()
    columns = _csv_columns(lines[0] if lines else b"", label)
    rows = [(number, line) for number, line in enumerate(lines[1:], start=2) if line.strip()]
    if not rows:
        raise FerError(f"{label}: the CSV has a header but no rows; download it again")
    pixels = np.empty((len(rows), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    labels = np.empty(len(rows), np.int64)
    splits = np.empty(len(rows), np.int64)
    for row, (number, line) in enumerate(rows):
        where = f"{label}: line {number}"
        cells = line.split(b",")
        if len(cells) != len(columns):
            raise FerError(
                f"{where}: {len(cells)} fields, expected {len(columns)} (emotion,pixels,Usage); "
                "fix the row or download the file again"
            )
        emotion, pixel_text, usage = (cells[columns[c]].strip().strip(b'"') for c in CSV_COLUMNS)
        labels[row] = _csv_emotion(emotion, where)
        splits[row] = _csv_split(usage, where)
        pixels[row] = _csv_pixels(pixel_text, where)
    images = Images(pixels, labels, splits, _csv_ids(splits)).sorted()
    return Decoded(images, digest)


def _csv_columns(header: bytes, label: str) -> dict[str, int]:
    """Column positions from the header; anything but emotion, pixels and Usage is refused."""
    names = [c.strip().strip('"') for c in header.decode("utf-8-sig", "replace").split(",")]
    if sorted(names) != sorted(CSV_COLUMNS):
        raise FerError(
            f"{label}: unknown CSV layout: header {','.join(names)!r}, expected "
            f"{','.join(CSV_COLUMNS)!r} (the FER2013 challenge fer2013.csv)"
        )
    return {name: names.index(name) for name in CSV_COLUMNS}


def _csv_emotion(cell: bytes, where: str) -> int:
    """The normalised label of a CSV emotion code (0=angry ... 6=neutral)."""
    if not cell.isdigit() or int(cell) >= len(CSV_TO_LABEL):
        codes = " ".join(f"{i}={name}" for i, name in enumerate(CSV_EMOTIONS))
        raise FerError(
            f"{where}: unknown emotion code {cell.decode(errors='replace')!r}, expected one of "
            f"{codes}; fix the row or download the file again"
        )
    return CSV_TO_LABEL[int(cell)]


def _csv_split(cell: bytes, where: str) -> int:
    """The split index of a Usage cell."""
    usage = cell.decode(errors="replace")
    if usage not in SPLITS:
        raise FerError(
            f"{where}: unknown Usage {usage!r}, expected {', '.join(SPLITS)}; fix the row or "
            "download the file again"
        )
    return SPLITS.index(usage)


def _csv_pixels(cell: bytes, where: str) -> np.ndarray:
    """2304 space-separated integers 0..255 as a 48x48 uint8 image."""
    fix = "fix the row or download the file again"
    try:
        values = np.fromstring(cell, dtype=np.int64, sep=" ")
    except ValueError:
        raise FerError(f"{where}: pixels are not space-separated integers; {fix}") from None
    if values.size != PIXELS_PER_IMAGE:
        raise FerError(
            f"{where}: {values.size} pixel values, expected {PIXELS_PER_IMAGE} (48x48); {fix}"
        )
    if values.min() < 0 or values.max() > 255:
        bad = values[(values < 0) | (values > 255)][0]
        raise FerError(f"{where}: pixel value {bad} is outside 0..255; {fix}")
    return values.reshape(IMAGE_SIZE, IMAGE_SIZE)


def _csv_ids(splits: np.ndarray) -> np.ndarray:
    """`{Usage}_{n}`, n counting rows within each Usage in file order."""
    ids = np.empty(len(splits), dtype=object)
    for s, usage in enumerate(SPLITS):
        rows = np.flatnonzero(splits == s)
        ids[rows] = [f"{usage}_{n}" for n in range(len(rows))]
    return ids.astype(str)


def _first_line(data: bytes) -> bytes:
    """The first line of a file (at most 4 KiB), to recognise a CSV header."""
    return data[:4096].split(b"\n", 1)[0]
