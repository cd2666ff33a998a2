"""Training input pipeline: aligned random LR/HR patches from decoded-once images, per-host batches.

Design (docs/data.md, "Training pipeline"):

* **Decode once.** This process's shard of the training images is decoded (and, when the LR is made
  on the fly, degraded) once, by the worker processes, into a uint8 cache (`decoded_cache.py`): in
  memory, or one memory-mapped file that every worker maps instead of copying, optionally kept in
  `config.data.cache_dir` so that a restarted run does not decode again. Every later patch is a slice
  of it. Memory: about H*W*3*(1 + 1/s^2) bytes per image, ~7 GB for all 800 DIV2K x4 training images
  on one host, divided by the number of processes.
* **Random access by step.** Sample `j` of step `k` on process `p` uses image `perm_e[i % n]` with
  `i = k * B_local + j`, `e = i // n` and `perm_e` a permutation of the shard seeded by
  `(seed, p, e)` (every image once per epoch), and its crop / flips / rot90 / noise come from an RNG
  seeded by `(seed, p, k, j)`. A batch is thus a pure function of the step: deterministic for a seed,
  and `start_step=k` starts there without touching the first k batches.
* **Sharding.** Process `p` of `P` keeps a contiguous, even slice of the sorted image list (tfds'
  `even_splits` rule; `tfds.split_for_jax_process` for the tfds `div2k` source): disjoint, covering.
* **Workers.** grain: a `MapDataset` over step indices mapped to `batch(k)`, assembled by
  `config.data.num_workers` processes (`mp_prefetch`; 0 = one thread of this process; -1 = one per
  core), each `config.data.prefetch` batches ahead. Worker i builds steps i, i + N, ...; grain hands
  them back in step order, so any worker count gives the same batches.

Sources (`config.data.source`): "div2k" (tfds), "div2k_folder" (DIV2K_train_HR [+ LR_bicubic]),
"folder" (any HR images), "skimage" (bundled photos), "paired" (LQ/GT folders, restoration).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import threading
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from mspan_jax.data.decoded_cache import (
    CacheWriter,
    DecodedImages,
    DiskCache,
    TrainImage,
    fingerprint,
    temporary_cache_path,
)
from mspan_jax.data.degradations import DEGRADATIONS, add_gaussian_noise, degrade, rgb_to_gray
from mspan_jax.data.images import ImageReadError, list_images, read_image
from mspan_jax.data.imresize import bicubic_downscale, modcrop
from mspan_jax.data.pairs import pair_files, read_pair
from mspan_jax.data.sample_images import sample_images
from mspan_jax.extras import require
from mspan_jax.progress import ProgressLine

SOURCES = ("div2k", "div2k_folder", "folder", "skimage", "paired")
DATA_KEYS = {
    "source", "data_dir", "train_dir", "manual_dir", "hr_patch_size", "degradation", "noise_sigma",
    "noise_sigma_range", "noise_gray", "image_range", "augment", "prefetch", "num_workers", "cache_dir",
}
MAX_AUTO_WORKERS = 16  # num_workers=-1 starts one worker per core, at most this many
Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- config validation
@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """The validated, resolved settings of a training pipeline."""

    source: str
    scale: int
    lr_patch: int
    batch_local: int
    process_index: int
    process_count: int
    seed: int
    restoration: bool
    degradation: str
    noise_sigma: float | tuple[float, float]
    noise_gray: bool
    gray_output: bool
    augment: bool
    prefetch: int
    num_workers: int
    cache_dir: str
    data_dir: str
    train_dir: str
    image_range: tuple[int, int]


def _fail(key: str, message: str) -> ValueError:
    return ValueError(f"config.{key}: {message}")


def _as_int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise _fail(key, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def resolve_spec(config: Any, process_index: int | None = None, process_count: int | None = None
                 ) -> PipelineSpec:
    """Checks `config.data` (and the batch/model keys it uses); one-line ValueError naming the key."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if "data" not in config:
        raise _fail("data", "missing section")
    data = config.data
    unknown = sorted(set(data.keys()) - DATA_KEYS)
    if unknown:
        raise _fail(f"data.{unknown[0]}", f"unknown key; known keys: {sorted(DATA_KEYS)}")
    missing = sorted({"source", "hr_patch_size"} - set(data.keys()))
    if missing:
        raise _fail(f"data.{missing[0]}", "missing")
    get = data.get
    source = get("source")
    if source not in SOURCES:
        raise _fail("data.source", f"{source!r} is not a source; choose one of {list(SOURCES)}")
    scale = _as_int(config.model.scale, "model.scale", 1)
    restoration = config.model.name == "mspan_ir" or scale == 1
    if restoration and scale != 1:
        raise _fail("model.scale", f"restoration ({config.model.name}) needs scale 1, got {scale}")
    hr_patch = _as_int(get("hr_patch_size"), "data.hr_patch_size", 2)
    if hr_patch % scale:
        raise _fail("data.hr_patch_size", f"{hr_patch} is not a multiple of model.scale={scale}")
    count = _as_int(process_count, "process_count", 1)
    index = _as_int(process_index, "process_index", 0)
    if index >= count:
        raise _fail("process_index", f"{index} is not below process_count={count}")
    batch = _as_int(config.train.batch_size, "train.batch_size", 1)
    if batch % count:
        raise _fail("train.batch_size", f"{batch} is not divisible by the {count} processes")
    degradation = str(get("degradation", "BI")).upper()
    if degradation not in DEGRADATIONS:
        raise _fail("data.degradation", f"{degradation!r}; choose one of {list(DEGRADATIONS)}")
    if source == "paired" and not restoration:
        raise _fail("data.source", "'paired' LQ/GT folders are for restoration (mspan_ir, scale 1)")
    sigma_range = tuple(get("noise_sigma_range", ()) or ())
    sigma: float | tuple[float, float]
    if sigma_range:
        if len(sigma_range) != 2 or not 0 <= float(sigma_range[0]) <= float(sigma_range[1]):
            raise _fail("data.noise_sigma_range", f"must be () or (lo, hi) with 0 <= lo <= hi, got "
                        f"{sigma_range}")
        sigma = (float(sigma_range[0]), float(sigma_range[1]))
    else:
        sigma = float(get("noise_sigma", 30.0))
        if sigma < 0:
            raise _fail("data.noise_sigma", f"must be >= 0, got {sigma}")
    image_range = tuple(get("image_range", (1, 800)))
    if len(image_range) != 2 or not 0 <= int(image_range[0]) <= int(image_range[1]):
        raise _fail("data.image_range", f"must be (first, last) image numbers, got {image_range}")
    train_dir = str(get("train_dir", "") or "")
    if source in ("div2k_folder", "folder", "paired"):
        if not train_dir:
            raise _fail("data.train_dir", f"source {source!r} needs a folder of training images")
        if not Path(train_dir).expanduser().is_dir():
            raise _fail("data.train_dir", f"{train_dir} is not a folder")
    in_channels = int(config.model.get("in_channels", 3))
    if in_channels not in (1, 3):
        raise _fail("model.in_channels", f"the pipeline yields RGB (3) or gray (1), got {in_channels}")
    return PipelineSpec(
        source=source, scale=scale, lr_patch=hr_patch // scale, batch_local=batch // count,
        process_index=index, process_count=count, seed=int(config.get("seed", 0)),
        restoration=restoration, degradation=degradation, noise_sigma=sigma,
        noise_gray=bool(get("noise_gray", False)), gray_output=in_channels == 1,
        augment=bool(get("augment", True)), prefetch=_as_int(get("prefetch", 2), "data.prefetch", 1),
        num_workers=resolve_workers(get("num_workers", -1)),
        cache_dir=str(get("cache_dir", "") or ""), data_dir=str(get("data_dir", "") or ""),
        train_dir=train_dir,
        image_range=(int(image_range[0]), int(image_range[1])),
    )


def host_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(value: Any) -> int:
    """`config.data.num_workers`: -1 -> one per core (at most MAX_AUTO_WORKERS), 0 -> in-process."""
    if value == -1:
        return min(host_cores(), MAX_AUTO_WORKERS)
    return _as_int(value, "data.num_workers", 0)


# ----------------------------------------------------------------------------- sharding
def shard_bounds(num_items: int, process_index: int, process_count: int) -> tuple[int, int]:
    """`[start, stop)` of this process's contiguous slice: the first `n % P` processes get one more item,
    as `tfds.even_splits(drop_remainder=False)` splits. Slices are disjoint and cover all items."""
    base, extra = divmod(num_items, process_count)
    start = process_index * base + min(process_index, extra)
    return start, start + base + (process_index < extra)


def shard(items: Sequence[Any], process_index: int, process_count: int) -> list[Any]:
    """This process's slice of `items` (see `shard_bounds`)."""
    start, stop = shard_bounds(len(items), process_index, process_count)
    return list(items[start:stop])


# ----------------------------------------------------------------------------- decoded-once images
# A loader returns (name, target uint8, premade source uint8 | None, origin for messages: the file),
# or None to skip (it warned). Loaders are sent to the decoding worker processes and name their inputs
# (`inputs()`) for the decoded-image cache's key.
LoadedItem = "tuple[str, np.ndarray, np.ndarray | None, str] | None"


def _read_or_skip(path: Path) -> np.ndarray | None:
    try:
        return read_image(path)
    except ImageReadError as e:
        warnings.warn(f"skipped: {e}", stacklevel=3)
        return None


def _file_stamp(path: Path | None) -> list:
    if path is None:
        return []
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


@dataclasses.dataclass(frozen=True)
class _HRLoader:
    path: Path
    lr_path: Path | None = None

    def __call__(self) -> LoadedItem:
        hr = _read_or_skip(self.path)
        lr = None if hr is None or self.lr_path is None else _read_or_skip(self.lr_path)
        if hr is None or (self.lr_path is not None and lr is None):
            return None
        return self.path.stem, hr, lr, str(self.path)

    def inputs(self) -> list:
        return _file_stamp(self.path) + _file_stamp(self.lr_path)


@dataclasses.dataclass(frozen=True)
class _ArrayLoader:
    name: str
    img: np.ndarray

    def __call__(self) -> LoadedItem:
        return self.name, self.img, None, f"skimage.data {self.name}"

    def inputs(self) -> list:
        return [self.name, list(self.img.shape), zlib.crc32(np.ascontiguousarray(self.img).data)]


@dataclasses.dataclass(frozen=True)
class _PairedLoader:
    key: str
    lq_path: Path
    gt_path: Path

    def __call__(self) -> LoadedItem:
        pair = read_pair(self.lq_path, self.gt_path)
        return None if pair is None else (self.key, pair[1], pair[0], f"{self.lq_path} / {self.gt_path}")

    def inputs(self) -> list:
        return [self.key] + _file_stamp(self.lq_path) + _file_stamp(self.gt_path)


Loader = _HRLoader | _ArrayLoader | _PairedLoader


_DIV2K_NAME = re.compile(r"^(\d{4})$")


def _div2k_folder_loaders(spec: PipelineSpec) -> list[Loader]:
    """DIV2K_train_HR images numbered within `image_range` (+ DIV2K_train_LR_bicubic/X{s} for BI)."""
    root = Path(spec.train_dir).expanduser()
    hr_dir = root / "DIV2K_train_HR" if (root / "DIV2K_train_HR").is_dir() else root
    lr_dir = root / "DIV2K_train_LR_bicubic" / f"X{spec.scale}"
    use_lr = spec.degradation == "BI" and not spec.restoration and lr_dir.is_dir()
    first, last = spec.image_range
    loaders = []
    for path in list_images(hr_dir):
        m = _DIV2K_NAME.match(path.stem)
        if m is None or not first <= int(m.group(1)) <= last:
            continue
        lr_path = None
        if use_lr:
            lr_path = next((p for p in (lr_dir / f"{path.stem}x{spec.scale}{path.suffix}",
                                        lr_dir / f"{path.stem}x{spec.scale}.png") if p.is_file()), None)
            if lr_path is None:
                raise FileNotFoundError(f"{lr_dir}: no LR image for {path.name} "
                                        f"(expected {path.stem}x{spec.scale}.png)")
        loaders.append(_HRLoader(path, lr_path))
    if not loaders:
        raise ValueError(f"{hr_dir}: no DIV2K images numbered {first:04d}-{last:04d} "
                         "(names like 0001.png; see docs/data.md)")
    return loaders


def _source_loaders(spec: PipelineSpec) -> list[Loader]:
    """All loaders of the source in a fixed order (sorted names), before sharding."""
    if spec.source == "skimage":
        return [_ArrayLoader(name, img) for name, img in sample_images("train")]
    if spec.source == "folder":
        return [_HRLoader(p) for p in list_images(Path(spec.train_dir).expanduser())]
    if spec.source == "div2k_folder":
        return _div2k_folder_loaders(spec)
    if spec.source == "paired":
        root = Path(spec.train_dir).expanduser()
        return [_PairedLoader(k, lq, gt) for k, lq, gt in pair_files(root / "LQ", root / "GT")]
    raise AssertionError(spec.source)


def _div2k_tfds(spec: PipelineSpec) -> tuple[Any, str, str]:
    """(builder, this process's split, config name) of tfds `div2k/bicubic_x{s}` train (0001-0800)."""
    require("tfds", "config.data.source='div2k' (tfds DIV2K)")
    import tensorflow_datasets as tfds

    config = f"bicubic_x{spec.scale if spec.scale in (2, 3, 4) else 4}"
    builder = tfds.builder(f"div2k/{config}", data_dir=spec.data_dir or None)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"tfds div2k/{config} is not prepared in {builder.data_dir_root}: prepare it with "
            f"`tfds build div2k --config {config} --data_dir <dir>` (~4 GB download) or use "
            "config.data.source='div2k_folder'; see docs/data.md")
    split = tfds.split_for_jax_process("train", process_index=spec.process_index,
                                       process_count=spec.process_count)
    return builder, str(split), config


def _div2k_tfds_items(spec: PipelineSpec, builder: Any, split: str, config: str
                      ) -> Iterator[tuple[str, np.ndarray, np.ndarray | None, str]]:
    """The examples of `split`, decoded by tf.data (in parallel, in TensorFlow's threads)."""
    import tensorflow_datasets as tfds

    use_lr = spec.degradation == "BI" and not spec.restoration and spec.scale in (2, 3, 4)
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    for k, example in enumerate(tfds.as_numpy(dataset)):
        # tfds' div2k has no file-name feature: name the examples by their place in this shard.
        name = f"div2k/{config} train, shard {spec.process_index + 1}/{spec.process_count}, #{k}"
        yield name, example["hr"], example["lr"] if use_lr else None, name


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
                          f"scale {s}; HR cropped to a multiple of it (modcrop)", stacklevel=2)
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        item = loader()
    found, messages = _prepare_recorded(spec, item)
    return found, [(str(w.message), w.category) for w in caught] + messages


def _worker_init(index: int, count: int) -> None:
    """Runs first in every grain worker: exit when the training process is gone (killed by SIGKILL,
    say) instead of lingering as an orphan that holds memory."""
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


def _in_workers(dataset: grain.MapDataset, workers: int, buffer: int) -> grain.IterDataset:
    """`dataset` read in order, its elements made by `workers` processes (0: one thread here)."""
    iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=buffer))
    if workers == 0:
        return iterable
    _mark_flags_parsed()
    return iterable.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer),
        worker_init_fn=_worker_init)


def _decoded_items(spec: PipelineSpec, loaders: Sequence[Loader] | None, tfds_source: Any
                   ) -> Iterator[tuple[Any, list]]:
    """(prepared image or None, warnings) per input, in input order."""
    if loaders is None:  # tfds: tf.data decodes in its own threads; degradation (if any) here
        for item in _div2k_tfds_items(spec, *tfds_source):
            yield _prepare_recorded(spec, item)
        return
    work = functools.partial(_load_and_prepare, spec)
    workers = min(spec.num_workers, len(loaders))
    if workers == 0:
        yield from map(work, loaders)
        return
    iterator = iter(_in_workers(grain.MapDataset.source(list(loaders)).map(work), workers, 1))
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


def load_train_images(spec: PipelineSpec, verbose: bool = True) -> DecodedImages:
    """Decodes this process's shard once, in a fixed order, with `spec.num_workers` processes; raises
    if nothing is usable. The images are file-backed (shareable with worker processes) when there are
    workers or a `cache_dir`; a valid cache in `cache_dir` is mapped instead of decoding."""
    what = f"decoding {spec.source} shard {spec.process_index + 1}/{spec.process_count}:"
    loaders: list[Loader] | None = None
    tfds_source = None
    if spec.source == "div2k":
        tfds_source = _div2k_tfds(spec)
        builder, split, _ = tfds_source
        inputs = [builder.name, str(builder.version), str(builder.data_dir), split]
        try:
            total = int(builder.info.splits[split].num_examples)
        except (KeyError, ValueError, TypeError):
            total = 0
    else:
        loaders = shard(_source_loaders(spec), spec.process_index, spec.process_count)
        if not loaders:
            raise ValueError(f"config.data.source={spec.source!r}: process {spec.process_index} of "
                             f"{spec.process_count} has no images (fewer images than processes)")
        inputs, total = [loader.inputs() for loader in loaders], len(loaders)

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
        writer = CacheWriter(temporary_cache_path(), temporary=True)
    else:
        writer = None

    kept: list[TrainImage] = []  # in memory (no writer)
    written = 0
    progress = ProgressLine(total, what, enabled=verbose and total > 0)
    try:
        for found, messages in _decoded_items(spec, loaders, tfds_source):
            for message, category in messages:
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
            raise ValueError(f"config.data.source={spec.source!r}: every training image was skipped "
                             f"(see the warnings above; need images of at least "
                             f"{spec.lr_patch * spec.scale}px per side)")
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        return DecodedImages(kept)
    return cache.commit(writer) if cache is not None else writer.finish()


# ----------------------------------------------------------------------------- patches and batches
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
    """Batch `k` of this process as a pure function of (seed, process, k) over the decoded images."""

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

    def patches(self, step: int) -> Batch:
        """Batch `step` as cut: `{"lr", "hr"}` uint8 (a quarter of float32's bytes to move between
        processes), except the noisy restoration input, float32 (it may leave [0, 1] slightly)."""
        spec = self.spec
        b, p, s, c = spec.batch_local, spec.lr_patch, spec.scale, 1 if spec.gray_output else 3
        lr_u8 = np.empty((b, p, p, c), np.uint8)
        hr_u8 = np.empty((b, p * s, p * s, c), np.uint8)
        rngs = [self.fill(step, j, lr_u8[j], hr_u8[j]) for j in range(b)]
        if spec.restoration and self.images[0].source is None:  # LQ = GT + Gaussian noise (float)
            hr = to_float(hr_u8)
            lr = np.stack([add_gaussian_noise(hr[j], spec.noise_sigma, rngs[j], gray=spec.noise_gray)
                           for j in range(b)])
            return {"lr": lr, "hr": hr_u8}
        return {"lr": lr_u8, "hr": hr_u8}

    def batch(self, step: int) -> Batch:
        """`{"lr", "hr"}` float32 in [0, 1] (a noisy restoration input may leave [0, 1] slightly)."""
        return batch_to_float(self.patches(step))


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]; float32 unchanged."""
    return x if x.dtype == np.float32 else np.multiply(x, np.float32(1 / 255), dtype=np.float32)


def batch_to_float(batch: Batch) -> Batch:
    return {key: to_float(value) for key, value in batch.items()}


_LAST_STEP = 2**62  # the step dataset is "endless": training stops long before


class TrainIterator(Iterator[Batch]):
    """Yields `sampler.batch(k)` for k = start_step, start_step + 1, ... in order.

    grain: a MapDataset over the step numbers mapped to `sampler.patches`, cut by `workers` processes
    (`mp_prefetch`, worker i makes steps start + i, start + i + N, ...) or, with 0, by one thread of
    this process; each keeps `prefetch` batches ready. The uint8 patches cross to this process
    (shared memory) and a thread here converts them to float32, `prefetch` batches ahead. The workers
    unpickle the sampler, so they map the decoded images' file instead of copying them. `close()`
    stops them; an error in a worker re-raises on `next()`."""

    def __init__(self, sampler: BatchSampler, start_step: int = 0, prefetch: int = 2, workers: int = 0):
        self.sampler, self.step, self.workers = sampler, start_step, workers
        steps = grain.MapDataset.range(start_step, _LAST_STEP).map(sampler.patches)
        floats = _in_workers(steps, workers, prefetch).map(batch_to_float)
        self._iterator = iter(grain.experimental.ThreadPrefetchIterDataset(
            floats, prefetch_buffer_size=prefetch))
        self._received = 0

    def __next__(self) -> Batch:
        if self._iterator is None:
            raise StopIteration
        batch = self._iterator.__next__()
        self.step += 1
        self._received += 1
        if self._received == self.workers:  # every worker has mapped the images by now
            self.sampler.images.release_temporary()
        return batch

    def close(self) -> None:
        iterator, self._iterator = getattr(self, "_iterator", None), None
        if iterator is not None and hasattr(iterator, "close"):
            iterator.close()
        if hasattr(self, "sampler"):
            self.sampler.images.release_temporary()

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> TrainIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_train_iterator(config: Any, *, start_step: int = 0, process_index: int | None = None,
                          process_count: int | None = None, verbose: bool = True) -> TrainIterator:
    """Per-host training batches `{"lr": (B_local, p, p, C), "hr": (B_local, p*s, p*s, C)}` float32 in
    [0, 1], `B_local = config.train.batch_size // process_count`, `p = hr_patch_size // scale`.

    Process defaults: `jax.process_index()` / `jax.process_count()`. Batch k depends only on
    (config.seed, process, k), so `start_step=k` resumes exactly without replaying. Decodes this
    process's shard once up front (progress line on stderr when `verbose`)."""
    if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) or start_step < 0:
        raise ValueError(f"start_step must be an integer >= 0, got {start_step!r}")
    spec = resolve_spec(config, process_index, process_count)
    images = load_train_images(spec, verbose=verbose)
    return TrainIterator(BatchSampler(spec, images), int(start_step), spec.prefetch,
                         workers=spec.num_workers)


__all__ = [
    "SOURCES", "BatchSampler", "DecodedImages", "PipelineSpec", "TrainImage", "TrainIterator",
    "augment_pair", "batch_to_float", "create_train_iterator", "load_train_images", "prepare_image",
    "resolve_spec", "shard", "shard_bounds",
]
