"""Writing result files so that a reader never sees a partial one, and checking output paths
before the work (`check_output_dir`, `check_output_file`)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from etils import epath

from mspan_jax.errors import UserError, first_line


@contextlib.contextmanager
def _temporary_sibling(path: str | os.PathLike | epath.Path) -> Iterator[epath.Path]:
    """A temporary name beside `path` (parents created) to write; renamed over `path` when the
    block ends, removed when it raises, so a reader never sees a partial file. Local and remote
    (gs://) paths alike, through etils.epath."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike | epath.Path, data: bytes) -> None:
    """Writes `data` to a temporary sibling, then renames it over `path` (parents created)."""
    with _temporary_sibling(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike | epath.Path) -> Iterator[BinaryIO]:
    """A binary file to stream `path` through, written atomically as `write_bytes_atomic` writes."""
    with _temporary_sibling(path) as tmp, tmp.open("wb") as f:
        yield f


def write_json_atomic(path: str | os.PathLike | epath.Path, payload: Mapping[str, Any]) -> None:
    """Writes `payload` as indented JSON atomically (`write_bytes_atomic`)."""
    write_bytes_atomic(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))


class OutputError(UserError):
    """An output path a script cannot write (checked before the work); one line naming the folder."""


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _probe_writable(folder: Path, what: str) -> None:
    """Creates and removes a hidden file in `folder`: the one test that sees read-only mounts and
    ACLs (os.access does not, and root passes it everywhere)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".mspan-write-test-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise OutputError(f"{what}: cannot write in {folder} ({e.strerror or first_line(e)})") from None


def check_output_dir(folder: str | os.PathLike, flag: str) -> Path:
    """Raises OutputError (one line naming `flag` and the folder) unless `folder` is, or can be made
    as, a writable folder; makes nothing. Local paths only; a gs:// path is left to the writer.
    Scripts call it before their work, so that an unwritable output fails in seconds."""
    if str(folder).startswith("gs://"):
        return Path(str(folder))
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder}: exists and is not a folder; choose a folder")
    _check_folder(folder, f"{flag} {folder}")
    return folder


def _check_folder(folder: Path, what: str) -> None:
    existing = _nearest_existing(folder.absolute())
    if not existing.is_dir():
        raise OutputError(f"{what}: its folder cannot be made, {existing} is a file")
    _probe_writable(existing, what)


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """`check_output_dir` of the file's folder, and the file itself not a folder (OutputError)."""
    if str(path).startswith("gs://"):
        return Path(str(path))
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give a file name")
    _check_folder(path.absolute().parent, f"{flag} {path}")
    return path
