"""Stage crossval@<entry>: k-fold cross-validation of one zoo entry (ferpipe.crossval) when
split.folds > 1. With split.folds 1 (off) nothing trains and the metrics file is empty ({}),
so `dvc exp show` gets no columns from it.

Usage: python stages/crossval.py ENTRY
"""

import sys

from ferpipe import dataset, params, paths
from ferpipe.errors import exits_cleanly


@exits_cleanly
def main(name: str) -> None:
    p = params.for_stage(f"crossval@{name}")
    if p["split.folds"] == 1:
        dataset.write_json({}, paths.crossval_file(name))
        print(f"crossval {name}: off (split.folds 1)")
        return
    # Imported only now: torch's import would be most of the time of the default, folds 1.
    from ferpipe import crossval, runinfo
    from ferpipe.speed import Speed

    Speed.from_params(p).configure_allocator()
    device = runinfo.setup(p["train.threads"], p["seed"], p["train.device"])
    summary = crossval.run(p, name, device)
    dataset.write_json(summary, paths.crossval_file(name))
    mean, std = summary["mean"], summary["std"]
    print(
        f"crossval {name}: {summary['folds']} folds, validation accuracy "
        f"{mean['val_accuracy']:.2%} +- {std['val_accuracy']:.2%}, macro F1 "
        f"{mean['macro_f1']:.2%} +- {std['macro_f1']:.2%}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
