"""One clear error line and a non-zero exit for every bad input, instead of a traceback."""

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class FerError(Exception):
    """A problem with the user's data or parameters; its message names the problem and the fix."""


def exits_cleanly(main: F) -> F:
    """Run a stage entry point; turn a FerError into `error: <message>` on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return main(*args, **kwargs)
        except FerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]
