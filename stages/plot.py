"""Stage plot@<model>: PNG confusion matrix and training curves (DVC renders the same data).

Usage: python stages/plot.py {cnn,resnet}
"""

import sys

import numpy as np
import pandas as pd

from ferpipe import paths, plots
from ferpipe.errors import exits_cleanly
from ferpipe.metrics import confusion_matrix_of


@exits_cleanly
def main(name: str) -> None:
    predictions = pd.read_csv(paths.predictions_file(name))
    classes = tuple(c[2:] for c in predictions.columns if c.startswith("p_"))
    matrix = confusion_matrix_of(predictions["actual"], predictions["predicted"], classes)
    accuracy = np.trace(matrix) / matrix.sum()
    plots.confusion_png(
        matrix, classes, f"{name}: test accuracy {accuracy:.1%}", paths.confusion_png(name)
    )
    plots.curves_png(pd.read_csv(paths.history_file(name)), name, paths.curves_png(name))
    print(f"plot {name}: {paths.confusion_png(name)}, {paths.curves_png(name)}")


if __name__ == "__main__":
    main(sys.argv[1])
