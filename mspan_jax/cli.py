"""What every script shares: absl start-up, config-file loading, and user errors as one line + exit 2.

Only `errors.UserError` (and the OS errors naming a missing or unreadable path) become one line; any
other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags, logging

from mspan_jax.errors import ConfigError, UserError, first_line, is_disk_full
from mspan_jax.host_allocator import keep_freed_memory

# Errors that mean "the input is wrong", reported as one line without a traceback: the package's own
# (CheckpointError, ImageReadError, MissingExtraError, ConfigError, ... all derive from UserError)
# and the OS errors of a path that is missing, unreadable or of the wrong kind.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, PermissionError,
                                                 NotADirectoryError, IsADirectoryError)


def fail(message: str, code: int = 2) -> NoReturn:
    """Prints `error: message` to stderr and exits with `code`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _config_file(argv: Sequence[str]) -> str | None:
    """The --config value in argv (`--config X` or `--config=X`), before absl loads it."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flag parsing, with a bad flag, config file or config override reported as one line."""
    path = _config_file(argv)
    if path is not None and not os.path.isfile(path.split(":", 1)[0]):
        fail(f"--config {path}: no such file; use one of configs/*.py")
    try:
        remaining = flags.FLAGS(argv)
        if "config" in flags.FLAGS and flags.FLAGS["config"].value is not None:
            flags.FLAGS["config"].value.keys()  # a config file that failed to import raises here
        return remaining
    except flags.Error as e:
        if "Error whilst parsing config file" in str(e):  # get_config(arg) raised: say what it said
            last = [line for line in str(e).splitlines() if line.strip()][-1]
            last = re.sub(r"^mspan_jax(\.\w+)+: ", "", last.strip())  # a UserError: its message alone
            fail(f"--config {path}: cannot load it ({' '.join(last.split())})")
        fail(first_line(e))
    except (AttributeError, KeyError) as e:  # config_flags: an override names no key of the config
        key = next(iter(re.findall(r"\w+", str(e))), "?")
        fail(f"unknown config key {key!r} in a --config.* override; see {path} and "
             "mspan_jax/config_base.py for the keys")
    except Exception as e:  # noqa: BLE001 - the config file failed to import (syntax error, bad import)
        fail(f"--config {path}: cannot load it ({' '.join(first_line(e, typed=True).split())})")


def load_config(spec: str):
    """The ConfigDict of a config file given as `path` or `path:arg` (as --config takes it), for
    scripts that take several configs; ConfigError (one line) for a missing or broken file."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config {path}: no such file; use one of configs/*.py")
    try:
        module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception as e:  # noqa: BLE001 - any error of a user's config file is a ConfigError line
        detail = first_line(e, typed=not isinstance(e, UserError))  # a UserError: its message alone
        raise ConfigError(f"config {spec}: cannot load it ({' '.join(detail.split())})") from None


def run(main: Callable[[Sequence[str]], None]) -> None:
    """absl `app.run(main)` with one-line errors for bad flags, configs and inputs (`USER_ERRORS`);
    anything else propagates with its traceback.

    Logging drops to WARNING unless --verbosity is given: JAX and orbax log backend probing and
    every checkpoint step at INFO, which would bury a script's own output. The host allocator keeps
    freed memory (`host_allocator`) before JAX starts its threads.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keep_freed_memory()

    def guarded(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments {list(argv[1:])}; flags are given as --name=value")
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        try:
            main(argv)
        except USER_ERRORS as e:
            fail(first_line(e))
        except Exception as e:  # a full disk is the machine's state, not a bug: one line too
            if not is_disk_full(e):
                raise
            fail(f"no space left on device ({first_line(e, typed=True, limit=300)}); nothing was left "
                 "half-written: free space and run the same command again")

    app.run(guarded, flags_parser=parse_flags)
