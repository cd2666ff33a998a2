"""One training run per workdir: process 0 of a run holds WORKDIR/.train.lock while it trains.

The lock is flock(2) on that file, so the kernel releases it however the holder ends, SIGKILL
included: a lock left by a killed run is free, and the next run takes it over (and says whose it
was, from the host / pid / start time the file records). A second run on a workdir in use is refused
with one line naming the holder. A gs:// workdir has no flock: it gets a lease object instead
(train/bucket_lease.py, whose `lock_for` picks one of the two).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

from mspan_jax.errors import UserError

LOCK_FILE = ".train.lock"


class WorkdirInUseError(UserError, ValueError):
    """Another live run holds the workdir's lock."""


def holder_text(info: dict) -> str:
    """The holder a lock file records, as one phrase ("pid 12 on host since <time>")."""
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since "
            f"{info.get('since', '?')}")


def _read_info(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


class WorkdirLock:
    """The exclusive lock of one local workdir; `acquire()` then `release()` (or a `with` block)."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Takes the lock; returns a note when it took over the lock of a run that ended without
        releasing it (killed), else None. Raises WorkdirInUseError naming a live holder."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_info(fd)
                os.close(fd)
                raise WorkdirInUseError(
                    f"--workdir {self.workdir} is in use by another training run ({holder_text(info)}; "
                    f"lock {self.path}); wait for it or stop it, or choose another --workdir") from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder we waited for may have removed the file: lock the one at the path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_info(fd)
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": now.isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        if previous:
            return (f"took over {self.path}: its holder ({holder_text(previous)}) ended without "
                    "releasing it (killed?)")
        return None

    def release(self) -> None:
        """Removes the lock file and frees the lock (safe to call twice)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):  # the workdir was removed (a failed first start)
            self.path.unlink(missing_ok=True)
        os.close(fd)

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

