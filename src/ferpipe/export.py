"""Export a checkpoint written by the pipeline to one ONNX file, its preprocessing included.

    python -m ferpipe.export models/cnn.pt cnn.onnx
    ferpipe-export models/resnet.pt resnet.onnx

The graph takes `faces`, a uint8 (N, 48, 48) batch of gray faces, N dynamic, and gives `logits`
and `probabilities` (their softmax), float32 (N, classes), classes in the checkpoint's order,
also stored in the file's metadata ("classes", a JSON list; "arch", "args"). The model's own
`preprocess` is in the graph (scaling, and for a ResNet the bilinear resize, three channels and
ImageNet normalisation), so users feed the very faces the pipeline trains on and cannot get the
preprocessing wrong.

Exporter: torch 2.14's default, the torch.export-based one (`dynamo=True`), which needs
onnxscript (pinned in requirements.txt) and runs offline; the TorchScript one (`dynamo=False`)
is deprecated. The weights are inside the file (no external .data file: one file to copy; ONNX
allows up to 2 GB). The file is written atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferpipe import models
from ferpipe.dataset import atomic_path
from ferpipe.errors import FerError, exits_cleanly
from ferpipe.labels import IMAGE_SIZE

INPUT, OUTPUTS = "faces", ("logits", "probabilities")


class WithPreprocessing(nn.Module):
    """A model as ONNX users call it: uint8 faces in, logits and probabilities out."""

    def __init__(self, model: models.FerModel):
        super().__init__()
        self.model = model

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(self.model.preprocess(faces))
        return logits, torch.softmax(logits, 1)


def export(checkpoint_path: Path, out: Path) -> None:
    """Write the checkpoint's model, in eval mode, as ONNX to `out` (whose temporary file is
    made first, so an unwritable `out` fails before the export's seconds)."""
    model, checkpoint = models.load(checkpoint_path)
    try:
        with atomic_path(out) as tmp:
            program(model, checkpoint).save(tmp, external_data=False)
    except OSError as exc:
        raise FerError(f"{out}: cannot be written ({exc.strerror or exc})") from None


def program(model: models.FerModel, checkpoint: dict[str, Any]) -> torch.onnx.ONNXProgram:
    """The ONNX graph of `model` with its preprocessing, a dynamic batch and the metadata."""
    example = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)  # 2: 1 would specialise
    onnx_program = torch.onnx.export(
        WithPreprocessing(model).eval(),
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    onnx_program.model.metadata_props.update(
        classes=json.dumps(checkpoint["classes"]),
        arch=checkpoint["arch"],
        args=json.dumps(checkpoint["args"], sort_keys=True),
    )
    return onnx_program


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ferpipe-export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", type=Path, metavar="MODEL", help="checkpoint written by the pipeline"
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="ONNX file to write (e.g. cnn.onnx)")
    args = parser.parse_args(argv)
    export(args.model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
