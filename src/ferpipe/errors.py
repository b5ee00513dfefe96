"""One clear error line and a non-zero exit for every bad input, instead of a traceback."""

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class FerError(Exception):
    """A problem with the user's data or parameters; its message names the problem and the fix."""


INTERRUPTED = 130  # the shell's exit code for a command ended by Ctrl-C (128 + SIGINT)


def exits_cleanly(main: F) -> F:
    """Run a stage entry point; turn a FerError into `error: <message>` on stderr and exit 2,
    Ctrl-C into one line and exit 130. A stage that fails in any way first removes the files
    it wrote, so it never leaves part of its outputs behind."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        from ferpipe.dataset import discard_written, writes_so_far  # dataset imports this module

        mark = writes_so_far()
        try:
            return main(*args, **kwargs)
        except FerError as exc:
            discard_written(mark)
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            discard_written(mark)
            print("error: interrupted; this stage wrote no output", file=sys.stderr)
            raise SystemExit(INTERRUPTED) from None
        except BaseException:
            discard_written(mark)
            raise

    return wrapper  # type: ignore[return-value]
