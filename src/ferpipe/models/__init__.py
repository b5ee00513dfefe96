"""The model zoo: every architecture registered by name, built and checkpointed one way.

    from ferpipe import models
    models.names()                              # every registered architecture
    model = models.build("resnet18", 7, weights="none", image_size=112)
    models.save(model, classes, path); model, checkpoint = models.load(path)

One file per family; importing this package registers them all.
"""

from ferpipe.models import block_cnn, dacl, resnet, small_cnn, study_cnn, vgg_cnn  # noqa: F401
from ferpipe.models.base import (
    Architecture,
    BodyAndClassifier,
    CachedFeatures,
    FerModel,
    architecture,
    build,
    check_args,
    from_entry,
    load,
    names,
    register,
    save,
)

__all__ = ["Architecture", "BodyAndClassifier", "CachedFeatures", "FerModel", "architecture", "build", "check_args",
           "from_entry", "load", "names", "register", "save"]  # fmt: skip
