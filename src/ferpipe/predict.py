"""Classify the faces in images and videos with a checkpoint written by the pipeline.

    python -m ferpipe.predict models/cnn.pt photo.jpg                # CSV on standard output
    ferpipe-predict models/cnn.pt photos/ clip.mp4 --json --out faces.jsonl
    ferpipe-predict models/cnn.pt clip.mp4 --annotate clip_faces.mp4 --timeline clip.png

INPUT: images (.bmp .jpeg .jpg .png .tif .tiff .webp), videos (.avi .mkv .mov .mp4 .webm), or
folders: their images and videos, sorted by name, not recursive (pass subfolders explicitly;
recursion would also pick up annotated copies written into a subfolder).

Faces: OpenCV's frontal-face Haar cascade (in the opencv-python-headless wheel, so it works
offline) on the gray image, scale step 1.1, 5 neighbours, faces of at least --min-face pixels
(48: smaller faces have less detail than the 48x48 training images, and most false detections
are small). Each box is square; it is cropped as it is, since the cascade's box frames a face
like FER2013 does (measured on the embedded sample pasted at 2x: median side ratio 1.02), and
resized to 48x48. An image of exactly 48x48 is taken to be a face crop and classified whole;
--no-detect classifies every image or frame whole (squeezed to 48x48).

Output: one row per face: file; frame and time (seconds; empty for images); the box x, y, w, h
in pixels of the input; the predicted emotion; p_<class>, the softmax probability of each class
of the checkpoint. CSV (the default) or JSON lines (--json), on standard output or in --out FILE.

--annotate OUT and --timeline OUT: with one INPUT that is a file, OUT is the file to write;
with a folder or several INPUTs, OUT is a folder into which go <name> (an image, annotated),
<stem>.mp4 (a video, annotated) and <stem>.timeline.png (a video's timeline). An annotated
image is written in OUT's format; an annotated video as .mp4 (mp4v) or .avi (MJPG), every frame
at the input's rate, showing the boxes of the last classified frame. A timeline (videos only)
plots the share of the faces predicted as each emotion in consecutive --window second windows,
one line per emotion, with its share over the whole video in the legend (seed 001, figure 11).

A bad input (unreadable, unsupported, undecodable, no face found) gets one `error:` line on
standard error and the others are still classified; the exit code is 2 (one `error:` line) only
when no face at all was classified, or for a MODEL that is not a pipeline checkpoint. Every file is written atomically:
nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
import torch

from ferpipe import models, plots, training
from ferpipe.dataset import atomic_path
from ferpipe.errors import FerError, exits_cleanly
from ferpipe.labels import IMAGE_SIZE

IMAGE_TYPES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
VIDEO_TYPES = (".avi", ".mkv", ".mov", ".mp4", ".webm")
FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}  # annotated video formats every OpenCV build writes
CASCADE = "haarcascade_frontalface_default.xml"
SCALE_FACTOR, MIN_NEIGHBOURS, MIN_FACE = 1.1, 5, 48
FRAMES_PER_BATCH = 16  # the faces of this many frames go through the model as one batch
COLUMNS = ("file", "frame", "time", "x", "y", "w", "h", "emotion")

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Face:
    """One face found in an image or frame: its box (x, y, w, h) and class probabilities."""

    box: Box
    probabilities: np.ndarray


@dataclass(frozen=True)
class Predictor:
    """A checkpoint's model and how faces are found: the cascade (None: classify whole images),
    the smallest face side in pixels, and every how many video frames to classify."""

    model: models.FerModel
    classes: tuple[str, ...]
    detector: cv2.CascadeClassifier | None
    min_face: int = MIN_FACE
    every: int = 1

    def boxes(self, gray: np.ndarray) -> list[Box]:
        """The faces' boxes, left to right; the whole image for a 48x48 crop or --no-detect."""
        height, width = gray.shape
        if self.detector is None or (height, width) == (IMAGE_SIZE, IMAGE_SIZE):
            return [(0, 0, width, height)]
        found = self.detector.detectMultiScale(
            gray, SCALE_FACTOR, MIN_NEIGHBOURS, minSize=(self.min_face, self.min_face)
        )
        return sorted(tuple(int(v) for v in box) for box in found)

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Softmax of the model's logits for uint8 (N, 48, 48) faces, in eval mode."""
        logits = training.predict(self.model, torch.from_numpy(crops), 256, torch.device("cpu"))
        return torch.softmax(logits, 1).numpy()

    def faces(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, list[Face] | None]]:
        """Each BGR frame with its faces (None for a frame that `every` skips); the faces of
        FRAMES_PER_BATCH frames are classified together."""
        numbered = enumerate(frames)
        while chunk := list(itertools.islice(numbered, FRAMES_PER_BATCH)):
            grays = {
                i: cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for i, f in chunk if i % self.every == 0
            }
            boxes = {i: self.boxes(gray) for i, gray in grays.items()}
            crops = [crop(grays[i], box) for i, found in boxes.items() for box in found]
            scores = iter(self.probabilities(np.stack(crops)) if crops else ())
            for i, frame in chunk:
                faces = [Face(b, next(scores)) for b in boxes[i]] if i in boxes else None
                yield frame, faces


def crop(gray: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels as a uint8 48x48 face (area-averaged when shrunk)."""
    x, y, w, h = box
    face = gray[y : y + h, x : x + w]
    if face.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return face
    shrink = w >= IMAGE_SIZE and h >= IMAGE_SIZE
    method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(face, (IMAGE_SIZE, IMAGE_SIZE), interpolation=method)


def detector() -> cv2.CascadeClassifier:
    """The frontal-face Haar cascade shipped with OpenCV."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():
        raise FerError(f"OpenCV has no {CASCADE}; install opencv-python-headless 4.x")
    return cascade


def expand(path: Path) -> list[Path]:
    """The files an INPUT names: itself, or a folder's images and videos (sorted, not recursive)."""
    if not path.is_dir():
        return [path]
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_TYPES + VIDEO_TYPES)
    if not found:
        raise FerError(f"{path}: a folder with no images or videos in it")
    return found


def is_video(path: Path) -> bool:
    """Whether `path` is a video (else an image); one line for a missing or unsupported file."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FerError(f"{path}: not found")
    if suffix not in IMAGE_TYPES + VIDEO_TYPES:
        raise FerError(
            f"{path}: unsupported file type {suffix or '(none)'}; use an image "
            f"({' '.join(IMAGE_TYPES)}) or a video ({' '.join(VIDEO_TYPES)})"
        )
    return suffix in VIDEO_TYPES


@dataclass(frozen=True)
class Job:
    """An input file and where its annotated copy and timeline go (None: not written)."""

    path: Path
    annotate: Path | None
    timeline: Path | None


def jobs(
    files: list[Path], single: bool, annotate: Path | None, timeline: Path | None
) -> list[Job]:
    """Each file's outputs: OUT itself for a single file, else inside the folder OUT."""
    for out in (annotate, timeline):
        if out is not None and not single and out.exists() and not out.is_dir():
            raise FerError(f"{out}: a file; with a folder or several inputs, OUT is a folder")
    planned = []
    for path in files:
        video = path.suffix.lower() in VIDEO_TYPES
        name = f"{path.stem}.mp4" if video else path.name
        drawn = annotate if single or annotate is None else annotate / name
        plot = timeline if single or timeline is None else timeline / f"{path.stem}.timeline.png"
        if single and drawn is not None:
            allowed = tuple(FOURCC) if video else IMAGE_TYPES
            if drawn.suffix.lower() not in allowed:
                raise FerError(f"--annotate {drawn}: use a file ending in {' '.join(allowed)}")
        planned.append(Job(path, drawn, plot if video else None))
    outputs = [p for job in planned for p in (job.annotate, job.timeline) if p is not None]
    inputs = {p.resolve() for p in files}
    clash = next((p for p in outputs if p.resolve() in inputs or outputs.count(p) > 1), None)
    if clash is not None:
        raise FerError(f"{clash}: would be written twice, or over an input; choose another OUT")
    return planned


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """One clear line naming `path` when it cannot be written (a read-only or missing place)."""
    try:
        yield
    except OSError as exc:
        raise FerError(f"{path}: cannot be written ({exc.strerror or exc})") from None


def draw(frame: np.ndarray, faces: list[Face], classes: tuple[str, ...]) -> np.ndarray:
    """A copy of the BGR frame with each face's box and its most probable emotion."""
    out = frame.copy()
    for face in faces:
        x, y, w, h = face.box
        best = int(face.probabilities.argmax())
        label = f"{classes[best]} {face.probabilities[best]:.0%}"
        scale = max(0.4, w / 160)
        thick = max(1, round(w / 100))
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = max(y - th - base - 2, 0)
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 255, 0), thick)
        cv2.rectangle(out, (x, top), (x + tw + 4, top + th + base + 2), (0, 255, 0), cv2.FILLED)
        cv2.putText(
            out, label, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick
        )
    return out


def rows(
    path: Path, classes: tuple[str, ...], found: Iterable[tuple[int | None, float | None, Face]]
) -> list[dict[str, Any]]:
    """Output rows of `found` (frame index, time in seconds, face); None for an image's."""
    return [
        {
            "file": str(path),
            "frame": index,
            "time": None if time is None else round(time, 3),
            **dict(zip("xywh", face.box, strict=True)),
            "emotion": classes[int(face.probabilities.argmax())],
            **{
                f"p_{c}": round(float(p), 6)
                for c, p in zip(classes, face.probabilities, strict=True)
            },
        }
        for index, time, face in found
    ]


def image_rows(predictor: Predictor, job: Job) -> list[dict[str, Any]]:
    """Classify the faces of one image; write its annotated copy."""
    image = cv2.imread(str(job.path), cv2.IMREAD_COLOR)
    if image is None:
        raise FerError(f"{job.path}: cannot be read as an image (damaged, or not an image)")
    _, faces = next(predictor.faces([image]))
    if not faces:
        raise FerError(
            f"{job.path}: no face found (frontal faces of at least {predictor.min_face} px); "
            "--no-detect classifies the whole image"
        )
    if job.annotate is not None:
        _, encoded = cv2.imencode(job.annotate.suffix, draw(image, faces, predictor.classes))
        with writing(job.annotate), atomic_path(job.annotate) as tmp:
            tmp.write_bytes(encoded.tobytes())
    return rows(job.path, predictor.classes, ((None, None, face) for face in faces))


def frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """The frames of an opened video, until it ends or stops decoding."""
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def video_rows(predictor: Predictor, job: Job, window: float) -> list[dict[str, Any]]:
    """Classify the faces of every `every`th frame of a video; write its annotated copy (every
    frame, with the last classified frame's boxes) and its timeline."""
    capture = cv2.VideoCapture(str(job.path))
    if not capture.isOpened():
        raise FerError(f"{job.path}: cannot be decoded as a video (damaged, or not a video)")
    rate = capture.get(cv2.CAP_PROP_FPS)
    fps = rate if np.isfinite(rate) and rate > 0 else 25.0
    found: list[tuple[int, float, Face]] = []
    index = -1  # the last frame decoded
    with annotated_video(job.annotate, fps) as write:
        shown: list[Face] = []
        for index, (frame, faces) in enumerate(predictor.faces(frames(capture))):
            found += [(index, index / fps, face) for face in faces or ()]
            if write is not None:
                shown = shown if faces is None else faces
                write(draw(frame, shown, predictor.classes))
        capture.release()
        if index < 0:
            raise FerError(f"{job.path}: no frame could be decoded (damaged, or an unknown codec)")
        if not found:
            raise FerError(
                f"{job.path}: no face found in {len(range(0, index + 1, predictor.every))} frames "
                f"(frontal faces of at least {predictor.min_face} px)"
            )
        result = rows(job.path, predictor.classes, found)
        if job.timeline is not None:
            timeline_png(result, predictor.classes, window, job.path.name, job.timeline)
    return result


@contextmanager
def annotated_video(path: Path | None, fps: float) -> Iterator[Callable[[np.ndarray], None] | None]:
    """A function writing frames to the video `path` (None when `path` is), put in place only
    if the block succeeds. OpenCV picks the container by the name's extension, so the frames go
    to a temporary name ending like `path`, moved onto atomic_path's temporary file at the end."""
    if path is None:
        yield None
        return
    writer: list[cv2.VideoWriter] = []  # opened at the first frame, which gives the size
    with writing(path), atomic_path(path) as tmp:
        video = tmp.with_name(tmp.name + path.suffix)

        def write(frame: np.ndarray) -> None:
            if not writer:
                size = frame.shape[1], frame.shape[0]
                fourcc = cv2.VideoWriter_fourcc(*FOURCC[path.suffix.lower()])
                writer.append(cv2.VideoWriter(str(video), fourcc, fps, size))
                if not writer[0].isOpened():
                    raise FerError(f"{path}: OpenCV cannot write this video")
            writer[0].write(frame)

        try:
            yield write
            if writer:
                writer[0].release()
                os.replace(video, tmp)
        finally:
            for opened_writer in writer:
                opened_writer.release()
            video.unlink(missing_ok=True)


def timeline_png(
    found: list[dict[str, Any]], classes: tuple[str, ...], window: float, title: str, path: Path
) -> None:
    """Share of the faces predicted as each emotion per `window` seconds, one line per emotion;
    a window without faces is a gap."""
    window_of = np.array([int(row["time"] // window) for row in found])
    predicted = np.array([classes.index(row["emotion"]) for row in found])
    counts = np.zeros((window_of.max() + 1, len(classes)))
    np.add.at(counts, (window_of, predicted), 1)
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    overall = counts.sum(0) / counts.sum()
    centres = (np.arange(len(counts)) + 0.5) * window
    fig, ax = plots.plt.subplots(figsize=(8, 4))
    for c, name in enumerate(classes):
        ax.plot(centres, share[:, c], marker="o", markersize=3, label=f"{name} ({overall[c]:.0%})")
    ax.set(xlabel="time (s)", ylabel=f"share of faces per {window:g} s window", ylim=(-0.02, 1.02))
    ax.set_title(f"{title}: predicted emotions over time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    with writing(path):
        plots.save_png(fig, path)


class Table:
    """Rows to a text stream: CSV with its header before the first row, or JSON lines."""

    def __init__(self, stream: TextIO, classes: tuple[str, ...], json_lines: bool):
        self.stream, self.json_lines, self.count = stream, json_lines, 0
        columns = [*COLUMNS, *(f"p_{c}" for c in classes)]
        self.csv = csv.DictWriter(stream, columns, lineterminator="\n")

    def write(self, found: list[dict[str, Any]]) -> None:
        if not self.json_lines and not self.count and found:
            self.csv.writeheader()
        for row in found:
            if self.json_lines:
                self.stream.write(json.dumps(row) + "\n")
            else:
                self.csv.writerow(row)
        self.count += len(found)
        self.stream.flush()


@contextmanager
def opened(out: Path | None) -> Iterator[TextIO]:
    """Standard output, or a new file `out` put in place only if the block succeeds."""
    if out is None:
        try:
            yield sys.stdout
        except BrokenPipeError:  # the reader stopped (`| head`): end quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
            raise SystemExit(141) from None  # the shell's code for a write to a closed pipe
        return
    with writing(out), atomic_path(out) as tmp, open(tmp, "w", newline="") as stream:
        yield stream


def classify(predictor: Predictor, planned: list[Job], table: Table, window: float) -> int:
    """Classify every job's faces into `table`, one error line for each bad input; returns how
    many files had faces classified."""
    done = 0
    for job in planned:
        try:
            video = is_video(job.path)
            table.write(video_rows(predictor, job, window) if video else image_rows(predictor, job))
            done += 1
        except FerError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
    return done


def positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` above zero."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} is not above zero")
        return value

    parse.__name__ = kind.__name__  # argparse's message for a non-number: "invalid int value"
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ferpipe-predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        type=Path,
        metavar="MODEL",
        help="checkpoint written by the pipeline (models/cnn.pt)",
    )
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image, video or folder")
    p.add_argument("--json", action="store_true", help="JSON lines instead of CSV")
    p.add_argument("--out", type=Path, metavar="FILE", help="write the rows here, not to stdout")
    p.add_argument("--annotate", type=Path, metavar="OUT", help="annotated image or video")
    p.add_argument("--timeline", type=Path, metavar="OUT", help="PNG: emotions over a video")
    p.add_argument("--window", type=positive(float), default=1.0, metavar="SECONDS",
                   help="time window of the timeline (default 1)")  # fmt: skip
    p.add_argument("--every", type=positive(int), default=1, metavar="N",
                   help="classify every Nth video frame (default 1: all)")  # fmt: skip
    p.add_argument("--min-face", type=positive(int), default=MIN_FACE, metavar="PX",
                   help=f"smallest face side detected, in pixels (default {MIN_FACE})")  # fmt: skip
    p.add_argument("--no-detect", action="store_true",
                   help="no face detection: classify each image or frame whole")  # fmt: skip
    return p


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own lines: our one suffices
    model, checkpoint = models.load(args.model)
    classes = tuple(checkpoint["classes"])
    cascade = None if args.no_detect else detector()
    predictor = Predictor(model, classes, cascade, args.min_face, args.every)
    files: list[Path] = []
    for path in args.inputs:
        try:
            files += expand(path)
        except FerError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
    single = len(args.inputs) == 1 and not args.inputs[0].is_dir()
    planned = jobs(files, single, args.annotate, args.timeline)
    with opened(args.out) as stream:
        table = Table(stream, classes, args.json)
        done = classify(predictor, planned, table, args.window)
        if not table.count:
            raise FerError(f"no face was classified in any of the {len(files)} input files")
    where = f" to {args.out}" if args.out else ""
    print(f"{table.count} faces from {done} of {len(files)} files{where}", file=sys.stderr)


if __name__ == "__main__":
    main()
