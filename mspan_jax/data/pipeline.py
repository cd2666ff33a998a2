"""Training input pipeline: aligned random LR/HR patches from decoded-once images, per-host batches.

`create_train_iterator(config)` is the entry point. Design (docs/data.md, "Training pipeline"):

* **What to train on** (`train_spec.py`): `config.data` checked once into a `PipelineSpec`.
* **Sources and sharding** (`sources.py`): "div2k" (tfds), "div2k_folder" (DIV2K_train_HR
  [+ LR_bicubic]), "folder" (any HR images), "skimage" (bundled photos), "paired" (LQ/GT folders,
  restoration); process `p` of `P` keeps a contiguous, even slice of the sorted image list.
* **Decode once** (`train_images.py`, `decoded_cache.py`): this process's shard is decoded (and, when
  the LR is made on the fly, degraded) once, by the worker processes, into a uint8 cache: in memory,
  or one memory-mapped file that every worker maps instead of copying, optionally kept in
  `config.data.cache_dir` so that a restarted run does not decode again. Memory: about
  H*W*3*(1 + 1/s^2) bytes per image, ~7 GB for all 800 DIV2K x4 training images on one host, divided
  by the number of processes.
* **Random access by step** (`patches.py`): batch `k` is a pure function of (seed, process, k):
  deterministic for a seed, and `start_step=k` starts there without touching the first k batches.
* **Workers** (here, `grain_workers.py`): grain, a `MapDataset` over step indices mapped to
  `batch(k)`, assembled by `config.data.num_workers` processes (`mp_prefetch`; 0 = one thread of this
  process; -1 = one per core), each `config.data.prefetch` batches ahead. Worker i builds steps
  i, i + N, ...; grain hands them back in step order, so any worker count gives the same batches.
* **uint8 to the device**: a worker cuts a batch straight into shared memory it reuses
  (`shm_slots.py`); the batch stays uint8 until the jitted train step makes it float32
  (`patches.device_batch_to_float`). By default this process copies it out of its slot once (plain
  arrays, safe anywhere). The training loop takes the slots themselves (`copy=False`) and keeps each
  batch in `BatchesInFlight` until the step that read it has finished: JAX on CPU reads a host array
  in place (no copy at all), and on an accelerator the one copy is the transfer to the device.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grain
import jax
import numpy as np

from mspan_jax.data.grain_workers import in_workers
from mspan_jax.data.patches import Batch, BatchSampler
from mspan_jax.data.shm_slots import Receiver, new_token, remove_unreceived
from mspan_jax.data.train_images import load_train_images
from mspan_jax.data.train_spec import resolve_spec

_LAST_STEP = 2**62  # the step dataset is "endless": training stops long before


class TrainIterator(Iterator[Batch]):
    """Yields `sampler.patches(k)` (uint8; float32 only for a noisy restoration input) for
    k = start_step, start_step + 1, ... in order.

    grain: a MapDataset over the step numbers mapped to `sampler.patches`, cut by `workers` processes
    (`mp_prefetch`, worker i makes steps start + i, start + i + N, ...) or, with 0, by one thread of
    this process; each keeps `prefetch` batches ready. A worker's batch arrives in shared memory (its
    reused slots, `shm_slots`); no conversion here (the train step converts on the device,
    `patches.device_batch_to_float`; on the host, `patches.batch_to_float`). The workers unpickle the
    sampler, so they map the decoded images' file instead of copying them. `close()` stops them; an
    error in a worker re-raises on `next()`.

    `copy=True` (default): each batch is copied out of its slot into plain arrays, and the slot is free
    at once. `copy=False`: the arrays are the slots themselves (no copy; measured in docs/data.md), and
    a slot stays busy while its arrays live. The caller must then keep the batch alive until every
    computation that reads it has finished (`BatchesInFlight`): JAX on CPU reads a host array in place
    and does not keep the array object alive, so a slot dropped earlier can be refilled under a running
    step (2-worker training was nondeterministic that way; a test runs it twice)."""

    def __init__(self, sampler: BatchSampler, start_step: int = 0, prefetch: int = 2, workers: int = 0,
                 *, copy: bool = True):
        self.sampler, self.step, self.workers, self.copy = sampler, start_step, workers, copy
        self._token = new_token()  # this iterator's shared-memory segments
        self._cutting = _CallsRunning()
        cut = functools.partial(sampler.patches, slots=self._token)
        if not workers:  # cut by grain's prefetch thread here, which close() must wait for
            cut = self._cutting.wrap(cut)
        steps = grain.MapDataset.range(start_step, _LAST_STEP).map(cut)
        self._iterator = iter(in_workers(steps, workers, prefetch))
        self._receiver = Receiver()
        self._received = 0

    def __next__(self) -> Batch:
        if self._iterator is None:
            raise StopIteration
        batch = self._receiver.receive(self._iterator.__next__())
        if self.copy:
            batch = {key: np.array(value) for key, value in batch.items()}
        self.step += 1
        self._received += 1
        if self._received == self.workers:  # every worker has mapped the images by now
            self.sampler.images.release_temporary()
        return batch

    def close(self) -> None:
        iterator, self._iterator = getattr(self, "_iterator", None), None
        if iterator is not None and hasattr(iterator, "close"):
            iterator.close()
            if self.workers:
                remove_unreceived(self._token)  # the workers are stopped: what they made, never sent
            else:  # grain's close() cancels the pending batches but returns while one is being cut
                self._cutting.wait()
        if hasattr(self, "sampler"):
            self.sampler.images.release_temporary()

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> TrainIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CallsRunning:
    """Counts the calls of a wrapped function that are running (in grain's prefetch threads), so that
    `wait` returns when none is: the decoded images they read may be released right after."""

    def __init__(self) -> None:
        self._done = threading.Condition()
        self._running = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._done:
                self._running += 1
            try:
                return function(*args, **kwargs)
            finally:
                with self._done:
                    self._running -= 1
                    self._done.notify_all()

        return call

    def wait(self, timeout: float = 600.0) -> None:
        with self._done:
            self._done.wait_for(lambda: self._running == 0, timeout)


class BatchesInFlight:
    """Host batches kept alive until the train step that read them has finished, so that a worker's
    slot (`TrainIterator(copy=False)`) is not refilled under a running step. Holding a batch waits
    for the step `depth` steps before it: at most `depth + 1` steps are in flight, enough to keep
    the device busy while the host takes the next batch."""

    def __init__(self, depth: int = 1):
        self.depth = depth
        self._held: collections.deque[tuple[Batch, Any]] = collections.deque()

    def hold(self, batch: Batch, outputs: Any) -> None:
        """Keeps `batch` until `outputs` (any output of the step that read it) are ready."""
        self._held.append((batch, outputs))
        while len(self._held) > self.depth:
            _, outputs = self._held.popleft()
            jax.block_until_ready(outputs)

    def release_all(self) -> None:
        """Waits for every held step (a failed one is not re-raised here), then drops the batches."""
        while self._held:
            _, outputs = self._held.popleft()
            with contextlib.suppress(Exception):
                jax.block_until_ready(outputs)


def create_train_iterator(config: Any, *, start_step: int = 0, process_index: int | None = None,
                          process_count: int | None = None, verbose: bool = True,
                          copy: bool = True) -> TrainIterator:
    """Per-host training batches `{"lr": (B_local, p, p, C), "hr": (B_local, p*s, p*s, C)}` uint8
    (a synthetic noisy restoration `lr`: float32 in about [0, 1]; `patches.batch_to_float` or, in a
    jitted step, `patches.device_batch_to_float` gives float32 in [0, 1]),
    `B_local = config.train.batch_size // process_count`, `p = hr_patch_size // scale`.

    Process defaults: `jax.process_index()` / `jax.process_count()`. Batch k depends only on
    (config.seed, process, k), so `start_step=k` resumes exactly without replaying. Decodes this
    process's shard once up front (progress line on stderr when `verbose`). `copy=False`: batches
    in the workers' shared memory, to be held in `BatchesInFlight` (`TrainIterator`)."""
    if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) or start_step < 0:
        raise ValueError(f"start_step must be an integer >= 0, got {start_step!r}")
    spec = resolve_spec(config, process_index, process_count)
    images = load_train_images(spec, verbose=verbose)
    return TrainIterator(BatchSampler(spec, images), int(start_step), spec.prefetch,
                         workers=spec.num_workers, copy=copy)
