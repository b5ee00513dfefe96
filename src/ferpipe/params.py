"""params.yaml: validated as a whole before any heavy work, read per stage as DVC declares it.

The file is read once, with the YAML 1.2 parser DVC itself uses (ruamel.yaml, safe), so the
project and DVC agree on every value (`1e-3` is a number to both; PyYAML's YAML 1.1 reads it
as a string). Each stage sees only the parameters listed under its `params:` in dvc.yaml, so a
stage that reads an undeclared key fails loudly instead of silently escaping DVC's change
tracking.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from functools import reduce
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError

from ferpipe.errors import FerError
from ferpipe.labels import TASK_CLASSES

PARAMS_FILE = Path("params.yaml")
DVC_FILE = Path("dvc.yaml")

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


def finite(v: Any) -> bool:
    """A real number (not a bool), neither infinite nor NaN: `.inf` would train NaN weights."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(minimum: float, strict: bool) -> Check:
    def check(v: Any) -> str | None:
        ok = finite(v) and (v > minimum if strict else v >= minimum)
        return None if ok else f"must be a finite number {'>' if strict else '>='} {minimum:g}"

    return check


def _fraction(v: Any) -> str | None:
    ok = finite(v) and 0 < v < 1
    return None if ok else "must be a number strictly between 0 and 1"


def _odd_kernel(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v % 2 == 1
    return None if ok else "must be an odd positive integer (1 turns the median filter off)"


def _weights_for(task: str) -> Check:
    n = len(TASK_CLASSES[task])

    def check(v: Any) -> str | None:
        ok = isinstance(v, list) and len(v) == n
        ok = ok and all(finite(w) and w > 0 for w in v)
        classes = ", ".join(TASK_CLASSES[task])
        return (
            None
            if ok
            else f"must be a list of {n} finite positive numbers, one per class ({classes})"
        )

    return check


def _device(v: Any) -> str | None:
    ok = v in ("auto", "cpu", "cuda") or (isinstance(v, str) and re.fullmatch(r"cuda:\d+", v))
    return None if ok else "must be one of: auto, cpu, cuda, cuda:<index>"


def _sha256(v: Any) -> str | None:
    ok = v == "" or (isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{64}", v))
    return None if ok else "must be empty or a 64-digit hexadecimal SHA-256"


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def _option(v: Any) -> str | None:
    ok = isinstance(v, Mapping) and isinstance(v.get("name"), str)
    return None if ok else "must be a mapping with a name and its arguments, e.g. {name: adam}"


def _rate_or_null(v: Any) -> str | None:
    return None if v is None or (finite(v) and v > 0) else "must be null or a finite number > 0"


def _smoothing(v: Any) -> str | None:
    return None if finite(v) and 0 <= v < 1 else "must be a number >= 0 and < 1"


def _entry_names(v: Any) -> str | None:
    ok = isinstance(v, list) and v and all(isinstance(n, str) for n in v) and len(set(v)) == len(v)
    return None if ok else "must be a non-empty list of distinct zoo entry names"


# The names ferpipe.losses builds, here so that the data stages validate them without torch.
LOSSES = ("ce", "focal")  # class-weighted cross-entropy | class-weighted focal loss
# Class weights: train.class_weights' row for the task (seed 000), inverse class frequency in the
# training split (seeds 001, 002), or all ones.
CLASS_WEIGHTS = ("table", "inverse_frequency", "none")

# Every key outside `zoo`; the zoo's entries are checked by ENTRY (and their args by the registry,
# in the stages that build models).
SCHEMA: dict[str, Check] = {
    "seed": _int(0),
    "task": _one_of(*TASK_CLASSES),
    "loss": _one_of(*LOSSES),
    "models": _entry_names,
    "data.source": _text,
    "data.sha256": _sha256,
    "balance.max_per_class": _int(0),
    "balance.drop_duplicates": _boolean,
    "denoise.kernel_size": _odd_kernel,
    "split.validation": _one_of("holdout", "publictest"),
    "split.val_fraction": _fraction,
    "split.folds": _int(1),
    "train.batch_size": _int(1),
    "train.focal_gamma": _number(0, strict=False),
    "train.class_weights.binary": _weights_for("binary"),
    "train.class_weights.multiclass": _weights_for("multiclass"),
    "train.class_weights.all": _weights_for("all"),
    "train.keep": _one_of("last", "best"),
    "train.threads": _int(0),
    "train.device": _device,
    "train.channels_last": _boolean,
    "train.compile": _boolean,
    "train.reuse_memory": _boolean,
    "train.precision": _one_of("fp32", "bf16", "auto"),
    "train.resume": _boolean,
}


# The keys of one zoo entry, besides `args` (the architecture's arguments, a mapping).
ENTRY: dict[str, Check] = {
    "arch": _text,
    "epochs": _int(1),
    "lr": _number(0, strict=True),
    "backbone_lr": _rate_or_null,
    "weight_decay": _number(0, strict=False),
    "optimizer": _option,  # name and arguments: checked by ferpipe.optim in the train stage
    "schedule": _option,
    "early_stopping": _int(0),
    "loss": _one_of("shared", *LOSSES),
    "class_weights": _one_of(*CLASS_WEIGHTS),
    "label_smoothing": _smoothing,
    "augment": _text,  # `none` or a preset of `augment`: checked below, its transforms in train
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
    zoo = tree.get("zoo")
    if not isinstance(zoo, Mapping) or not zoo:
        raise FerError(f"{source}: zoo must map entry names to model entries (see README, Zoo)")
    for name, entry in zoo.items():
        if not isinstance(entry, Mapping):
            raise FerError(
                f"{source}: zoo.{name} must be a mapping with keys args, {', '.join(ENTRY)}"
            )
        _check(entry, ENTRY, source, f"zoo.{name}.", also=("args",))
        if not isinstance(entry.get("args", {}), Mapping):
            raise FerError(
                f"{source}: zoo.{name}.args must be a mapping of the architecture's arguments"
            )
    presets = tree.get("augment")
    if not isinstance(presets, Mapping):
        raise FerError(f"{source}: augment must map preset names to presets (see README, Recipes)")
    for name, entry in zoo.items():
        if entry["augment"] != "none" and entry["augment"] not in presets:
            raise FerError(
                f"{source}: zoo.{name}.augment={entry['augment']!r} is not a preset; use none or "
                f"one of: {', '.join(presets)}"
            )
    _check(flatten({k: v for k, v in tree.items() if k not in ("zoo", "augment")}), SCHEMA, source)
    unknown = [name for name in tree["models"] if name not in zoo]
    if unknown:
        raise FerError(
            f"{source}: models lists {', '.join(unknown)}, not entries of zoo; "
            f"use some of: {', '.join(zoo)}"
        )


def _check(
    values: Mapping[str, Any],
    schema: Mapping[str, Check],
    source: str,
    prefix: str = "",
    also: tuple[str, ...] = (),
) -> None:
    """Refuse keys of `values` that neither `schema` nor `also` has, missing keys, bad values."""
    for key in values:
        if key not in schema and key not in also:
            known = ", ".join(f"{prefix}{k}" for k in (*also, *schema))
            raise FerError(f"{source}: unknown key '{prefix}{key}'; known keys: {known}")
    for key, check in schema.items():
        if key not in values:
            raise FerError(
                f"{source}: missing key '{prefix}{key}'; add it (see README, Parameters)"
            )
        problem = check(values[key])
        if problem:
            raise FerError(f"{source}: {prefix}{key}={values[key]!r} {problem}")


def read(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file, validated."""
    try:
        tree = YAML(typ="safe").load(Path(path).read_text())
    except FileNotFoundError:
        raise FerError(f"{path}: not found; run from the project folder") from None
    except YAMLError as exc:
        problem = " ".join(str(exc).split())[:200]
        raise FerError(f"{path}: not valid YAML ({problem}); fix its syntax") from None
    if not isinstance(tree, dict):
        raise FerError(f"{path}: expected a mapping of parameters")
    validate(tree, str(path))
    return tree


class StageParams:
    """The parameters one DVC stage declares, looked up by dotted key."""

    def __init__(self, stage: str, declared: Mapping[str, Any]):
        self.stage = stage
        self._tree = declared

    @property
    def tree(self) -> Mapping[str, Any]:
        """Every declared value, nested as in params.yaml."""
        return self._tree

    def __getitem__(self, key: str) -> Any:
        node: Any = self._tree
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise FerError(
                    f"stage '{self.stage}' reads '{key}' but dvc.yaml does not list it under params"
                )
            node = node[part]
        return node


def for_stage(stage: str) -> StageParams:
    """Validate all of params.yaml, then return the part of it dvc.yaml declares for `stage`
    (the values are this one reading's)."""
    tree = read()
    return StageParams(stage, _select(tree, declared(stage, tree)))


def declared(
    stage: str, tree: Mapping[str, Any], path: Path = DVC_FILE, field: str = "params"
) -> list[str]:
    """The dotted keys dvc.yaml lists under `params:` of `stage` ("train@cnn" for the foreach
    stage train, item cnn), or with field="deps" the paths under its `deps:`. Read here, not through
    dvc.api.params_show, which gives the same keys (a test compares them) but costs every stage
    process about 4 s of loading the repo."""
    stages = YAML(typ="safe").load(Path(path).read_text())["stages"]
    base, _, item = stage.partition("@")
    definition = stages.get(base)
    if definition is None or ("foreach" in definition) != bool(item):
        raise FerError(f"{path}: no stage '{stage}'")
    if item:
        items = definition["foreach"]
        if isinstance(items, str):  # "${models}": a list in params.yaml
            items = reduce(
                operator.getitem, items.removeprefix("${").removesuffix("}").split("."), tree
            )
        if item not in items:
            raise FerError(f"{path}: no stage '{stage}'; {base} runs for {', '.join(items)}")
        definition = definition["do"]
    return [key.replace("${item}", item) for key in definition.get(field, [])]


def _select(tree: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    """The values of the dotted `keys` in `tree`, nested as in the tree (missing keys left out,
    as DVC leaves them out)."""
    chosen: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and leaf in node:
            target = chosen
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = node[leaf]
    return chosen
