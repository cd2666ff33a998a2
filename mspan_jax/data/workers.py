"""The worker processes of the training pipeline, and the shared memory their batches travel in.

**Workers.** grain processes serve the pipeline's two parallel stages: decoding the images once and
cutting batches (`input_pipeline.py`). A `MapDataset` read through `in_workers` yields its elements in
index order whatever the number of workers, so the output does not depend on it.

**Slots.** A worker reuses shared-memory slots for its batches, so that a batch costs no new shared
memory: grain's own path (`SharedMemoryArray`) creates a segment per array in the worker, faults its
fresh pages in, and has the training process map, fault and unlink it again, about as much CPU per
patch as cutting the patch (measured in docs/data.md).

A worker process owns up to `MAX_SLOTS` segments and one flags segment (a byte per slot: 1 while the
training process may still read that slot). `WorkerSlots.array` hands out a free slot as an ndarray
to cut into (a new segment only while every slot is busy); the batch crosses to the training process
as `SlotRef`s (names, shape, dtype: a few bytes through grain's queue), which `Receiver` turns into
`SlotArray` views of the same pages. The segments are mapped there once (and unlinked at once: the
two mappings keep them alive); a worker that ends unlinks those never received (batches in flight),
and the training process removes what a stopped or killed worker left (`remove_unreceived`: the
segments carry their iterator's random token, so closing one iterator touches no other, in this
process or in another container sharing /dev/shm), so nothing is left in /dev/shm and the resource
tracker has nothing to warn about. A slot is free again when its `SlotArray` (and every view of
it) is gone; JAX on CPU may still read its pages then, so the training loop holds each batch
until its step has finished (`input_pipeline.BatchesInFlight`).
"""

from __future__ import annotations

import _posixshmem
import contextlib
import dataclasses
import itertools
import mmap
import os
import secrets
import signal
import threading
import time
from multiprocessing import resource_tracker, shared_memory, util
from pathlib import Path
from typing import Any

import grain
import numpy as np

from mspan_jax.interrupts import finish_first

_IN_WORKER = False


def in_worker() -> bool:
    """True in a grain worker process started by `in_workers` (its output goes to shared memory)."""
    return _IN_WORKER


def _worker_init(index: int, count: int) -> None:
    """Runs first in every grain worker: marks the process as one (`in_worker`); ignores SIGINT and
    SIGTERM, which Ctrl-C and schedulers send to the whole process group (the training process stops
    its workers itself, after saving on SIGTERM, without a traceback from each worker or a leaked
    shared-memory block); and exits when the training process is gone (killed by SIGKILL, say)
    instead of lingering as an orphan that holds memory."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="mspan-orphan-watch").start()


def _mark_flags_parsed() -> None:
    """grain reads absl flags; outside an absl app (tests, argparse scripts) they are not parsed yet."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def in_workers(dataset: grain.MapDataset, workers: int, buffer: int) -> grain.IterDataset:
    """`dataset` read in order, its elements made by `workers` processes (0: one thread here)."""
    iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=buffer))
    if workers == 0:
        return iterable
    _mark_flags_parsed()
    return iterable.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer),
        worker_init_fn=_worker_init)


# Shared-memory slots: what a worker cuts a batch into, and the training process reads in place.

MAX_SLOTS = 256  # per worker; beyond, grain's own shared memory (a consumer holding many batches)


@dataclasses.dataclass(frozen=True)
class SlotRef:
    """An array in slot `index` of a worker's segments: what crosses the process boundary."""
    flags: str
    segment: str
    index: int
    shape: tuple[int, ...]
    dtype: str


_PREFIX = "mspan-slots"
_counter = itertools.count()


def new_token() -> str:
    """A name for one iterator's segments: random (PIDs repeat across containers sharing /dev/shm,
    and one process may run several iterators)."""
    return secrets.token_hex(8)


def _new_segment(size: int, token: str) -> shared_memory.SharedMemory:
    """A segment named after its iterator's `token`, so that the training process can remove the
    ones a stopped worker left unreceived (`remove_unreceived`)."""
    name = f"{_PREFIX}-{token}-{os.getpid()}-{next(_counter)}"
    return shared_memory.SharedMemory(name=name, create=True, size=size)


def remove_unreceived(token: str) -> None:
    """Unlinks (and unregisters from the resource tracker) the segments the workers of the iterator
    `token` made but the training process never received: a worker stopped by `close()` or killed
    does not unlink them itself, and the tracker would, with a "leaked shared_memory" warning."""
    for path in Path("/dev/shm").glob(f"{_PREFIX}-{token}-*"):
        with contextlib.suppress(FileNotFoundError):
            _posixshmem.shm_unlink("/" + path.name)
            resource_tracker.unregister("/" + path.name, "shared_memory")


class WorkerSlots:
    """The segments of one worker process (created in it, on first use)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._flags_shm = _new_segment(MAX_SLOTS, token)
        self.flags = np.ndarray((MAX_SLOTS,), np.uint8, buffer=self._flags_shm.buf)
        self.flags[:] = 0
        self._segments: list[shared_memory.SharedMemory] = []
        util.Finalize(self, WorkerSlots._unlink, args=([self._flags_shm], self._segments),
                      exitpriority=0)  # when the worker ends (not when killed: the tracker does)

    @staticmethod
    def _unlink(*groups: list[shared_memory.SharedMemory]) -> None:
        """Removes the names of segments the training process never received (it unlinks the rest)."""
        for shm in (shm for group in groups for shm in group):
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()

    def array(self, shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, SlotRef] | None:
        """A free slot of at least the array's bytes as an ndarray to fill, and its reference;
        None when all `MAX_SLOTS` are busy."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        index = next((j for j, shm in enumerate(self._segments)
                      if not self.flags[j] and shm.size >= nbytes), None)
        if index is None:
            if len(self._segments) == MAX_SLOTS:
                return None
            self._segments.append(_new_segment(max(nbytes, 1), self.token))
            index = len(self._segments) - 1
        self.flags[index] = 1
        shm = self._segments[index]
        return (np.ndarray(shape, dtype, buffer=shm.buf),
                SlotRef(self._flags_shm.name, shm.name, index, tuple(shape), dtype.str))


_worker_slots: dict[str, WorkerSlots] = {}  # by iterator token


def worker_array(shape: tuple[int, ...], dtype: Any, token: str) -> tuple[np.ndarray, Any]:
    """In a worker: an array to cut into, and what to send for it (a `SlotRef`, or, with every slot
    busy, grain's `SharedMemoryArray` itself), in the segments of the iterator `token`."""
    slots = _worker_slots.get(token)
    if slots is None:
        slots = _worker_slots[token] = WorkerSlots(token)
    made = slots.array(shape, dtype)
    if made is None:
        from grain.multiprocessing import SharedMemoryArray

        array = SharedMemoryArray(shape, dtype)
        return array, array
    return made


class SlotArray(np.ndarray):
    """A received slot: frees it for its worker when this array and its views are gone."""

    _flags: np.ndarray | None = None
    _index = -1

    def __array_finalize__(self, obj: Any) -> None:
        self._flags, self._index = None, -1  # views and results do not own the slot

    def __array_wrap__(self, obj: Any, context: Any = None, return_scalar: bool = False) -> Any:
        if return_scalar:
            return obj[()]
        return obj.view(np.ndarray)  # results of ufuncs are plain arrays

    def __del__(self) -> None:
        if self._flags is not None:
            self._flags[self._index] = 0


@finish_first  # unlinked and unregistered, or neither: else the tracker warns of a leak at exit
def _map_and_unlink(name: str) -> np.ndarray:
    """A worker's segment mapped here as bytes, and unlinked: both processes map it now, so it is gone
    from /dev/shm when both have ended. Arrays on it keep the mapping (an mmap) alive."""
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    try:
        mapping = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    _posixshmem.shm_unlink("/" + name)
    resource_tracker.unregister("/" + name, "shared_memory")  # registered by the worker that made it
    return np.frombuffer(mapping, np.uint8)


class Receiver:
    """The training process's side: the workers' segments, each mapped once."""

    def __init__(self) -> None:
        self._mapped: dict[str, np.ndarray] = {}

    def _map(self, name: str) -> np.ndarray:
        mapped = self._mapped.get(name)
        if mapped is None:
            mapped = self._mapped[name] = _map_and_unlink(name)
        return mapped

    def array(self, ref: SlotRef) -> SlotArray:
        flags, data = self._map(ref.flags), self._map(ref.segment)
        dtype = np.dtype(ref.dtype)
        size = int(np.prod(ref.shape)) * dtype.itemsize
        array = data[:size].view(dtype).reshape(ref.shape).view(SlotArray)
        array._flags, array._index = flags, ref.index
        return array

    def receive(self, batch: dict[str, Any]) -> dict[str, Any]:
        """`batch` with its `SlotRef`s as arrays (other values unchanged)."""
        return {key: self.array(value) if isinstance(value, SlotRef) else value
                for key, value in batch.items()}
