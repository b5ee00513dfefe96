"""Read FER2013 from the forms users download it in and decode it once into `Images`.

Supported forms (`data.source`):

- the Kaggle archive (`[prefix/]train/<emotion>/*.jpg`, `test/<emotion>/*.jpg`) as a .zip, a
  tar(.gz) or an unpacked folder;
- the original challenge `fer2013.csv` (`emotion,pixels,Usage`), bare, gzipped, or inside a
  tar.gz / zip / folder (e.g. `fer2013/fer2013.csv` in the challenge's `fer2013.tar.gz`);
- an http(s) URL to any of these, checked against `data.sha256`;
- `kaggle:<owner>/<dataset>`, fetched with the Kaggle client.

The format of a file is decided from its first bytes, never from its name, because downloads
are often renamed. Archives are read in place and never extracted, and members that would
escape an extraction folder (absolute paths, `..`, links) are refused all the same, so an
archive that is unsafe to unpack elsewhere is never accepted as data. Everything is read as a
stream against the limits below, so a hostile file (a zip bomb) is refused in seconds, with
little memory, instead of filling it.
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
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, NoReturn

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
IMAGE_FORMATS = ("JPEG", "PNG", "BMP")  # what IMAGE_SUFFIXES name; PIL tries no other decoder
DOWNLOAD_TIMEOUT = 60  # seconds without data before a download is given up
HEAD = 4096  # bytes read to recognise a format: the magics, a tar header, a CSV header
BLOCK = 1 << 20  # bytes read at a time from a file or stream

# Limits on what reading one source may decompress or hold. FER2013 is far below them: the
# challenge fer2013.csv is about 301 MB (35,888 lines of at most 9,229 bytes), the Kaggle zip
# holds 35,887 JPEGs of 359 to 2,683 bytes (66,337,222 in all). Past a limit the data is refused.
TOTAL_LIMIT = 1_200_000_000  # bytes from one source (a CSV, a gzip stream, all images): 4x the CSV
IMAGE_LIMIT = 1 << 20  # bytes per image file: 390x FER2013's largest; a web-sized photo fits
IMAGE_PIXEL_LIMIT = 4096 * 4096  # pixels per image: 1 MiB of PNG can declare billions; 67 MB RGBA
CSV_LINE_LIMIT = 1 << 16  # bytes per CSV line, 7x a FER2013 row; a stream holds one line at a time
COUNT_LIMIT = 4 * 35_887  # members of an archive, lines of a CSV: 4x FER2013's images
TAR_RECORD_LIMIT = 1 << 16  # bytes per pax or GNU long-name tar record (tarfile reads it whole)
EXCERPT = 40  # characters of file content quoted in an error message
NAME_EXCERPT = 120  # characters of a member name in an error message (FER2013's are at most 38)
TAR_RECORD_TYPES = (  # tar headers followed by a record that tarfile reads whole
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.SOLARIS_XHDTYPE,
)

# Opens one member of an archive or folder by name, as a binary stream.
Opener = Callable[[str], AbstractContextManager[BinaryIO]]


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
    if not path.is_file():
        raise FerError(
            f"{label}: not a regular file or folder (a device or pipe may never end); set "
            "data.source to your FER2013 download"
        )
    with _open_file(path) as file:
        digest = _sha256(file).hex()
        _check_sha256(label, expected, digest)
        file.seek(0)
        return _decode_file(file, label, digest)


def _read_url(url: str, expected: str, workdir: Path | None) -> Decoded:
    """Download `url` (checksum required: the bytes come from elsewhere) and decode it."""
    if not expected:
        raise FerError(
            f"{url}: a URL source needs its expected SHA-256; set data.sha256 in params.yaml to "
            "the file's sha256sum"
        )
    with _work_folder(workdir) as folder:
        path = _download(url, folder, expected)
        with _open_file(path) as file:
            return _decode_file(file, url, expected)


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
            for chunk in iter(lambda: response.read(BLOCK), b""):
                size += len(chunk)
                if size > TOTAL_LIMIT:
                    raise _over_limit(f"{url}: the download is", TOTAL_LIMIT)
                digest.update(chunk)
                out.write(chunk)
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


def _open_file(path: Path) -> BinaryIO:
    """The file opened for reading, with a clear error when it cannot be."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise FerError(
            f"{path}: cannot be read ({exc.strerror or exc}); check that it is a readable file"
        ) from None


def _sha256(stream: BinaryIO) -> bytes:
    """The SHA-256 digest of a stream, read a block at a time."""
    digest = hashlib.sha256()
    while block := stream.read(BLOCK):
        digest.update(block)
    return digest.digest()


def _head(stream: BinaryIO) -> bytes:
    """The first HEAD bytes of a stream, which is then rewound."""
    head = stream.read(HEAD)
    stream.seek(0)
    return head


# --- limits and error messages ----------------------------------------------------------------


def _over_limit(where: str, limit: int, unit: str = "bytes") -> FerError:
    """The refusal of data past one of the limits: no FER2013 download comes near them."""
    return FerError(
        f"{where} over the limit of {limit:,} {unit}; FER2013 is far below it, so this is not a "
        "FER2013 download - refusing it"
    )


def _check_count(where: str, count: int, unit: str) -> None:
    """Refuse more than COUNT_LIMIT members or lines: each costs memory and time, even empty."""
    if count > COUNT_LIMIT:
        raise _over_limit(f"{where} has", COUNT_LIMIT, unit)


def _check_size(label: str, name: str, size: int) -> None:
    """Refuse a member whose declared size is already past its limit, before reading any of it."""
    if size > IMAGE_LIMIT and _image_place(name):  # the name is parsed only for large members
        raise _over_limit(f"{_image_label(label, name)} is", IMAGE_LIMIT)
    if size > TOTAL_LIMIT:
        raise _over_limit(f"{label}: member {_named(name)} is", TOTAL_LIMIT)


def _shown(value: bytes | str, size: int = EXCERPT) -> str:
    """At most `size` characters of input for an error message, non-printable ones escaped."""
    head = value[:size]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    shown = ""
    for char in text:
        piece = char if char.isprintable() else char.encode("unicode_escape").decode()
        if len(shown) + len(piece) > size:
            return shown + "..."
        shown += piece
    return shown + ("..." if len(value) > size else "")


def _named(name: str) -> str:
    """A member name for an error message: names come from the archive and may be anything."""
    return _shown(name, NAME_EXCERPT)


# --- containers: file, zip, gzip, tar, folder -------------------------------------------------


def _decode_file(file: BinaryIO, label: str, digest: str) -> Decoded:
    """Pick the reader from the first bytes, not the name: URLs and renamed downloads mislead."""
    head = _head(file)
    if head.startswith(ZIP_MAGICS):
        return _read_zip(file, label, digest)
    if head.startswith(GZIP_MAGIC):
        stream = _Gunzipped(file, label)
        return _decode_stream(stream, _head(stream), label, digest)
    return _decode_stream(file, head, label, digest)


def _decode_stream(stream: BinaryIO, head: bytes, label: str, digest: str) -> Decoded:
    """A tar or the challenge CSV: what a bare file or a gzip file holds."""
    if head[257:262] == b"ustar":
        return _read_tar(stream, label, digest)
    if b"," in _first_line(head):
        return _decode_csv(stream, label, digest)
    raise FerError(
        f"{label}: unknown data format (starts with '{_shown(_first_line(head))}'); expected the "
        "Kaggle FER2013 .zip or folder, fer2013.csv or fer2013.tar.gz"
    )


def _read_zip(file: BinaryIO, label: str, digest: str) -> Decoded:
    """A zip read in place; every member name is checked before any member is read."""
    try:
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
            _check_count(f"{label}: the archive", len(infos), "members")
            for info in infos:
                _check_member_name(label, info.filename)
            names = [info.filename for info in infos if not info.is_dir()]

            @contextmanager
            def open_member(name: str) -> Iterator[BinaryIO]:
                info = archive.getinfo(name)
                _check_zip_member(label, info)
                try:
                    with archive.open(info) as stream:
                        yield stream  # type: ignore[misc]
                except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                    raise FerError(
                        f"{label}: member {_named(name)} is corrupt ({_named(str(exc))}); "
                        "download the archive again"
                    ) from None

            return _decode_tree(names, open_member, label, digest)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise FerError(
            f"{label}: corrupt or truncated zip archive ({_named(str(exc))}); download it again"
        ) from None


def _check_zip_member(label: str, info: zipfile.ZipInfo) -> None:
    """Only stored or deflated members (as in the Kaggle zip), within their limit as declared.

    zipfile bounds every read of a deflated member, but inflates bzip2 and LZMA data a whole
    compressed block at a time: 457 bytes of bzip2 took 835 MB to read 10 bytes from.
    """
    if info.flag_bits & 0x1:
        raise FerError(
            f"{label}: member {_named(info.filename)} is encrypted; use an archive without a "
            "password"
        )
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise FerError(
            f"{label}: member {_named(info.filename)} uses compression method "
            f"{info.compress_type}; only stored and deflated members are read - zip the files "
            "again with the default settings"
        )
    _check_size(label, info.filename, info.file_size)


class _Gunzipped:
    """The decompressed bytes of a gzip file, refused past TOTAL_LIMIT; corruption is a FerError.

    A stream: reads are as large as the caller asks. Seeks serve tarfile: forward ones decompress
    and skip, backward ones start again from the top, so a tar read in order costs two passes.
    """

    def __init__(self, file: BinaryIO, label: str) -> None:
        self._gzip = gzip.GzipFile(fileobj=file, mode="rb")
        self._label = label

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left if negative), never past the limit."""
        room = TOTAL_LIMIT + 1 - self.tell()
        try:
            data = self._gzip.read(room if size < 0 else min(size, room))
        except (OSError, EOFError, zlib.error) as exc:
            raise self._corrupt(exc) from None
        self._check(self.tell())
        return data

    def seek(self, position: int) -> int:
        """Go to `position`, refused before decompressing up to it when past the limit."""
        self._check(position)
        try:
            return self._gzip.seek(position)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._corrupt(exc) from None

    def tell(self) -> int:
        """The position in the decompressed bytes."""
        return self._gzip.tell()

    def _check(self, position: int) -> None:
        """Refuse a position past TOTAL_LIMIT."""
        if position > TOTAL_LIMIT:
            raise _over_limit(f"{self._label}: decompresses to", TOTAL_LIMIT)

    def _corrupt(self, exc: Exception) -> FerError:
        """The refusal of a gzip stream that cannot be decompressed."""
        return FerError(
            f"{self._label}: corrupt or truncated gzip file ({_named(str(exc))}); download it again"
        )


def _read_tar(stream: BinaryIO, label: str, digest: str) -> Decoded:
    """A tar read in place; links and unsafe names are refused before any member is read."""
    try:
        with tarfile.open(fileobj=stream, mode="r:", tarinfo=_TarHeader) as archive:
            files = {}
            for count, member in enumerate(archive, start=1):
                _check_count(f"{label}: the archive", count, "members")
                _check_tar_member(label, member)
                member.pax_headers = {}  # a copy of its pax records, unused: they would pile up
                if member.isfile():
                    files[member.name] = member

            def open_member(name: str) -> BinaryIO:
                return archive.extractfile(files[name])  # type: ignore[return-value]

            return _decode_tree(list(files), open_member, label, digest)
    except _UnsafeTar as exc:
        raise FerError(
            f"{label}: {exc}; refusing the archive - FER2013's hold plain files"
        ) from None
    except (tarfile.TarError, EOFError, OSError, RecursionError) as exc:
        raise FerError(
            f"{label}: corrupt or truncated tar archive ({_named(str(exc))}); download it again"
        ) from None


class _UnsafeTar(Exception):
    """A tar header that tarfile would follow without a bound."""


class _TarHeader(tarfile.TarInfo):
    """Tar headers that refuse, as tarfile meets them, what it would follow without a bound.

    FER2013 archives have none: sparse files (whose maps tarfile gathers block after block),
    pax global headers (copied into every later member) and pax or GNU long-name records longer
    than TAR_RECORD_LIMIT (read whole).
    """

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        """tarfile's entry point for a header; a global or too long record is refused first."""
        if self.type == tarfile.XGLTYPE:
            raise _UnsafeTar("it has a pax global header")
        if self.type in TAR_RECORD_TYPES and self.size > TAR_RECORD_LIMIT:
            raise _UnsafeTar(
                f"a header record of {self.size:,} bytes is over the limit of {TAR_RECORD_LIMIT:,}"
            )
        return super()._proc_member(archive)  # type: ignore[misc]

    def _refuse_sparse(self, *args: object) -> NoReturn:
        """Stands for every method tarfile reads a sparse map with."""
        raise _UnsafeTar("it holds a sparse file")

    _proc_sparse = _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


def _check_tar_member(label: str, member: tarfile.TarInfo) -> None:
    """Only plain files and folders with safe names, within their limit: links could go anywhere."""
    _check_member_name(label, member.name)
    if member.issym() or member.islnk():
        raise FerError(
            f"{label}: member '{_named(member.name)}' is a link (to '{_named(member.linkname)}'); "
            "refusing the archive - use an archive of plain files"
        )
    if not (member.isfile() or member.isdir()):
        raise FerError(
            f"{label}: member '{_named(member.name)}' is not a regular file; refusing the archive"
        )
    _check_size(label, member.name, member.size)


def _check_member_name(label: str, name: str) -> None:
    """Refuse members that would land outside an extraction folder (absolute or `..`)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise FerError(
            f"{label}: member '{_named(name)}' would escape the target folder; refusing the archive"
        )


def _read_folder(root: Path, label: str, expected: str) -> Decoded:
    """An unpacked folder; its checksum covers every relative path and file content."""
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def open_member(name: str) -> BinaryIO:
        return _open_file(root / name)

    tree = hashlib.sha256()
    for name in names:
        with open_member(name) as file:
            tree.update(name.encode() + b"\0" + _sha256(file))
    digest = tree.hexdigest()
    _check_sha256(label, expected, digest)
    return _decode_tree(names, open_member, label, digest)


def _decode_tree(names: Sequence[str], open_member: Opener, label: str, digest: str) -> Decoded:
    """Files of an archive or folder: the Kaggle image layout, else a fer2013.csv inside."""
    places = {name: place for name in names if (place := _image_place(name))}
    if places:
        skipped = _skipped_images(names, places)
        return _decode_images(places, open_member, label, digest, skipped=skipped)
    csv_name = _pick_csv(names)
    if csv_name:
        with open_member(csv_name) as stream:
            return _decode_csv(stream, f"{label} member {_named(csv_name)}", digest)
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
    places: dict[str, tuple[int, int, str]],
    open_member: Opener,
    label: str,
    digest: str,
    skipped: int,
) -> Decoded:
    """Decode the Kaggle image files into `Images`, counting the ones that needed converting.

    What the images decompress to (file bytes and pixels) is bounded in all by TOTAL_LIMIT, so
    that many small files of large pictures cannot keep the decoder busy for hours.
    """
    pixels = np.empty((len(places), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    converted = decompressed = 0
    with warnings.catch_warnings():  # PIL warns from 89M pixels: ours refuses them in one message
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for row, name in enumerate(places):
            with open_member(name) as stream:
                data = stream.read(IMAGE_LIMIT + 1)
            if len(data) > IMAGE_LIMIT:
                raise _over_limit(f"{_image_label(label, name)} is", IMAGE_LIMIT)
            pixels[row], was_converted, size = _decode_image(label, name, data)
            converted += was_converted
            decompressed += len(data) + size
            if decompressed > TOTAL_LIMIT:
                raise _over_limit(f"{label}: its images decompress to", TOTAL_LIMIT)
    splits, labels, ids = zip(*places.values(), strict=True)
    images = Images(pixels, np.array(labels), np.array(splits), np.array(ids)).sorted()
    notes = [f"skipped {skipped} image files outside train|test/<emotion>/"] if skipped else []
    return Decoded(images, digest, converted, notes)


def _decode_image(label: str, name: str, data: bytes) -> tuple[np.ndarray, bool, int]:
    """Decode one image to uint8 48x48 grayscale; convert other sizes and modes (flagged).

    Also gives its number of pixels, checked against IMAGE_PIXEL_LIMIT before decoding them.
    """
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
            size = im.width * im.height
            if size > IMAGE_PIXEL_LIMIT:
                where = f"{_image_label(label, name)} ({im.width}x{im.height}) has"
                raise _over_limit(where, IMAGE_PIXEL_LIMIT, "pixels")
            im.load()
            converted = im.mode != "L" or im.size != (IMAGE_SIZE, IMAGE_SIZE)
            if im.mode != "L":
                im = im.convert("L")
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8), converted, size
    except Image.DecompressionBombError:  # PIL's own refusal, from 179M pixels
        raise _over_limit(f"{_image_label(label, name)} has", IMAGE_PIXEL_LIMIT, "pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = _pil_reason(exc)
        raise FerError(
            f"{_image_label(label, name)} is corrupt ({reason}); replace it or re-download"
        ) from None


def _image_label(label: str, name: str) -> str:
    """The subject of an image's refusal, built only when refusing."""
    return f"{label}: image {_named(name)}"


def _pil_reason(exc: Exception) -> str:
    """PIL's complaint, short and without its object reprs (`<_io.BytesIO object at 0x...>`)."""
    if isinstance(exc, UnidentifiedImageError):
        return f"not a {', '.join(IMAGE_FORMATS)} image"
    return f"{type(exc).__name__}: {_shown(str(exc))}"


def _decode_csv(stream: BinaryIO, label: str, digest: str) -> Decoded:
    """Decode the challenge CSV (`emotion,pixels,Usage`, columns in any order).

    The CSV has no file ids, so row ids are `f"{Usage}_{n}"` with `n` the 0-based row number
    within that Usage (e.g. the third PublicTest row is `PublicTest_2`): stable for a given file.
    The file is streamed; pixels are parsed one row at a time with numpy (about 2 s for the full
    35,887 rows).
    """
    lines = _csv_lines(stream, label)
    columns = _csv_columns(next(lines, (1, b""))[1], label)
    pixels, labels, splits = [], [], []
    for number, line in lines:
        if not line.strip():
            continue
        where = f"{label}: line {number}"
        cells = line.split(b",")
        if len(cells) != len(columns):
            raise FerError(
                f"{where}: {len(cells)} fields, expected {len(columns)} (emotion,pixels,Usage); "
                "fix the row or download the file again"
            )
        emotion, pixel_text, usage = (cells[columns[c]].strip().strip(b'"') for c in CSV_COLUMNS)
        labels.append(_csv_emotion(emotion, where))
        splits.append(_csv_split(usage, where))
        pixels.append(_csv_pixels(pixel_text, where))
    if not pixels:
        raise FerError(f"{label}: the CSV has a header but no rows; download it again")
    split_array = np.array(splits, np.int64)
    images = Images(
        np.stack(pixels), np.array(labels, np.int64), split_array, _csv_ids(split_array)
    ).sorted()
    return Decoded(images, digest)


def _csv_lines(stream: BinaryIO, label: str) -> Iterator[tuple[int, bytes]]:
    """Numbered lines of a CSV stream, without their line ends; refused past the CSV limits."""
    for number, line in enumerate(_split_lines(stream, label), start=1):
        _check_count(f"{label}: the CSV", number, "lines")
        if len(line) > CSV_LINE_LIMIT:
            raise _over_limit(f"{label}: line {number} is", CSV_LINE_LIMIT)
        yield number, line.rstrip(b"\r\n")


def _split_lines(stream: BinaryIO, label: str) -> Iterator[bytes]:
    """Lines with their ends (split like bytes.splitlines), read a block at a time.

    Memory holds a block and a line: a piece without its line end waits for the next block,
    unless it is already too long for a CSV line (it then comes out, to be refused).
    """
    size, rest = 0, b""
    while block := stream.read(BLOCK):
        size += len(block)
        if size > TOTAL_LIMIT:
            raise _over_limit(f"{label}: the CSV is", TOTAL_LIMIT)
        lines = (rest + block).splitlines(keepends=True)
        last = lines[-1]  # may end in the \r of a \r\n split across blocks: it waits too
        rest = lines.pop() if not last.endswith(b"\n") and len(last) <= CSV_LINE_LIMIT else b""
        yield from lines
    if rest:
        yield rest


def _csv_columns(header: bytes, label: str) -> dict[str, int]:
    """Column positions from the header; anything but emotion, pixels and Usage is refused."""
    names = [c.strip().strip('"') for c in header.decode("utf-8-sig", "replace").split(",")]
    if sorted(names) != sorted(CSV_COLUMNS):
        raise FerError(
            f"{label}: unknown CSV layout: header '{_shown(header)}', expected "
            f"{','.join(CSV_COLUMNS)!r} (the FER2013 challenge fer2013.csv)"
        )
    return {name: names.index(name) for name in CSV_COLUMNS}


def _csv_emotion(cell: bytes, where: str) -> int:
    """The normalised label of a CSV emotion code (0=angry ... 6=neutral)."""
    if len(cell) != 1 or not cell.isdigit() or int(cell) >= len(CSV_TO_LABEL):  # one digit
        codes = " ".join(f"{i}={name}" for i, name in enumerate(CSV_EMOTIONS))
        raise FerError(
            f"{where}: unknown emotion code '{_shown(cell)}', expected one of "
            f"{codes}; fix the row or download the file again"
        )
    return CSV_TO_LABEL[int(cell)]


def _csv_split(cell: bytes, where: str) -> int:
    """The split index of a Usage cell."""
    usage = cell.decode(errors="replace")
    if usage not in SPLITS:
        raise FerError(
            f"{where}: unknown Usage '{_shown(cell)}', expected {', '.join(SPLITS)}; fix the row "
            "or download the file again"
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
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def _csv_ids(splits: np.ndarray) -> np.ndarray:
    """`{Usage}_{n}`, n counting rows within each Usage in file order."""
    ids = np.empty(len(splits), dtype=object)
    for s, usage in enumerate(SPLITS):
        rows = np.flatnonzero(splits == s)
        ids[rows] = [f"{usage}_{n}" for n in range(len(rows))]
    return ids.astype(str)


def _first_line(head: bytes) -> bytes:
    """The first line of a file's head (so at most HEAD bytes), to recognise a CSV header."""
    return head.split(b"\n", 1)[0]
