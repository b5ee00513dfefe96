"""params.yaml: validated as a whole before any heavy work, read per stage as DVC declares it.

Each stage sees only the parameters listed under its `params:` in dvc.yaml, so a stage that
reads an undeclared key fails loudly instead of silently escaping DVC's change tracking.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ferpipe.errors import FerError
from ferpipe.labels import TASK_CLASSES

PARAMS_FILE = Path("params.yaml")

# A check returns None when the value is fine, else the rule it breaks.
Check = Callable[[Any], "str | None"]


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of: {', '.join(choices)}"


def _int(minimum: int) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= minimum
        return (
            None
            if ok
            else (
                "must be a positive integer" if minimum == 1 else f"must be an integer >= {minimum}"
            )
        )

    return check


def _number(minimum: float, strict: bool) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        ok = ok and (v > minimum if strict else v >= minimum)
        return None if ok else f"must be a number {'>' if strict else '>='} {minimum:g}"

    return check


def _fraction(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
    return None if ok else "must be a number strictly between 0 and 1"


def _odd_kernel(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v % 2 == 1
    return None if ok else "must be an odd positive integer (1 turns the median filter off)"


def _weights_for(task: str) -> Check:
    n = len(TASK_CLASSES[task])

    def check(v: Any) -> str | None:
        ok = isinstance(v, list) and len(v) == n
        ok = ok and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in v
        )
        classes = ", ".join(TASK_CLASSES[task])
        return None if ok else f"must be a list of {n} positive numbers, one per class ({classes})"

    return check


def _sha256(v: Any) -> str | None:
    ok = v == "" or (isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{64}", v))
    return None if ok else "must be empty or a 64-digit hexadecimal SHA-256"


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


SCHEMA: dict[str, Check] = {
    "seed": _int(0),
    "task": _one_of(*TASK_CLASSES),
    "loss": _one_of("ce", "focal"),
    "data.source": _text,
    "data.sha256": _sha256,
    "balance.max_per_class": _int(1),
    "balance.drop_duplicates": _boolean,
    "denoise.kernel_size": _odd_kernel,
    "split.val_fraction": _fraction,
    "train.batch_size": _int(1),
    "train.focal_gamma": _number(0, strict=False),
    "train.class_weights.binary": _weights_for("binary"),
    "train.class_weights.multiclass": _weights_for("multiclass"),
    "train.keep": _one_of("last", "best"),
    "train.threads": _int(0),
    "train.channels_last": _boolean,
    "train.compile": _boolean,
    "train.reuse_memory": _boolean,
    "cnn.epochs": _int(1),
    "cnn.lr": _number(0, strict=True),
    "cnn.weight_decay": _number(0, strict=False),
    "resnet.epochs": _int(1),
    "resnet.lr": _number(0, strict=True),
    "resnet.weight_decay": _number(0, strict=False),
    "resnet.weights": _text,
    "resnet.image_size": _int(32),
    "resnet.freeze_bn": _boolean,
}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are values, not branches."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def validate(tree: Mapping[str, Any], source: str = "params.yaml") -> None:
    """Raise FerError naming the first unknown, missing or invalid key."""
    flat = flatten(tree)
    for key in flat:
        if key not in SCHEMA:
            raise FerError(f"{source}: unknown key '{key}'; known keys: {', '.join(SCHEMA)}")
    for key, check in SCHEMA.items():
        if key not in flat:
            raise FerError(f"{source}: missing key '{key}'; add it (see README, Parameters)")
        problem = check(flat[key])
        if problem:
            raise FerError(f"{source}: {key}={flat[key]!r} {problem}")


def read(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file, validated."""
    try:
        tree = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FerError(f"{path}: not found; run from the project folder") from None
    except yaml.YAMLError as exc:
        raise FerError(f"{path}: not valid YAML ({exc}); fix its syntax") from None
    if not isinstance(tree, dict):
        raise FerError(f"{path}: expected a mapping of parameters")
    validate(tree, str(path))
    return tree


class StageParams:
    """The parameters one DVC stage declares, looked up by dotted key."""

    def __init__(self, stage: str, declared: Mapping[str, Any]):
        self.stage = stage
        self._flat = flatten(declared)

    def __getitem__(self, key: str) -> Any:
        if key in self._flat:
            return self._flat[key]
        below = {k[len(key) + 1 :]: v for k, v in self._flat.items() if k.startswith(key + ".")}
        if below:
            return below
        raise FerError(
            f"stage '{self.stage}' reads '{key}' but dvc.yaml does not list it under params"
        )


def for_stage(stage: str) -> StageParams:
    """Validate all of params.yaml, then return what dvc.yaml declares for `stage`."""
    read()
    import dvc.api  # deferred: importing DVC takes a second

    return StageParams(stage, dvc.api.params_show(stages=stage, deps=False))
