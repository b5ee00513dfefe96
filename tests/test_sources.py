"""ferpipe.sources: every FER2013 form decodes to the same bytes; bad input fails clearly."""

from __future__ import annotations

import builtins
import gzip
import hashlib
import http.server
import os
import shutil
import sys
import tarfile
import tempfile
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ferpipe import dataset, sources
from ferpipe.errors import FerError
from tests.source_forms import (
    Face,
    csv_bytes,
    expected_images,
    kaggle_members,
    png,
    tiny_faces,
    write_folder,
    write_tar_gz,
    write_zip,
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved_bytes(images: dataset.Images, tmp_path: Path) -> bytes:
    out = tmp_path / "saved.npz"
    dataset.save(images, out)
    return out.read_bytes()


# --- fixtures: the tiny dataset in every form, a local web server, a fake Kaggle client ----


@pytest.fixture(scope="module")
def faces() -> list[Face]:
    return tiny_faces(per_emotion=3, seed=0)


@pytest.fixture(scope="module")
def forms(faces: list[Face], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny dataset in every file form."""
    root = tmp_path_factory.mktemp("forms")
    write_zip(kaggle_members(faces), root / "kaggle.zip")
    write_zip(kaggle_members(faces, prefix="fer2013/"), root / "kaggle_prefixed.zip")
    write_folder(kaggle_members(faces), root / "kaggle_folder")
    (root / "fer2013.csv").write_bytes(csv_bytes(faces))
    write_tar_gz({"fer2013/fer2013.csv": csv_bytes(faces)}, root / "fer2013.tar.gz")
    (root / "fer2013.tar").write_bytes(gzip.decompress((root / "fer2013.tar.gz").read_bytes()))
    write_tar_gz(kaggle_members(faces), root / "kaggle.tar.gz")
    (root / "fer2013.csv.gz").write_bytes(gzip.compress(csv_bytes(faces)))
    write_zip({"fer2013.csv": csv_bytes(faces)}, root / "csv_in.zip")
    shutil.copy(root / "kaggle.zip", root / "misleading.csv")  # a zip despite its name
    return root


class Server:
    """A local http.server in a background thread serving `root`; records request paths."""

    def __init__(self, root: Path) -> None:
        requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                requests.append(self.path)
                if self.path == "/cut-short.zip":  # promises 1000 bytes, sends 10, hangs up
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b"PK\x03\x04" + b"\0" * 6)
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.requests = requests
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(forms: Path) -> Iterator[Server]:
    s = Server(forms)
    yield s
    s.close()


class FakeKaggleApi:
    """Stands in for `kaggle.api`: 'downloads' a local archive as `<dataset>.zip`."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.calls: list[tuple] = []

    def authenticate(self) -> None:
        self.calls.append(("authenticate",))

    def dataset_download_files(self, dataset: str, path: str, unzip: bool) -> None:
        self.calls.append(("dataset_download_files", dataset, path, unzip))
        shutil.copy(self.archive, Path(path) / f"{dataset.split('/')[1]}.zip")


@pytest.fixture
def fake_kaggle(forms: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKaggleApi:
    api = FakeKaggleApi(forms / "kaggle.zip")
    monkeypatch.setitem(sys.modules, "kaggle", types.SimpleNamespace(api=api))
    return api


# --- every form gives the same bytes --------------------------------------------------------

LOCAL_FORMS = [
    "kaggle.zip",
    "kaggle_prefixed.zip",
    "kaggle_folder",
    "fer2013.csv",
    "fer2013.tar.gz",
    "fer2013.tar",
    "kaggle.tar.gz",
    "fer2013.csv.gz",
    "csv_in.zip",
    "misleading.csv",
]
URL_FORMS = ["kaggle.zip", "fer2013.csv", "fer2013.tar.gz", "misleading.csv"]


@pytest.mark.parametrize("name", LOCAL_FORMS)
def test_every_local_form_gives_identical_bytes(
    name: str, forms: Path, faces: list[Face], tmp_path: Path
) -> None:
    decoded = sources.read_source(str(forms / name))
    assert saved_bytes(decoded.images, tmp_path) == saved_bytes(expected_images(faces), tmp_path)
    assert len(decoded.images) == 63
    assert decoded.converted == 0
    if name != "kaggle_folder":
        assert decoded.source_sha256 == sha256_of(forms / name)


@pytest.mark.parametrize("name", URL_FORMS)
def test_every_url_form_gives_identical_bytes(
    name: str, forms: Path, faces: list[Face], server: Server, tmp_path: Path
) -> None:
    digest = sha256_of(forms / name)
    workdir = tmp_path / "downloads"
    decoded = sources.read_source(f"{server.url}/{name}", sha256=digest.upper(), workdir=workdir)
    assert saved_bytes(decoded.images, tmp_path) == saved_bytes(expected_images(faces), tmp_path)
    assert decoded.source_sha256 == digest
    assert [p.name for p in workdir.iterdir()] == [name]  # the download is kept in workdir


def test_kaggle_source_gives_identical_bytes(
    fake_kaggle: FakeKaggleApi, faces: list[Face], tmp_path: Path
) -> None:
    workdir = tmp_path / "kaggle"
    decoded = sources.read_source("kaggle:msambare/fer2013", workdir=workdir)
    assert saved_bytes(decoded.images, tmp_path) == saved_bytes(expected_images(faces), tmp_path)
    assert fake_kaggle.calls == [
        ("authenticate",),
        ("dataset_download_files", "msambare/fer2013", str(workdir), False),
    ]
    assert decoded.source_sha256 == sha256_of(workdir / "fer2013.zip")


def test_default_workdir_is_a_temporary_folder_removed_afterwards(
    forms: Path, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sources.read_source(f"{server.url}/fer2013.csv", sha256=sha256_of(forms / "fer2013.csv"))
    assert list(tmp_path.iterdir()) == []


def test_csv_ids_count_rows_within_each_usage(tmp_path: Path) -> None:
    zero, full = " ".join(["0"] * 2304), " ".join(["255"] * 2304)
    rows = [
        "emotion,pixels,Usage",
        f"3,{zero},PublicTest",
        f"6,{zero},Training",
        f"0,{full},PublicTest",
        f"4,{full},Training",
    ]
    path = tmp_path / "fer2013.csv"
    path.write_text("\r\n".join(rows) + "\r\n")
    images = sources.read_source(str(path)).images
    assert images.ids.tolist() == ["Training_0", "Training_1", "PublicTest_0", "PublicTest_1"]
    # CSV codes 6=neutral, 4=sad, 3=happy, 0=angry -> indices into EMOTIONS
    assert images.labels.tolist() == [4, 5, 3, 0]
    assert images.pixels[:, 0, 0].tolist() == [0, 255, 0, 255]


def test_csv_columns_may_come_in_another_order(faces: list[Face], tmp_path: Path) -> None:
    lines = csv_bytes(faces).decode().splitlines()
    swapped = ["emotion,Usage,pixels"] + [
        ",".join((c[0], c[2], c[1])) for c in (line.split(",") for line in lines[1:])
    ]
    path = tmp_path / "reordered.csv"
    path.write_text("\n".join(swapped))
    decoded = sources.read_source(str(path))
    assert saved_bytes(decoded.images, tmp_path) == saved_bytes(expected_images(faces), tmp_path)


# --- images that are not 48x48 grayscale are converted and counted --------------------------


def test_images_not_48x48_grayscale_are_converted_and_counted(tmp_path: Path) -> None:
    gray = np.full((48, 48), 100, np.uint8)
    members = {
        "train/happy/Training_0.png": png(gray),  # already fine
        "train/happy/Training_1.png": png(np.full((96, 96), 100, np.uint8), mode="RGB"),
        "train/happy/Training_2.png": png(np.full((64, 64), 100, np.uint8)),
        "test/sad/PublicTest_0.png": png(gray, mode="RGB"),
    }
    decoded = sources.read_source(str(write_zip(members, tmp_path / "mixed.zip")))
    assert decoded.converted == 3
    assert decoded.images.pixels.shape == (4, 48, 48)
    assert (decoded.images.pixels == 100).all()


# --- bad input: one FerError naming the file, the problem and the fix -----------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FerError, match="no such file or folder; set data.source"):
        sources.read_source(str(tmp_path / "nowhere.zip"))


@pytest.fixture
def refuse_open(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make open() refuse one path (tests run as root, where chmod 000 does not stop reading)."""
    real_open = builtins.open

    def refuse(target: Path) -> None:
        def refusing_open(file: object, *args: object, **kwargs: object) -> object:
            if Path(str(file)) == target:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(builtins, "open", refusing_open)

    return refuse


def test_unreadable_file(forms: Path, refuse_open: Callable[[Path], None]) -> None:
    refuse_open(forms / "fer2013.csv")
    with pytest.raises(FerError, match=r"fer2013\.csv: cannot be read \(Permission denied\)"):
        sources.read_source(str(forms / "fer2013.csv"))


def test_unreadable_image_in_folder(forms: Path, refuse_open: Callable[[Path], None]) -> None:
    image = forms / "kaggle_folder" / "test" / "sad" / "PublicTest_16.png"
    refuse_open(image)
    with pytest.raises(FerError, match=f"{image}: cannot be read \\(Permission denied\\)"):
        sources.read_source(str(forms / "kaggle_folder"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_by_permissions(forms: Path, tmp_path: Path) -> None:
    path = tmp_path / "locked.zip"
    shutil.copy(forms / "kaggle.zip", path)
    path.chmod(0)
    with pytest.raises(FerError, match=r"locked\.zip: cannot be read \(Permission denied\)"):
        sources.read_source(str(path))


def test_truncated_zip(forms: Path, tmp_path: Path) -> None:
    data = (forms / "kaggle.zip").read_bytes()
    path = tmp_path / "truncated.zip"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FerError, match=r"truncated\.zip: corrupt or truncated zip archive .*again"):
        sources.read_source(str(path))


def test_corrupt_zip_member(faces: list[Face], tmp_path: Path) -> None:
    path = write_zip(kaggle_members(faces[:1]), tmp_path / "flipped.zip", stored=True)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the stored PNG: the CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(FerError, match=r"member train/angry/Training_0\.png is corrupt .*CRC"):
        sources.read_source(str(path))


def test_corrupt_image_in_zip(faces: list[Face], tmp_path: Path) -> None:
    members = kaggle_members(faces[:2])
    members["train/angry/Training_1.png"] = b"\x89PNG\r\n\x1a\n not really"
    path = write_zip(members, tmp_path / "bad_image.zip")
    with pytest.raises(
        FerError, match=r"image train/angry/Training_1\.png is corrupt .*re-download"
    ):
        sources.read_source(str(path))


def test_zip_without_train_and_test_folders(faces: list[Face], tmp_path: Path) -> None:
    path = write_zip({"photos/face.png": png(faces[0].pixels)}, tmp_path / "photos.zip")
    with pytest.raises(FerError, match=r"photos\.zip: unknown layout; expected train/<emotion>"):
        sources.read_source(str(path))


def test_csv_with_wrong_header(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("label,image,split\n0,1 2 3,Training\n")
    with pytest.raises(FerError, match="unknown CSV layout: header 'label,image,split', expected"):
        sources.read_source(str(path))


def test_file_of_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text("<!DOCTYPE html><p>Not found</p>")
    with pytest.raises(FerError, match="unknown data format \\(starts with '<!DOCTYPE html>"):
        sources.read_source(str(path))


PIXELS = " ".join(["7"] * 2304)
CSV_ROW_ERRORS = {
    "short": (f"0,{' '.join(['7'] * 2303)},Training", "line 3: 2303 pixel values, expected 2304"),
    "long": (f"0,{PIXELS} 7,Training", "line 3: 2305 pixel values, expected 2304"),
    "too big": (f"0,256 {PIXELS[2:]},Training", "line 3: pixel value 256 is outside 0..255"),
    "negative": (f"0,{PIXELS[:-1]}-1,Training", "line 3: pixel value -1 is outside 0..255"),
    "not numbers": (f"0,{PIXELS[:-1]}x,Training", "line 3: pixels are not space-separated"),
    "emotion 7": (f"7,{PIXELS},Training", "line 3: unknown emotion code '7', expected one of 0="),
    "emotion text": (f"happy,{PIXELS},Training", "line 3: unknown emotion code 'happy'"),
    "usage": (f"0,{PIXELS},Validation", "line 3: unknown Usage 'Validation', expected Training"),
    "fields": (f"0,{PIXELS},Training,extra", "line 3: 4 fields, expected 3"),
}


@pytest.mark.parametrize("case", CSV_ROW_ERRORS)
def test_bad_csv_row_is_named(case: str, tmp_path: Path) -> None:
    row, message = CSV_ROW_ERRORS[case]
    path = tmp_path / "fer2013.csv"
    path.write_text(f"emotion,pixels,Usage\n0,{PIXELS},Training\n{row}\n")
    with pytest.raises(FerError, match=f"fer2013.csv: {message}") as error:
        sources.read_source(str(path))
    assert "fix the row or download the file again" in str(error.value)


@pytest.mark.parametrize("name", ["../evil.png", "/tmp/evil.png", "train/../../evil.png"])
def test_zip_member_escaping_the_folder_is_refused_before_reading(
    name: str, faces: list[Face], tmp_path: Path
) -> None:
    # A corrupt image comes first: had anything been read, that error would come out instead.
    members = {"train/angry/Training_0.png": b"corrupt", **kaggle_members(faces[1:3]), name: b""}
    path = write_zip(members, tmp_path / "evil.zip")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(FerError, match=f"member '{name}' would escape the target folder"):
        sources.read_source(str(path))
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize(
    ("members", "links", "message"),
    [
        ({"../fer2013.csv": b"x"}, {}, "member '../fer2013.csv' would escape the target folder"),
        ({"/fer2013.csv": b"x"}, {}, "member '/fer2013.csv' would escape the target folder"),
        ({}, {"fer2013/fer2013.csv": tarfile.SYMTYPE}, "member 'fer2013/fer2013.csv' is a link"),
        ({}, {"fer2013.csv": tarfile.LNKTYPE}, "member 'fer2013.csv' is a link"),
    ],
)
def test_unsafe_tar_members_are_refused(
    members: dict[str, bytes], links: dict[str, bytes], message: str, tmp_path: Path
) -> None:
    path = write_tar_gz(members, tmp_path / "fer2013.tar.gz", links)
    with pytest.raises(FerError, match=f"fer2013.tar.gz: {message}"):
        sources.read_source(str(path))


def test_truncated_tar_gz(forms: Path, tmp_path: Path) -> None:
    data = (forms / "fer2013.tar.gz").read_bytes()
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FerError, match=r"cut\.tar\.gz: corrupt or truncated gzip file"):
        sources.read_source(str(path))


def test_checksum_mismatch_of_a_local_file(forms: Path) -> None:
    actual = sha256_of(forms / "kaggle.zip")
    with pytest.raises(FerError, match=f"SHA-256 mismatch: expected {'0' * 64}, got {actual}"):
        sources.read_source(str(forms / "kaggle.zip"), sha256="0" * 64)


def test_malformed_checksum(forms: Path) -> None:
    with pytest.raises(FerError, match="data.sha256 'abc' is not a SHA-256 digest"):
        sources.read_source(str(forms / "kaggle.zip"), sha256="abc")


# --- URL failures leave no file behind ------------------------------------------------------


def test_url_without_checksum_is_refused_before_downloading(server: Server, tmp_path: Path) -> None:
    requests = len(server.requests)
    with pytest.raises(FerError, match="needs its expected SHA-256; set data.sha256"):
        sources.read_source(f"{server.url}/kaggle.zip", workdir=tmp_path)
    assert len(server.requests) == requests
    assert list(tmp_path.iterdir()) == []


def test_url_checksum_mismatch_names_both_digests(
    forms: Path, server: Server, tmp_path: Path
) -> None:
    actual = sha256_of(forms / "kaggle.zip")
    with pytest.raises(FerError, match=f"SHA-256 mismatch: expected {'1' * 64}, got {actual}"):
        sources.read_source(f"{server.url}/kaggle.zip", sha256="1" * 64, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_url_not_found(server: Server, tmp_path: Path) -> None:
    with pytest.raises(FerError, match=r"missing\.zip: download failed \(HTTP 404"):
        sources.read_source(f"{server.url}/missing.zip", sha256="1" * 64, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_cut_short_leaves_no_half_file(server: Server, tmp_path: Path) -> None:
    with pytest.raises(
        FerError, match=r"cut-short\.zip: download was cut short \(10 of 1000 bytes\)"
    ):
        sources.read_source(f"{server.url}/cut-short.zip", sha256="1" * 64, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_past_the_limit_leaves_no_file(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "TOTAL_LIMIT", 1000)
    with pytest.raises(
        FerError, match=r"kaggle\.zip: the download is over the limit of 1,000 bytes"
    ):
        sources.read_source(f"{server.url}/kaggle.zip", sha256="1" * 64, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- Kaggle client failures -----------------------------------------------------------------


def test_kaggle_client_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kaggle", None)  # makes `import kaggle` fail
    with pytest.raises(FerError, match="Kaggle client is not installed; pip install kaggle, and"):
        sources.read_source("kaggle:msambare/fer2013")


def test_kaggle_authentication_failure(
    fake_kaggle: FakeKaggleApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_token() -> None:
        raise OSError("Could not find kaggle.json")

    monkeypatch.setattr(fake_kaggle, "authenticate", no_token)
    with pytest.raises(FerError, match=r"authentication failed \(Could not find kaggle.json\)"):
        sources.read_source("kaggle:msambare/fer2013")
    assert fake_kaggle.calls == []


def test_kaggle_dataset_name_is_checked(fake_kaggle: FakeKaggleApi) -> None:
    with pytest.raises(FerError, match="expected kaggle:<owner>/<dataset>"):
        sources.read_source("kaggle:fer2013")
    assert fake_kaggle.calls == []


# --- the real archive -----------------------------------------------------------------------


def test_full_archive_counts(decoded_archive: sources.Decoded) -> None:
    """`decoded_archive` (conftest) skips, saying why, when ../shared/data/fer2013/fer2013.zip
    is absent."""
    decoded = decoded_archive
    counts = dataset.counts(decoded.images)
    order = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    train = [counts["Training"][e] for e in order]
    test = [counts["PublicTest"][e] + counts["PrivateTest"][e] for e in order]
    assert train == [3995, 436, 4097, 7215, 4965, 4830, 3171]
    assert test == [958, 111, 1024, 1774, 1233, 1247, 831]
    assert len(decoded.images) == 35887
    assert decoded.converted == 0
