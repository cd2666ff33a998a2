"""The package's user errors: what the scripts report as one line, and nothing else.

Every error that means "the input is wrong" (a flag, a config, a checkpoint, an image, a weight file,
a missing extra) derives from `UserError`; `cli.run` prints those (and the OS errors naming a missing
or unreadable path) as one `error:` line and exits 2, and lets every other exception, a bare
ValueError from a shape bug included, show its traceback. Subclasses that replace a ValueError keep
ValueError as a second base, so `except ValueError` callers still catch them.
"""

from __future__ import annotations


class UserError(Exception):
    """Wrong input from the user; its message is one line saying what and how to fix it."""


class ConfigError(UserError, ValueError):
    """A config file, config value or command-line flag is invalid."""


class DataError(UserError, ValueError):
    """An image set, folder or image pair cannot be used as asked (missing, empty or mismatched)."""


class DiskFullError(UserError, OSError):
    """A write ran out of space; what was written before is intact (the message says what)."""


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is ENOSPC: an OSError, or tensorstore's
    ValueError ('RESOURCE_EXHAUSTED ... No space left on device [os_error_code=\'28\']')."""
    import errno

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error) or "os_error_code='28'" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def first_line(error: BaseException, *, typed: bool = False, limit: int | None = None) -> str:
    """The first line of an exception's message (cut to `limit` characters), or its type name when
    it has none; `typed` prefixes the type name ("OSError: ...") for errors from other libraries."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0][:limit]
    return f"{type(error).__name__}: {line}" if typed else line
