"""The training input pipeline: per-host batches of aligned LR/HR patches, the same batches for a
seed whatever the number of workers, resumable at any step. The file to read first.

`create_train_iterator(config)` runs the stages in order (docs/data.md, "Training pipeline"):

1. **Spec** (`train_spec.resolve_spec`): `config.data` checked once into a `PipelineSpec`.
2. **Source and shard** (`source_shard`; the loaders in `sources.py`): the images of
   `config.data.source` ("div2k" tfds, "div2k_folder", "folder", "skimage", "paired") in a fixed
   order; process `p` of `P` keeps a contiguous, even slice of them.
3. **Decode once** (`load_train_images`): the shard read, aligned and degraded once, by the worker
   processes, into uint8 `DecodedImages` (`decoded_cache.py`): in memory, or one memory-mapped file
   that every worker maps instead of copying, optionally kept in `config.data.cache_dir` so that a
   restarted run does not decode again. Memory: about H*W*3*(1 + 1/s^2) bytes per image, ~7 GB for
   all 800 DIV2K x4 training images on one host, divided by the number of processes.
4. **Patches** (`BatchSampler`): batch `k` is its crops, flips / transpose and noise, a pure
   function of (seed, process, k): deterministic for a seed, and `start_step=k` starts there
   without touching the first k batches.
5. **Batches in step order** (`TrainIterator`): grain, a `MapDataset` over step indices mapped to
   `BatchSampler.patches`, cut by `config.data.num_workers` processes (`workers.py`; 0 = one thread
   of this process; -1 = one per core), each `config.data.prefetch` batches ahead. Worker i cuts
   steps i, i + N, ...; grain hands them back in step order, so any worker count gives the same
   batches. A worker cuts a batch straight into shared memory it reuses (`workers.py`'s slots).
6. **To the devices** (the training loop, `train/loop.py`): `sharding.make_global_batch` puts the
   host batch on the devices; the batch stays uint8 until the jitted train step makes it float32
   (`device_batch_to_float`). The loop takes the batches in their slots (`copy=False`: no copy on
   the host) and keeps each in `BatchesInFlight` until the step that read it has finished; other
   callers get plain arrays copied out of the slots (the default).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import grain
import jax
import jax.numpy as jnp
import numpy as np

from mspan_jax.data.decoded_cache import (
    CacheWriter,
    DecodedImages,
    DiskCache,
    TrainImage,
    fingerprint,
)
from mspan_jax.data.degradations import add_gaussian_noise, degrade, rgb_to_gray
from mspan_jax.data.imresize import bicubic_downscale, modcrop
from mspan_jax.data.sources import (
    LoadedItem,
    Loader,
    div2k_tfds,
    div2k_tfds_items,
    shard,
    source_loaders,
)
from mspan_jax.data.train_spec import PipelineSpec, resolve_spec
from mspan_jax.data.workers import (
    Receiver,
    in_worker,
    in_workers,
    new_token,
    remove_unreceived,
    worker_array,
)
from mspan_jax.errors import DataError
from mspan_jax.interrupts import finish_first
from mspan_jax.progress import ProgressLine


def create_train_iterator(config: Any, *, start_step: int = 0, process_index: int | None = None,
                          process_count: int | None = None, verbose: bool = True,
                          copy: bool = True) -> TrainIterator:
    """Per-host training batches `{"lr": (B_local, p, p, C), "hr": (B_local, p*s, p*s, C)}` uint8
    (a synthetic noisy restoration `lr`: float32 in about [0, 1]; `batch_to_float` or, in a
    jitted step, `device_batch_to_float` gives float32 in [0, 1]),
    `B_local = config.train.batch_size // process_count`, `p = hr_patch_size // scale`.

    Process defaults: `jax.process_index()` / `jax.process_count()`. Batch k depends only on
    (config.seed, process, k), so `start_step=k` resumes exactly without replaying. Decodes this
    process's shard once up front (progress line on stderr when `verbose`). `copy=False`: batches
    in the workers' shared memory, to be held in `BatchesInFlight` (`TrainIterator`)."""
    if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) or start_step < 0:
        raise ValueError(f"start_step must be an integer >= 0, got {start_step!r}")
    spec = resolve_spec(config, process_index, process_count)  # 1. spec
    images = load_train_images(spec, verbose=verbose)  # 2. source and shard, 3. decoded once
    sampler = BatchSampler(spec, images)  # 4. patches of step k
    return TrainIterator(sampler, int(start_step), spec.prefetch,  # 5. batches in step order
                         workers=spec.num_workers, copy=copy)


# Stage 2: the source's images, this process's shard.


class SourceShard(NamedTuple):
    """This process's inputs, before decoding: `loaders` (file sources, in order) or `tfds` (the
    `div2k` builder, split and config, decoded by tf.data); `inputs` names what they read (the
    decoded-image cache's key), `total` how many (0: unknown)."""

    loaders: list[Loader] | None
    tfds: tuple[Any, str, str] | None
    inputs: list
    total: int


def source_shard(spec: PipelineSpec) -> SourceShard:
    """The images of `spec.source` that process `spec.process_index` decodes; raises when it has
    none (fewer images than processes)."""
    if spec.source == "div2k":
        tfds_source = div2k_tfds(spec)
        builder, split, _ = tfds_source
        try:
            total = int(builder.info.splits[split].num_examples)
        except (KeyError, ValueError, TypeError):
            total = 0
        inputs = [builder.name, str(builder.version), str(builder.data_dir), str(split)]
        return SourceShard(None, tfds_source, inputs, total)
    loaders = shard(source_loaders(spec), spec.process_index, spec.process_count)
    if not loaders:
        raise DataError(f"config.data.source={spec.source!r}: process {spec.process_index} of "
                         f"{spec.process_count} has no images (fewer images than processes)")
    return SourceShard(loaders, None, [loader.inputs() for loader in loaders], len(loaders))


# Stage 3: decode once. Each image of the shard is read by its loader and aligned / degraded by
# `prepare_image` in the worker processes, in input order. When the LR is made on the fly, BI / BD
# are applied to the whole image here, once; DN only its bicubic part (its noise is drawn per patch).


class ModcropWarning(UserWarning):
    """A training image not divisible by the scale was cropped to it: summed up in one line."""


def prepare_image(spec: PipelineSpec, name: str, target: np.ndarray, source: np.ndarray | None,
                  origin: str) -> TrainImage | None:
    """Aligns / degrades one decoded image; None (with a warning naming `origin`) when it cannot give a
    patch. HR not divisible by the scale is cropped (warning); a premade LR of the wrong size is
    skipped."""
    s, p = spec.scale, spec.lr_patch
    lr_size = (target.shape[0] // s, target.shape[1] // s)
    if target.shape[0] % s or target.shape[1] % s:
        lr_matches = source is not None and source.shape[:2] == lr_size
        if not lr_matches and spec.source != "skimage":  # bundled photos: modcrop is expected
            warnings.warn(f"{origin}: {target.shape[1]}x{target.shape[0]} is not divisible by "
                          f"scale {s}; HR cropped to a multiple of it (modcrop)", ModcropWarning,
                          stacklevel=2)
        target = modcrop(target, s)
    if source is not None and source.shape[:2] != (target.shape[0] // s, target.shape[1] // s):
        warnings.warn(f"skipped: {origin}: LR is {source.shape[1]}x{source.shape[0]}, expected "
                      f"{target.shape[1] // s}x{target.shape[0] // s} for scale {s}", stacklevel=2)
        return None
    if min(target.shape[:2]) < p * s:
        warnings.warn(f"skipped: {origin}: {target.shape[1]}x{target.shape[0]} is smaller than the "
                      f"{p * s}x{p * s} patch", stacklevel=2)
        return None
    if source is None and not spec.restoration:
        # BI / BD: the whole LR image once. DN: its bicubic part once, fresh noise per patch.
        source = bicubic_downscale(target, s) if spec.degradation == "DN" else \
            degrade(target, s, spec.degradation)
    if spec.gray_output:
        target = rgb_to_gray(target)
        source = None if source is None else rgb_to_gray(source)
    target = np.ascontiguousarray(target)
    return TrainImage(name, target, None if source is None else np.ascontiguousarray(source))


def _prepare_recorded(spec: PipelineSpec, item: LoadedItem) -> tuple[Any, list]:
    """`prepare_image` of a loaded item, with the warnings it raised returned (as (message, category)
    pairs) instead of shown, so that a worker process can hand them to the training process."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = None if item is None else prepare_image(spec, *item)
    found = None if image is None else (image.name, image.target, image.source)
    return found, [(str(w.message), w.category) for w in caught]


def _load_and_prepare(spec: PipelineSpec, loader: Loader) -> tuple[Any, list]:
    """One input read and prepared (in a decoding worker), its warnings recorded as `_prepare_recorded`
    records them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        item = loader()
    found, messages = _prepare_recorded(spec, item)
    return found, [(str(w.message), w.category) for w in caught] + messages


def _decoded_items(spec: PipelineSpec, loaders: Sequence[Loader] | None, tfds_source: Any
                   ) -> Iterator[tuple[Any, list]]:
    """(prepared image or None, warnings) per input, in input order."""
    if loaders is None:  # tfds: tf.data decodes in its own threads; degradation (if any) here
        for item in div2k_tfds_items(spec, *tfds_source):
            yield _prepare_recorded(spec, item)
        return
    work = functools.partial(_load_and_prepare, spec)
    workers = min(spec.num_workers, len(loaders))
    if workers == 0:
        yield from map(work, loaders)
        return
    iterator = iter(in_workers(grain.MapDataset.source(list(loaders)).map(work), workers, 1))
    try:
        yield from iterator
    finally:
        iterator.close()


def _cache_key(spec: PipelineSpec, inputs: list) -> dict[str, Any]:
    """What the decoded bytes depend on (JSON-normalised, as the index stores it)."""
    key = dict(source=spec.source, scale=spec.scale, hr_patch=spec.lr_patch * spec.scale,
               degradation=spec.degradation, restoration=spec.restoration, gray=spec.gray_output,
               shard=[spec.process_index, spec.process_count], image_range=list(spec.image_range),
               inputs=fingerprint(inputs), num_inputs=len(inputs))
    return json.loads(json.dumps(key))


def _say_cropped(messages: list[str], total: int, scale: int) -> None:
    """One warning for every training image modcrop cropped, with the first as the example."""
    example = messages[0].split(" is not divisible")[0]
    warnings.warn(f"{len(messages)} of {total} training images are not divisible by scale {scale}; "
                  f"HR cropped to a multiple of it (modcrop), e.g. {example}", ModcropWarning,
                  stacklevel=3)


def load_train_images(spec: PipelineSpec, verbose: bool = True) -> DecodedImages:
    """This process's shard (`source_shard`) decoded once, in a fixed order, with `spec.num_workers`
    processes; raises if nothing is usable. The images are file-backed (shareable with worker
    processes) when there are workers or a `cache_dir`; a valid cache in `cache_dir` is mapped
    instead of decoding."""
    what = f"decoding {spec.source} shard {spec.process_index + 1}/{spec.process_count}:"
    loaders, tfds_source, inputs, total = source_shard(spec)
    cache = None
    if spec.cache_dir:
        tag = (f"{spec.source}-x{spec.scale}-{spec.degradation.lower()}"
               f"-p{spec.process_index + 1}of{spec.process_count}")
        cache = DiskCache(spec.cache_dir, tag, _cache_key(spec, inputs))
        found = cache.open(verbose)
        if found is not None:
            return found
        writer: CacheWriter | None = cache.writer()
    elif spec.num_workers:
        writer = CacheWriter(None, temporary=True, expected_images=max(total, 1))
    else:
        writer = None

    kept: list[TrainImage] = []  # in memory (no writer)
    written = 0
    cropped: list[str] = []  # ModcropWarning messages: said once, with their count
    progress = ProgressLine(total, what, enabled=verbose and total > 0)
    try:
        for found, messages in _decoded_items(spec, loaders, tfds_source):
            for message, category in messages:
                if issubclass(category, ModcropWarning):
                    cropped.append(message)
                else:
                    warnings.warn(message, category, stacklevel=2)
            progress.update("images")
            if found is None:
                continue
            image = TrainImage(*found)
            if writer is not None:
                writer.add(image)
                written += 1
            else:
                kept.append(image)
        if not kept and not written:
            raise DataError(f"config.data.source={spec.source!r}: every training image was skipped "
                             f"(see the warnings above; need images of at least "
                             f"{spec.lr_patch * spec.scale}px per side)")
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if cropped:
            _say_cropped(cropped, total, spec.scale)
    if writer is None:
        return DecodedImages(kept)
    return cache.commit(writer) if cache is not None else writer.finish()


# Stage 4: patches, batch k as a function of (seed, process, k).

Batch = dict[str, np.ndarray]


def augment_pair(lr: np.ndarray, hr: np.ndarray, hflip: bool, vflip: bool, transpose: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The same flips / transpose (with the flips: all 8 rot90 variants) on both patches."""
    if hflip:
        lr, hr = lr[:, ::-1], hr[:, ::-1]
    if vflip:
        lr, hr = lr[::-1], hr[::-1]
    if transpose:
        lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
    return lr, hr


class BatchSampler:
    """Batch `k` of this process as a pure function of (seed, process, k) over the decoded images.

    Sample `j` of step `k` on process `p` uses image `perm_e[i % n]` with `i = k * B_local + j`,
    `e = i // n` and `perm_e` a permutation of the shard seeded by `(seed, p, e)` (every image once
    per epoch); its crop, flips / transpose and noise come from an RNG seeded by `(seed, p, k, j)`.
    LR and HR windows stay aligned: LR `(y, x, p, p)`, HR `(s*y, s*x, s*p, s*p)`, the same
    augmentation on both."""

    def __init__(self, spec: PipelineSpec, images: Sequence[TrainImage]):
        # DecodedImages pickle as (file, layout): worker processes map the images, not copy them.
        self.spec = spec
        self.images = images if isinstance(images, DecodedImages) else DecodedImages(images)
        self._perms: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.default_rng([self.spec.seed, self.spec.process_index, epoch, 0x5EED])
            perm = rng.permutation(len(self.images))
            self._perms = {epoch: perm}  # steps move forward: keep only the current epoch
        return perm

    def image_index(self, step: int, j: int) -> int:
        """Which decoded image sample `j` of `step` is cut from."""
        i = step * self.spec.batch_local + j
        n = len(self.images)
        return int(self._permutation(i // n)[i % n])

    def fill(self, step: int, j: int, lr_out: np.ndarray, hr_out: np.ndarray) -> np.random.Generator:
        """Writes sample j of `step` (uint8 crops, augmented, DN noise applied) into the outputs;
        returns its RNG, which restoration then uses for the synthetic noise."""
        spec = self.spec
        image = self.images[self.image_index(step, j)]
        rng = np.random.default_rng([spec.seed, spec.process_index, step, j])
        s, p = spec.scale, spec.lr_patch
        h, w = image.target.shape[0] // s, image.target.shape[1] // s
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        hr = image.target[y * s:(y + p) * s, x * s:(x + p) * s]
        lr = image.source[y:y + p, x:x + p] if image.source is not None else hr
        flips = rng.integers(0, 2, size=3) if spec.augment else (0, 0, 0)
        lr, hr = augment_pair(lr, hr, *(bool(f) for f in flips))
        if not spec.restoration and spec.degradation == "DN":  # fresh noise on the bicubic LR
            lr = add_gaussian_noise(np.ascontiguousarray(lr), spec.noise_sigma, rng,
                                    gray=spec.noise_gray)
        hr_out[...] = hr
        if image.source is not None or not spec.restoration:
            lr_out[...] = lr
        return rng

    def patches(self, step: int, slots: str = "") -> Batch:
        """Batch `step` as cut: `{"lr", "hr"}` uint8 (a quarter of float32's bytes to move between
        processes), except the noisy restoration input, float32 (it may leave [0, 1] slightly).
        In a grain worker the arrays are cut into the worker's shared-memory slots (`workers.py`, the
        segments of the iterator whose token is `slots`) and the batch holds their references,
        which `workers.Receiver` turns back into arrays."""
        spec = self.spec
        b, p, s, c = spec.batch_local, spec.lr_patch, spec.scale, 1 if spec.gray_output else 3
        new = functools.partial(worker_array, token=slots) if in_worker() else _local_array
        synthetic = spec.restoration and self.images[0].source is None  # LQ = GT + Gaussian noise
        # A synthetic LQ is made below as float32: its uint8 LR is never filled nor sent, so it
        # takes no slot (one taken per batch would never be freed).
        lr_u8, lr_sent = (_local_array if synthetic else new)((b, p, p, c), np.uint8)
        hr_u8, hr_sent = new((b, p * s, p * s, c), np.uint8)
        rngs = [self.fill(step, j, lr_u8[j], hr_u8[j]) for j in range(b)]
        if synthetic:
            hr = to_float(hr_u8)
            lr, lr_sent = new(hr.shape, np.float32)
            for j in range(b):
                lr[j] = add_gaussian_noise(hr[j], spec.noise_sigma, rngs[j], gray=spec.noise_gray)
        return {"lr": lr_sent, "hr": hr_sent}

    def batch(self, step: int) -> Batch:
        """`{"lr", "hr"}` float32 in [0, 1] (a noisy restoration input may leave [0, 1] slightly)."""
        return batch_to_float(self.patches(step))


def _local_array(shape: tuple[int, ...], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    array = np.empty(shape, dtype)
    return array, array


# Stage 5: batches in step order, cut by the workers.

_LAST_STEP = 2**62  # the step dataset is "endless": training stops long before


class TrainIterator(Iterator[Batch]):
    """Yields `sampler.patches(k)` (uint8; float32 only for a noisy restoration input) for
    k = start_step, start_step + 1, ... in order.

    grain: a MapDataset over the step numbers mapped to `sampler.patches`, cut by `workers` processes
    (`mp_prefetch`, worker i makes steps start + i, start + i + N, ...) or, with 0, by one thread of
    this process; each keeps `prefetch` batches ready. A worker's batch arrives in shared memory (its
    reused slots, `workers.py`); no conversion here (the train step converts on the device,
    `device_batch_to_float`; on the host, `batch_to_float`). The workers unpickle the
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
        batch = self._receiver.receive(_next_element(self._iterator))
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


# Stage 6, in the training loop: each host batch goes to the devices (`sharding.make_global_batch`)
# and is held in `BatchesInFlight` until its step has finished. It stays uint8 (a quarter of
# float32's bytes) until `device_batch_to_float`, inside the jitted train step, makes it float32 in
# [0, 1], bit for bit what `batch_to_float` gives on the host.


@finish_first
def _next_element(iterator: Any) -> Any:
    """`next(iterator)` that Ctrl-C does not cut: a KeyboardInterrupt raised inside grain's prefetch
    queue `get` loses its producer thread's wake-up, and closing the iterator then waits on that
    thread forever (grain 0.2.18). The interrupt takes effect after the step instead."""
    return iterator.__next__()


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


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]; float32 unchanged."""
    return x if x.dtype == np.float32 else np.multiply(x, np.float32(1 / 255), dtype=np.float32)


def batch_to_float(batch: Batch) -> Batch:
    """Every array of `batch` as float32 in [0, 1] (`to_float`)."""
    return {key: to_float(value) for key, value in batch.items()}


def device_batch_to_float(batch: dict) -> dict:
    """`batch_to_float` for jax arrays, to call inside a jitted step: uint8 -> float32 times
    float32(1/255), the same single rounding as on the host, so the values are bit-identical."""
    return {key: value if value.dtype == jnp.float32
            else value.astype(jnp.float32) * jnp.float32(1 / 255) for key, value in batch.items()}
