"""What every script shares: absl start-up, and turning a user error into one line and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app

# Errors that mean "the input is wrong", reported as one line without a traceback.
# The package's own error classes (ImageReadError, CheckpointError, ...) subclass ValueError.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError,
                                                 NotADirectoryError, IsADirectoryError)


def fail(message: str, code: int = 2) -> NoReturn:
    """Prints `error: message` to stderr and exits with `code`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def run(main: Callable[[Sequence[str]], None]) -> None:
    """absl `app.run(main)`, with user errors reported as one line and a non-zero exit."""

    def guarded(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments {list(argv[1:])}; flags are given as --name=value")
        try:
            main(argv)
        except USER_ERRORS as e:
            fail(str(e).splitlines()[0] if str(e) else type(e).__name__)

    app.run(guarded)
