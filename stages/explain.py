"""Stage explain@<entry>: saliency, activation, first-layer filter and attention pictures of one
trained model on the same seeded test faces as every other entry (ferpipe.explain).

Usage: python stages/explain.py ENTRY
"""

from __future__ import annotations

import sys

from ferpipe import dataset, explain, models, params, paths, runinfo
from ferpipe.errors import exits_cleanly


@exits_cleanly
def main(name: str) -> None:
    p = params.for_stage(f"explain@{name}")
    device = runinfo.setup(p["train.threads"], p["seed"], p["train.device"])
    model, checkpoint = models.load(paths.model_file(name))
    test = dataset.load(paths.split_file("test"))
    folder = explain.explain_dir(name)
    title = f"{name} ({model.arch})"
    explain.write_pictures(
        model.to(device), test, tuple(checkpoint["classes"]), p["seed"], title, folder
    )
    print(f"explain {name}: {', '.join(str(folder / f) for f in explain.FILES)}")


if __name__ == "__main__":
    main(sys.argv[1])
