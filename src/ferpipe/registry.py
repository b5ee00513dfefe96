"""Name -> builder registries: architectures, optimisers, schedules, augmentations.

One registration is the whole of an addition: params.yaml names it, validation takes the allowed
names from the registry and the allowed arguments (with their types) from the builder's
signature, so nothing else lists them by hand (timm's and torchvision's pattern).
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ferpipe.errors import FerError


@dataclass(frozen=True)
class Entry:
    """A registered builder, the arguments fixed for this name, and small arguments for tests."""

    name: str
    builder: Callable[..., Any]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    tiny: Mapping[str, Any] = field(default_factory=dict)
    supplied: tuple[str, ...] = ()

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The arguments a params.yaml entry may set, with their defaults (not those the caller
        supplies, nor the fixed ones)."""
        signature = inspect.signature(self.builder)
        return {
            name: p
            for name, p in signature.parameters.items()
            if name not in ("self", *self.supplied, *self.fixed)
        }


class Registry:
    """Builders of one kind (`kind` names it in errors); `supplied` are the arguments the
    pipeline passes itself (e.g. num_classes), which params.yaml cannot set."""

    def __init__(self, kind: str, supplied: tuple[str, ...] = ()):
        self.kind, self.supplied = kind, supplied
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        *,
        fixed: Mapping[str, Any] | None = None,
        tiny: Mapping[str, Any] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a builder under `name`; `fixed` arguments make one builder several entries
        (resnet18 and resnet50), `tiny` ones make it small enough for a quick test."""

        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(
                name, builder, dict(fixed or {}), dict(tiny or {}), self.supplied
            )
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise FerError(
                f"{self.kind} {name!r} is unknown; use one of: {', '.join(self.names())}"
            )
        return self._entries[name]

    def check_args(self, name: str, args: Mapping[str, Any], where: str = "args") -> None:
        """Refuse arguments `name` does not take, or values of the wrong type, naming the key."""
        entry = self.get(name)
        allowed = entry.parameters()
        builder = entry.builder.__init__ if inspect.isclass(entry.builder) else entry.builder
        hints = typing.get_type_hints(builder)
        for key, value in args.items():
            if key not in allowed:
                raise FerError(
                    f"{where}.{key}: {name} takes no argument {key!r}; "
                    f"it takes: {', '.join(allowed) or 'none'}"
                )
            problem = type_problem(value, hints.get(key, Any))
            if problem:
                raise FerError(f"{where}.{key}={value!r} {problem}")

    def build(self, name: str, *supplied: Any, **args: Any) -> Any:
        """The builder `name` called with the pipeline's `supplied` values and `args`."""
        entry = self.get(name)
        self.check_args(name, args)
        return entry.builder(*supplied, **entry.fixed, **args)


def type_problem(value: Any, hint: Any) -> str | None:
    """None when `value` fits the type hint (bool, int, float, str, Literal, list[...], a union
    with None); else the rule it breaks."""
    origin, inner = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        problems = [type_problem(value, h) for h in inner]
        return " or ".join(p for p in problems if p) if all(problems) else None
    if hint is type(None):
        return None if value is None else "must be null"
    if origin is typing.Literal:
        return None if value in inner else f"must be one of: {', '.join(map(str, inner))}"
    if origin is list:
        if not isinstance(value, list):
            return f"must be a list of {inner[0].__name__}"
        problems = [type_problem(v, inner[0]) for v in value]
        return next((f"must be a list whose items {p}" for p in problems if p), None)
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) else "must be a finite number"
    ok = isinstance(value, hint) and not isinstance(value, bool)
    return None if ok else f"must be of type {hint.__name__}"
