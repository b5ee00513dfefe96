"""ONNX export: ONNX Runtime gives PyTorch's outputs on real faces, at any batch size, for every
registered architecture; a bad checkpoint or an unwritable OUT is one line and no file."""

import json
import zipfile

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from ferpipe import export, models

from .conftest import SAMPLE, sample_faces

CLASSES = ("angry", "fear", "happy", "sad")


def spread_faces(n: int) -> np.ndarray:
    """`n` test faces of the embedded FER2013 sample, spread over its classes."""
    with zipfile.ZipFile(SAMPLE) as z:
        names = sorted(name for name in z.namelist() if name.startswith("test/"))[::97][:n]
    return sample_faces(*names)


def checkpoint(name: str, path) -> models.FerModel:
    """A small model of architecture `name` (its tiny arguments, no pretrained weights), saved."""
    arch = models.architecture(name)
    args = dict(arch.tiny) | ({"weights": "none"} if "weights" in arch.parameters() else {})
    torch.manual_seed(0)
    model = models.build(name, len(CLASSES), **args)
    models.save(model, CLASSES, path)
    return model.eval()


@pytest.mark.parametrize("name", ["study_cnn", "block_cnn", "resnet18"])
def test_onnx_runtime_gives_pytorchs_outputs_for_any_batch_size(name, tmp_path):
    model = checkpoint(name, tmp_path / "model.pt")
    export.export(tmp_path / "model.pt", tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.pt"]
    session = onnxruntime.InferenceSession(
        tmp_path / "model.onnx", providers=["CPUExecutionProvider"]
    )
    (faces_input,) = session.get_inputs()
    assert (faces_input.name, faces_input.type) == ("faces", "tensor(uint8)")
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    faces = spread_faces(5)
    for batch in (faces[:1], faces):
        logits, probabilities = session.run(None, {"faces": batch})
        with torch.no_grad():
            expected = model(model.preprocess(torch.from_numpy(batch)))
        assert logits.shape == (len(batch), len(CLASSES))
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(probabilities, expected.softmax(1).numpy(), atol=1e-4, rtol=0)
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "model.onnx").metadata_props}
    assert json.loads(metadata["classes"]) == list(CLASSES) and metadata["arch"] == name


def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit) as exit_:
        export.main([str(tmp_path / "other.pt"), str(tmp_path / "out.onnx")])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {tmp_path / 'other.pt'}: not a checkpoint written by the pipeline (models.save)\n"
    )
    assert not (tmp_path / "out.onnx").exists()


def test_an_unwritable_out_is_one_line_and_leaves_nothing(tmp_path, capsys):
    checkpoint("block_cnn", tmp_path / "model.pt")
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "model.onnx"
    with pytest.raises(SystemExit) as exit_:
        export.main([str(tmp_path / "model.pt"), str(out)])
    assert exit_.value.code != 0
    assert capsys.readouterr().err.startswith(f"error: {out}: cannot be written (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "model.pt"]


def test_the_command_line_writes_the_file_and_says_so(tmp_path, capsys):
    checkpoint("block_cnn", tmp_path / "model.pt")
    export.main([str(tmp_path / "model.pt"), str(tmp_path / "model.onnx")])
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'model.onnx'} (")
    onnx.checker.check_model(onnx.load(tmp_path / "model.onnx"))
