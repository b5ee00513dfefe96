"""Prediction on new images and videos: faces found where real FER2013 faces were pasted, one row
per face and frame, the model's own probabilities, the outputs people open, and one line for each
bad input while the others are still classified."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ferpipe import models, predict

from .conftest import ROOT, sample_faces

CLASSES = ("angry", "fear", "happy", "sad")
# Two sample faces the Haar cascade finds when pasted at 2x (96 px) on plain backgrounds of any
# gray level; about a quarter of FER2013's faces (turned, cut or occluded) it finds at no scale.
HAPPY, ANGRY = "test/happy/PrivateTest_32570813.jpg", "test/angry/PrivateTest_17952984.jpg"
SIDE = 96
# Where the faces are pasted: the two-face image (colour, 320x200) and the video's faces.
IMAGE_BOXES = ((20, 40, SIDE, SIDE), (190, 70, SIDE, SIDE))
VIDEO_BOXES = ((30, 60, SIDE, SIDE), (190, 70, SIDE, SIDE))
FPS, FRAMES = 10, 20  # the video: the happy face alone in frames 0-9, both faces in 10-19


def sample_face(name: str) -> np.ndarray:
    return sample_faces(name)[0]


def paste(canvas: np.ndarray, face: np.ndarray, box: tuple[int, int, int, int]) -> None:
    x, y, w, h = box
    canvas[y : y + h, x : x + w] = cv2.resize(face, (w, h), interpolation=cv2.INTER_LINEAR)[
        ..., None
    ]


def overlap(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every kind of input, good and bad, and a small pipeline checkpoint (block_cnn, tiny)."""
    root = tmp_path_factory.mktemp("inputs")
    happy, angry = sample_face(HAPPY), sample_face(ANGRY)
    two = np.full((200, 320, 3), (150, 110, 60), np.uint8)  # a blue background
    paste(two, happy, IMAGE_BOXES[0])
    paste(two, angry, IMAGE_BOXES[1])
    cv2.imwrite(str(root / "two.png"), two)
    cv2.imwrite(str(root / "crop.png"), happy)
    cv2.imwrite(str(root / "blank.jpg"), np.full((200, 200), 128, np.uint8))
    video = cv2.VideoWriter(
        str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (320, 240)
    )
    for i in range(FRAMES):
        frame = np.full((240, 320, 3), 100, np.uint8)
        paste(frame, happy, VIDEO_BOXES[0])
        if i >= FRAMES // 2:
            paste(frame, angry, VIDEO_BOXES[1])
        video.write(frame)
    video.release()
    (root / "damaged.png").write_bytes((root / "two.png").read_bytes()[:300])
    (root / "text.jpg").write_text("not an image\n")
    (root / "text.mp4").write_text("not a video\n")
    (root / "notes.txt").write_text("not an input\n")
    torch.manual_seed(0)
    model = models.build("block_cnn", len(CLASSES), **models.architecture("block_cnn").tiny)
    models.save(model, CLASSES, root / "model.pt")
    return root


@pytest.fixture(scope="module")
def predictor(files) -> predict.Predictor:
    model, checkpoint = models.load(files / "model.pt")
    return predict.Predictor(model.eval(), tuple(checkpoint["classes"]), predict.detector())


def run(files: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "ferpipe.predict", str(files / "model.pt"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=files, timeout=120)


def softmax(model: models.FerModel, crops: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model.eval()(model.preprocess(torch.from_numpy(crops))), 1).numpy()


def test_the_faces_pasted_in_an_image_are_found_and_classified(files, predictor):
    rows = predict.image_rows(predictor, predict.Job(files / "two.png", None, None))
    assert len(rows) == 2
    for row, pasted in zip(rows, IMAGE_BOXES, strict=True):
        assert overlap((row["x"], row["y"], row["w"], row["h"]), pasted) > 0.6
        assert (row["file"], row["frame"], row["time"]) == (str(files / "two.png"), None, None)
        probabilities = [row[f"p_{c}"] for c in CLASSES]
        assert sum(probabilities) == pytest.approx(1, abs=1e-5)
        assert row["emotion"] == CLASSES[int(np.argmax(probabilities))]


def test_a_48x48_crop_is_classified_whole_with_the_models_own_softmax(files, predictor):
    (row,) = predict.image_rows(predictor, predict.Job(files / "crop.png", None, None))
    assert (row["x"], row["y"], row["w"], row["h"]) == (0, 0, 48, 48)
    expected = softmax(predictor.model, sample_face(HAPPY)[None])[0]
    np.testing.assert_allclose([row[f"p_{c}"] for c in CLASSES], expected, atol=1e-6)


def test_no_detect_classifies_the_whole_image(files, predictor):
    whole = predict.Predictor(predictor.model, CLASSES, None)
    (row,) = predict.image_rows(whole, predict.Job(files / "blank.jpg", None, None))
    assert (row["x"], row["y"], row["w"], row["h"]) == (0, 0, 200, 200)
    expected = softmax(predictor.model, np.full((1, 48, 48), 128, np.uint8))[0]
    np.testing.assert_allclose([row[f"p_{c}"] for c in CLASSES], expected, atol=1e-5)


def test_a_video_gives_a_row_per_face_and_frame_an_annotated_copy_and_a_timeline(
    files, predictor, tmp_path
):
    job = predict.Job(files / "clip.mp4", tmp_path / "clip.mp4", tmp_path / "clip.png")
    rows = predict.video_rows(predictor, job, window=0.5)
    assert [r["frame"] for r in rows] == [*range(10), *(i for i in range(10, 20) for _ in "ab")]
    assert all(r["time"] == pytest.approx(r["frame"] / FPS) for r in rows)
    for row in rows:
        box = row["x"], row["y"], row["w"], row["h"]
        assert max(overlap(box, pasted) for pasted in VIDEO_BOXES) > 0.6
    capture = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    annotated = list(predict.frames(capture))
    assert len(annotated) == FRAMES and annotated[0].shape == (240, 320, 3)
    with Image.open(tmp_path / "clip.png") as timeline:
        assert timeline.format == "PNG" and timeline.width > 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip.png"]  # no temp left


def test_every_nth_frame_is_classified_when_asked(files, predictor):
    every_third = predict.Predictor(predictor.model, CLASSES, predictor.detector, every=3)
    rows = predict.video_rows(every_third, predict.Job(files / "clip.mp4", None, None), 1.0)
    assert sorted({r["frame"] for r in rows}) == list(range(0, FRAMES, 3))


def test_the_command_line_classifies_the_good_inputs_and_gives_one_line_per_bad_one(files):
    bad = ["blank.jpg", "damaged.png", "text.jpg", "text.mp4", "notes.txt", "missing.png"]
    result = run(files, "two.png", "crop.png", "clip.mp4", *bad)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [*predict.COLUMNS, *(f"p_{c}" for c in CLASSES)]
    assert [r["file"] for r in rows] == ["two.png"] * 2 + ["crop.png"] + ["clip.mp4"] * 30
    assert rows[0]["frame"] == rows[0]["time"] == "" and rows[-1]["time"] == "1.9"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert [line.split(":")[1].strip() for line in errors] == bad
    assert "no face found" in errors[0] and "unsupported file type .txt" in errors[4]
    assert result.stderr.splitlines()[-1] == "33 faces from 3 of 9 files"


def test_nothing_classified_exits_non_zero_and_writes_nothing(files, tmp_path):
    result = run(files, "blank.jpg", "text.mp4", "--out", str(tmp_path / "rows.csv"))
    assert result.returncode != 0 and result.stdout == ""
    assert (
        result.stderr.splitlines()[-1]
        == "error: no face was classified in any of the 2 input files"
    )
    assert list(tmp_path.iterdir()) == []


def test_json_lines_go_to_the_out_file(files, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    predict.main([str(files / "model.pt"), str(files / "crop.png"), "--json", "--out", str(out)])
    assert capsys.readouterr().out == ""
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["frame"] is None and row["w"] == 48 and set(row) >= {f"p_{c}" for c in CLASSES}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_an_annotated_image_shows_the_boxes(files, tmp_path, capsys):
    out = tmp_path / "two_faces.png"
    predict.main([str(files / "model.pt"), str(files / "two.png"), "--annotate", str(out)])
    original, drawn = cv2.imread(str(files / "two.png")), cv2.imread(str(out))
    assert drawn.shape == original.shape and (drawn[-1, -1] == original[-1, -1]).all()
    for row in csv.DictReader(io.StringIO(capsys.readouterr().out)):
        x, y, h = int(row["x"]), int(row["y"]), int(row["h"])
        assert drawn[y + h // 2, x].tolist() == [0, 255, 0]  # the box's left edge, in green


def test_with_several_inputs_annotate_and_timeline_name_folders(files, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("two.png", "clip.mp4", "notes.txt"):
        (folder / name).write_bytes((files / name).read_bytes())
    out = tmp_path / "out"
    predict.main(
        [str(files / "model.pt"), str(folder), "--annotate", str(out), "--timeline", str(out)]
    )
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "clip.timeline.png", "two.png"]
    assert capsys.readouterr().err.splitlines()[-1] == "32 faces from 2 of 2 files"  # .txt skipped


def test_an_output_that_would_overwrite_an_input_is_refused(files, capsys):
    with pytest.raises(SystemExit) as exit_:
        predict.main(
            [str(files / "model.pt"), str(files / "two.png"), "--annotate", str(files / "two.png")]
        )
    assert exit_.value.code != 0
    assert (
        capsys.readouterr().err
        == f"error: {files / 'two.png'}: would be written twice, or over an input; choose another OUT\n"
    )


def test_a_file_that_is_not_a_pipeline_checkpoint_is_refused_in_one_line(files, tmp_path, capsys):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit) as exit_:
        predict.main([str(tmp_path / "other.pt"), str(files / "two.png")])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {tmp_path / 'other.pt'}: not a checkpoint written by the pipeline (models.save)\n"
    )
