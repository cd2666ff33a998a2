"""One training run per gs:// workdir: a lease object WORKDIR/.train.lock instead of flock(2).

A bucket has no locks, but it has generation preconditions: an object written with
`ifGenerationMatch=0` is created only if absent, and one written with `ifGenerationMatch=G` replaces
only generation G. The holder (process 0 of a run) creates the lease with its host, pid, start time
and an expiry, and a thread renews it (replacing its own generation) every `renew_s`. A second run
finds an unexpired lease and is refused in one line naming the holder; a lease whose holder stopped
renewing (a killed run) is taken over after its expiry, replacing exactly the generation that was
read, so that of two runs racing for it one wins.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import quote

from mspan_jax.train.workdir_lock import LOCK_FILE, WorkdirInUseError, WorkdirLock, holder_text

LEASE_TTL_S = 300.0  # a lease not renewed for this long belongs to a run that ended without releasing
RENEW_S = 60.0


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).replace(microsecond=0).isoformat()


class BucketLease:
    """The lease of one gs:// workdir; `acquire()` then `release()` (or a `with` block)."""

    def __init__(self, workdir: str, *, ttl_s: float = LEASE_TTL_S, renew_s: float = RENEW_S):
        import gcsfs

        self.workdir = workdir.rstrip("/")
        self.path = f"{self.workdir}/{LOCK_FILE}"
        self.bucket, _, self.key = self.path.split("://", 1)[1].partition("/")
        self.ttl_s, self.renew_s = ttl_s, renew_s
        self._fs = gcsfs.GCSFileSystem()
        self._generation: str | None = None
        self._info: dict[str, Any] = {}
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _write(self, if_generation: str) -> str:
        """Writes the lease (expiring `ttl_s` from now) if the object's generation is `if_generation`
        ("0": absent); returns the new generation. FileExistsError when the precondition fails."""
        body = json.dumps({**self._info, "expires": _iso(_now() + self.ttl_s),
                           "expires_unix": _now() + self.ttl_s}).encode()
        out = self._fs.call(
            "POST", f"{self._fs._location}/upload/storage/v1/b/{quote(self.bucket)}/o",
            uploadType="media", name=self.key, ifGenerationMatch=if_generation, data=body,
            headers={"Content-Type": "application/octet-stream"}, json_out=True)
        return str(out["generation"])

    def _read(self) -> tuple[str, dict[str, Any]] | None:
        """(generation, content) of the lease object, None when there is none."""
        try:
            info = self._fs.info(self.path, refresh=True)
            content = json.loads(self._fs.cat_file(self.path).decode() or "{}")
        except FileNotFoundError:
            return None
        except ValueError:
            content = {}
        return str(info.get("generation")), content if isinstance(content, dict) else {}

    def acquire(self) -> str | None:
        """Takes the lease; returns a note when it took over an expired one (its run was killed), else
        None. Raises WorkdirInUseError naming a live holder."""
        self._info = {"host": socket.gethostname(), "pid": os.getpid(), "since": _iso(_now())}
        found = self._read()  # read first: the precondition then only decides a race
        try:
            if found is None:
                self._generation = self._write("0")
                return self._start_renewing(None)
            generation, previous = found
            if float(previous.get("expires_unix", 0.0)) > _now():
                raise WorkdirInUseError(
                    f"--workdir {self.workdir} is in use by another training run "
                    f"({holder_text(previous)}; lease {self.path} until "
                    f"{previous.get('expires', '?')}); wait for it or stop it, or choose another "
                    "--workdir")
            self._generation = self._write(generation)
        except FileExistsError:  # the generation read is no longer there: another run was faster
            raise WorkdirInUseError(
                f"--workdir {self.workdir}: another training run took the lease {self.path} at the "
                "same moment; wait for it or stop it, or choose another --workdir") from None
        return self._start_renewing(
            f"took over {self.path}: its holder ({holder_text(previous)}) stopped renewing it "
            f"(killed?) and it expired at {previous.get('expires', '?')}")

    def _start_renewing(self, note: str | None) -> str | None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="bucket-lease", daemon=True)
        self._renewer.start()
        return note

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            with contextlib.suppress(Exception):  # a failed renewal is retried at the next one
                self._generation = self._write(self._generation or "0")

    def release(self) -> None:
        """Stops renewing and deletes the lease, if it is still ours (safe to call twice)."""
        if self._renewer is None:
            return
        self._stop.set()
        self._renewer.join(timeout=30)
        self._renewer = None
        with contextlib.suppress(Exception):  # gone or taken over: nothing of ours to remove
            self._fs.call("DELETE", f"b/{quote(self.bucket)}/o/{quote(self.key, safe='')}",
                          ifGenerationMatch=self._generation)
        self._fs.invalidate_cache(self.path)

    def __enter__(self) -> BucketLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_for(workdir: str | os.PathLike) -> WorkdirLock | BucketLease:
    """The one-run guard of `workdir`: flock(2) for a local folder, a lease object on a bucket."""
    if "://" in os.fspath(workdir):
        return BucketLease(os.fspath(workdir))
    return WorkdirLock(workdir)
