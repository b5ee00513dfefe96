"""Label vocabularies shared by every stage: emotions, archive splits and task classes."""

# Kaggle folder names in alphabetical order; the index is the emotion code of the normalised
# dataset (it differs from the challenge CSV's codes, see CSV_EMOTIONS).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# The challenge's fer2013.csv codes: 0=angry 1=disgust 2=fear 3=happy 4=sad 5=surprise 6=neutral.
CSV_EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Original challenge splits; the index is the split code of the normalised dataset.
SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
TRAIN_SPLIT = 0

# Class order of each task (seed 000's two, and the 7-class benchmark); alphabetical, so DVC
# confusion plots keep it.
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "binary": ("happy", "sad"),
    "multiclass": ("angry", "fear", "happy", "sad"),
    "all": EMOTIONS,
}

IMAGE_SIZE = 48
