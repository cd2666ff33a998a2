"""The decoded training images of one process, kept once for every process that cuts batches from them.

The training pipeline decodes its shard once (docs/data.md, "Training pipeline"). Where the images live:

* in memory (`DecodedImages(images)`), when batches are assembled in the training process itself;
* in one flat uint8 file, memory-mapped (`CacheWriter` -> `DecodedImages` with a `path`), when worker
  processes assemble batches: a worker unpickles only the path and the layout and maps the same pages,
  so N workers share one copy instead of holding N. Without `config.data.cache_dir` the file is a
  temporary one in shared memory (/dev/shm) when it has room for the shard (estimated from the
  first image; a shard that outgrows it all the same moves on), else in the temp folder, removed
  as soon as every worker has mapped it;
* in `config.data.cache_dir` (`DiskCache`): the same file plus an index JSON naming what it was built
  from, so a restarted or resumed run maps it instead of decoding again. A cache built from other
  files or settings (stale) or whose bytes do not match their CRC-32 (damaged) is rebuilt with a
  warning; a file there that is not such a cache (foreign) is refused in one line.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import hashlib
import json
import os
import re
import tempfile
import uuid
import warnings
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mspan_jax.errors import ConfigError, DataError
from mspan_jax.files import write_json_atomic
from mspan_jax.progress import ProgressLine

CACHE_FORMAT = "mspan_jax decoded training images"
CACHE_VERSION = 1
_ALIGN = 64  # bytes: every array starts on a cache-line boundary
_TEMP_PREFIX = "mspan_jax-decoded-"
SHARED_MEMORY = Path("/dev/shm")


@dataclasses.dataclass(frozen=True)
class TrainImage:
    """One decoded training image: `target` (HR / GT) and `source` (LR / LQ) uint8, aligned so that
    `source.shape[:2] * scale == target.shape[:2]`. `source` is None when it is made per patch
    (restoration by synthetic noise)."""

    name: str
    target: np.ndarray
    source: np.ndarray | None


# Layout of one image in the file: name, (offset, shape) of target, of source or None, CRC-32.
_Entry = dict[str, Any]


class DecodedImages(Sequence[TrainImage]):
    """The decoded images of one shard, in memory or as views into one memory-mapped file.

    A file-backed instance pickles as (path, layout): a worker process that unpickles it maps the
    file read-only, sharing the pages with every other process."""

    def __init__(self, images: Sequence[TrainImage], path: Path | None = None,
                 entries: Sequence[_Entry] = (), temporary: bool = False):
        self.images, self.path, self.entries = list(images), path, list(entries)
        self.temporary = temporary

    @classmethod
    def map_file(cls, path: Path, entries: Sequence[_Entry], temporary: bool = False) -> DecodedImages:
        """Maps `path` read-only and returns views of the images `entries` describe."""
        data = np.memmap(path, np.uint8, mode="r") if path.stat().st_size else np.empty(0, np.uint8)
        data = np.asarray(data)

        def view(part: list | None) -> np.ndarray | None:
            if part is None:
                return None
            offset, shape = int(part[0]), tuple(int(n) for n in part[1])
            return data[offset:offset + int(np.prod(shape))].reshape(shape)

        images = [TrainImage(e["name"], view(e["target"]), view(e["source"])) for e in entries]
        return cls(images, path, entries, temporary)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):  # type: ignore[override]
        return self.images[index]

    def __iter__(self) -> Iterator[TrainImage]:
        return iter(self.images)

    @property
    def nbytes(self) -> int:
        return sum(im.target.nbytes + (0 if im.source is None else im.source.nbytes)
                   for im in self.images)

    def __getstate__(self) -> dict[str, Any]:
        if self.path is None:
            raise TypeError("in-memory DecodedImages are not sent to worker processes; build them "
                            "with a CacheWriter (file-backed) instead")
        return {"path": str(self.path), "entries": self.entries}

    def __setstate__(self, state: dict[str, Any]) -> None:
        mapped = DecodedImages.map_file(Path(state["path"]), state["entries"])
        self.__dict__.update(mapped.__dict__)

    def release_temporary(self) -> None:
        """Removes a temporary backing file: the processes that mapped it keep their pages, the
        memory is freed when the last of them exits (so a killed run leaves nothing behind)."""
        if self.temporary and self.path is not None:
            self.path.unlink(missing_ok=True)
            self.temporary = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_cache_path(nbytes_hint: int = 0, shared_memory: bool = True) -> Path:
    """A new temporary file name in shared memory (`SHARED_MEMORY`) when it has room for
    `nbytes_hint` (and `shared_memory`), else in the temp folder. Files of such caches whose
    process is gone (killed) are removed first."""
    folders = [SHARED_MEMORY] if shared_memory else []
    folders.append(Path(tempfile.gettempdir()))
    folder = next((f for f in folders if f.is_dir() and os.access(f, os.W_OK)
                   and _free_bytes(f) > 1.2 * nbytes_hint), folders[-1])
    for stale in folder.glob(f"{_TEMP_PREFIX}*.u8"):
        m = re.match(rf"{_TEMP_PREFIX}(\d+)-", stale.name)
        if m and not _pid_alive(int(m.group(1))):
            stale.unlink(missing_ok=True)
    return folder / f"{_TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}.u8"


def _free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _crc(arrays: Sequence[np.ndarray | None]) -> int:
    crc = 0
    for a in arrays:
        if a is not None:
            crc = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), crc)
    return crc


class CacheWriter:
    """Appends decoded images to a new file (temporary name until `finish`) and maps it.

    `path=None` (with `temporary`): a temporary cache placed by `temporary_cache_path` for
    `expected_images` images the size of the first; one in shared memory that runs out of room
    all the same moves to the temp folder and goes on."""

    def __init__(self, path: Path | None, temporary: bool = False, expected_images: int = 1):
        self.temporary, self._expected = temporary, expected_images
        self.entries: list[_Entry] = []
        self._offset = 0
        self._file: Any = None
        self.path = self._tmp = path  # type: ignore[assignment]
        if path is not None:
            self._open(path)

    def _open(self, path: Path) -> None:
        self.path = path
        self._tmp = (path if self.temporary
                     else path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"))
        self._file = open(self._tmp, "ab")  # noqa: SIM115 (closed in finish / abort)
        if self.temporary:
            atexit.register(path.unlink, missing_ok=True)

    def _put(self, array: np.ndarray | None) -> list | None:
        if array is None:
            return None
        pad = -self._offset % _ALIGN
        self._file.write(b"\0" * pad)
        self._offset += pad
        start = self._offset
        self._file.write(memoryview(np.ascontiguousarray(array, np.uint8)).cast("B"))
        self._offset += array.nbytes
        return [start, list(array.shape)]

    def _move_to_temp_folder(self, keep: int) -> None:
        """Moves the first `keep` bytes written to a new temporary file in the temp folder."""
        self._file.close()
        old = self._tmp
        self._open(temporary_cache_path(shared_memory=False))
        with open(old, "rb") as src:
            while keep > 0:
                chunk = src.read(min(keep, 1 << 24))
                if not chunk:
                    break
                self._file.write(chunk)
                keep -= len(chunk)
        old.unlink(missing_ok=True)
        self._offset = self._file.tell()

    def add(self, image: TrainImage) -> None:
        if self._file is None:  # placed where the whole shard fits, as estimated from this image
            nbytes = image.target.nbytes + (0 if image.source is None else image.source.nbytes)
            self._open(temporary_cache_path(nbytes * self._expected))
        before = self._offset
        for attempt in range(2):
            try:
                target, source = self._put(image.target), self._put(image.source)
                self._file.flush()  # a full disk shows here, not later in finish()
                break
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if attempt == 0 and self.temporary and self.path.parent == SHARED_MEMORY:
                    self._move_to_temp_folder(before)
                    continue
                self.abort()
                raise DataError(
                    f"{self.path.parent}: no space left for the decoded images ({self._offset >> 20} "
                    "MB written); set config.data.cache_dir to a local folder with room, or "
                    "config.data.num_workers=0 to keep them in memory") from None
        self.entries.append({"name": image.name, "target": target, "source": source,
                             "crc32": _crc([image.target, image.source])})

    def finish(self) -> DecodedImages:
        """Closes the file, moves it to its final name and maps it."""
        self._file.close()
        if not self.temporary:
            os.replace(self._tmp, self.path)
        return DecodedImages.map_file(self.path, self.entries, temporary=self.temporary)

    def abort(self) -> None:
        """Closes and removes the unfinished file (safe to call twice)."""
        if self._file is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)


def fingerprint(parts: Sequence[Any]) -> str:
    """A short hash of JSON-able parts (file names, sizes and times; builder versions)."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()


class DiskCache:
    """`<cache_dir>/<tag>.json` (format, key, layout) + `<tag>.<id>.u8` (the bytes it names).

    `key` is everything the decoded bytes depend on (source files and their sizes/times, scale,
    degradation, shard, ...); a cache whose key differs was built for something else and is rebuilt."""

    def __init__(self, cache_dir: str, tag: str, key: dict[str, Any]):
        if "://" in cache_dir:
            raise ConfigError(f"config.data.cache_dir={cache_dir}: must be a local folder (the cache "
                              "is memory-mapped); use a local disk or '' for none")
        self.folder = Path(cache_dir).expanduser()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"config.data.cache_dir={cache_dir}: cannot create it "
                                  f"({e.strerror or e}); choose a writable folder") from None
        self.index = self.folder / f"{tag}.json"
        self.tag, self.key = tag, key

    def open(self, verbose: bool = True) -> DecodedImages | None:
        """The cached images when the cache is whole and was built for `key`; None (after a warning
        saying why) when it must be rebuilt; ValueError when the index is not such a cache."""
        if not self.index.exists():
            return None
        try:
            index = json.loads(self.index.read_text())
            if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
                raise ValueError("no 'format' of a decoded-image cache")
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"{self.index}: not a decoded-image cache of mspan_jax ({e}); delete it or "
                            "set config.data.cache_dir to another folder") from None
        if index.get("version") != CACHE_VERSION or index.get("key") != self.key:
            diff = sorted(k for k in set(self.key) | set(index.get("key", {}))
                          if self.key.get(k) != index.get("key", {}).get(k))
            why = f"format version {index.get('version')}" if index.get("version") != CACHE_VERSION \
                else f"built for other {', '.join(diff)}"
            warnings.warn(f"{self.index}: stale ({why}); decoding the images again", stacklevel=3)
            return None
        data = self.folder / str(index.get("data", ""))
        size = int(index.get("size", -1))
        if not data.is_file() or data.stat().st_size != size:
            found = f"{data.stat().st_size} bytes" if data.is_file() else "missing"
            warnings.warn(f"{self.index}: damaged ({data.name} is {found}, expected {size} bytes); "
                          "decoding the images again", stacklevel=3)
            return None
        images = DecodedImages.map_file(data, index["images"])
        bad = self._verify(images, verbose)
        if bad:
            warnings.warn(f"{self.index}: damaged ({bad} fails its CRC-32 check); decoding the images "
                          "again", stacklevel=3)
            return None
        return images

    def _verify(self, images: DecodedImages, verbose: bool) -> str | None:
        """The name of the first image whose bytes do not match their CRC, or None."""
        progress = ProgressLine(len(images), f"checking the decoded-image cache {self.index.name}:",
                                enabled=verbose)
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # zlib.crc32 releases the GIL
            crcs = pool.map(lambda im: _crc([im.target, im.source]), images.images)
            for entry, crc in zip(images.entries, crcs, strict=True):
                progress.update("images")
                if crc != entry["crc32"]:
                    return entry["name"]
        return None

    def writer(self) -> CacheWriter:
        return CacheWriter(self.folder / f"{self.tag}.{uuid.uuid4().hex[:8]}.u8")

    def commit(self, writer: CacheWriter) -> DecodedImages:
        """Finishes `writer`, points the index at its file, and removes the file it replaces."""
        images = writer.finish()
        old = None
        if self.index.exists():
            try:
                old = self.folder / str(json.loads(self.index.read_text()).get("data", ""))
            except ValueError:
                old = None
        write_json_atomic(self.index, {
            "format": CACHE_FORMAT, "version": CACHE_VERSION, "key": self.key,
            "data": writer.path.name, "size": writer.path.stat().st_size, "images": writer.entries})
        if old is not None and old.is_file() and old != writer.path:
            old.unlink(missing_ok=True)  # a run that still maps it keeps its pages
        return images
