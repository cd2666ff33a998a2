"""Training input pipeline: aligned random LR/HR patches from decoded-once images, per-host batches.

Design (docs/data.md, "Training pipeline"):

* **Decode once.** This process's shard of the training images is decoded (and, when the LR is made
  on the fly, degraded) once, in parallel threads, into an in-memory uint8 cache; every later patch is
  a slice of it. PNG decoding of 2K images therefore never runs during training. Memory: about
  H*W*3*(1 + 1/s^2) bytes per image, ~7 GB for all 800 DIV2K x4 training images on one host,
  divided by the number of processes.
* **Random access by step.** Sample `j` of step `k` on process `p` uses image `perm_e[i % n]` with
  `i = k * B_local + j`, `e = i // n` and `perm_e` a permutation of the shard seeded by
  `(seed, p, e)` (every image once per epoch), and its crop / flips / rot90 / noise come from an RNG
  seeded by `(seed, p, k, j)`. A batch is thus a pure function of the step: deterministic for a seed,
  and `start_step=k` starts there without touching the first k batches.
* **Sharding.** Process `p` of `P` keeps a contiguous, even slice of the sorted image list (tfds'
  `even_splits` rule; `tfds.split_for_jax_process` for the tfds `div2k` source): disjoint, covering.
* **Prefetch.** A background thread keeps `config.data.prefetch` batches ready; up to 4 worker threads
  (`min(num_workers, 4)`) assemble consecutive batches in parallel, cut as uint8 and converted to
  float32 once per batch.

Sources (`config.data.source`): "div2k" (tfds), "div2k_folder" (DIV2K_train_HR [+ LR_bicubic]),
"folder" (any HR images), "skimage" (bundled photos), "paired" (LQ/GT folders, restoration).
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mspan_jax.data.degradations import DEGRADATIONS, add_gaussian_noise, degrade
from mspan_jax.data.images import ImageReadError, list_images, read_image
from mspan_jax.data.imresize import bicubic_downscale, modcrop, round_uint8
from mspan_jax.data.pairs import pair_files, read_pair
from mspan_jax.data.sample_images import sample_images
from mspan_jax.extras import require
from mspan_jax.progress import ProgressLine

SOURCES = ("div2k", "div2k_folder", "folder", "skimage", "paired")
DATA_KEYS = {
    "source", "data_dir", "train_dir", "manual_dir", "hr_patch_size", "degradation", "noise_sigma",
    "noise_sigma_range", "noise_gray", "image_range", "augment", "prefetch", "num_workers",
}
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
        num_workers=_as_int(get("num_workers", 8), "data.num_workers", 1),
        data_dir=str(get("data_dir", "") or ""), train_dir=train_dir,
        image_range=(int(image_range[0]), int(image_range[1])),
    )


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
@dataclasses.dataclass(frozen=True)
class TrainImage:
    """One decoded training image: `target` (HR / GT) and `source` (LR / LQ) uint8, aligned so that
    `source.shape[:2] * scale == target.shape[:2]`. `source` is None when it is made per patch
    (restoration by synthetic noise)."""

    name: str
    target: np.ndarray
    source: np.ndarray | None


# A loader returns (name, target uint8, premade source uint8 | None, origin for messages: the file),
# or None to skip (it warned).
Loader = Callable[[], "tuple[str, np.ndarray, np.ndarray | None, str] | None"]


def _read_or_skip(path: Path) -> np.ndarray | None:
    try:
        return read_image(path)
    except ImageReadError as e:
        warnings.warn(f"skipped: {e}", stacklevel=3)
        return None


def _hr_loader(path: Path, lr_path: Path | None = None) -> Loader:
    def load():
        hr = _read_or_skip(path)
        lr = None if hr is None or lr_path is None else _read_or_skip(lr_path)
        if hr is None or (lr_path is not None and lr is None):
            return None
        return path.stem, hr, lr, str(path)
    return load


def _array_loader(name: str, img: np.ndarray) -> Loader:
    return lambda: (name, img, None, f"skimage.data {name}")


def _paired_loader(key: str, lq_path: Path, gt_path: Path) -> Loader:
    def load():
        pair = read_pair(lq_path, gt_path)
        return None if pair is None else (key, pair[1], pair[0], f"{lq_path} / {gt_path}")
    return load


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
        loaders.append(_hr_loader(path, lr_path))
    if not loaders:
        raise ValueError(f"{hr_dir}: no DIV2K images numbered {first:04d}-{last:04d} "
                         "(names like 0001.png; see docs/data.md)")
    return loaders


def _source_loaders(spec: PipelineSpec) -> list[Loader]:
    """All loaders of the source in a fixed order (sorted names), before sharding."""
    if spec.source == "skimage":
        return [_array_loader(name, img) for name, img in sample_images("train")]
    if spec.source == "folder":
        return [_hr_loader(p) for p in list_images(Path(spec.train_dir).expanduser())]
    if spec.source == "div2k_folder":
        return _div2k_folder_loaders(spec)
    if spec.source == "paired":
        root = Path(spec.train_dir).expanduser()
        return [_paired_loader(k, lq, gt) for k, lq, gt in pair_files(root / "LQ", root / "GT")]
    raise AssertionError(spec.source)


def _div2k_tfds_items(spec: PipelineSpec) -> Iterator[tuple[str, np.ndarray, np.ndarray | None, str]]:
    """This process's part of tfds `div2k/bicubic_x{s}` train (images 0001-0800), decoded by tf.data."""
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
    use_lr = spec.degradation == "BI" and not spec.restoration and spec.scale in (2, 3, 4)
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    for k, example in enumerate(tfds.as_numpy(dataset)):
        # tfds' div2k has no file-name feature: name the examples by their place in this shard.
        name = f"div2k/{config} train, shard {spec.process_index + 1}/{spec.process_count}, #{k}"
        yield name, example["hr"], example["lr"] if use_lr else None, name


def _to_gray(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray (ITU-R BT.601 luma), uint8 (H, W, 1)."""
    y = img.astype(np.float64) @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    return round_uint8(y)[..., None]


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
        target = _to_gray(target)
        source = None if source is None else _to_gray(source)
    target = np.ascontiguousarray(target)
    return TrainImage(name, target, None if source is None else np.ascontiguousarray(source))


def load_train_images(spec: PipelineSpec, verbose: bool = True) -> list[TrainImage]:
    """Decodes this process's shard once (threads), in a fixed order; raises if nothing is usable."""
    what = f"decoding {spec.source} shard {spec.process_index + 1}/{spec.process_count}:"
    if spec.source == "div2k":
        raw = list(_div2k_tfds_items(spec))
        with ThreadPoolExecutor(spec.num_workers) as pool:
            images = list(pool.map(lambda r: prepare_image(spec, *r), raw))
    else:
        loaders = shard(_source_loaders(spec), spec.process_index, spec.process_count)
        if not loaders:
            raise ValueError(f"config.data.source={spec.source!r}: process {spec.process_index} of "
                             f"{spec.process_count} has no images (fewer images than processes)")

        def work(loader: Loader) -> TrainImage | None:
            item = loader()
            return None if item is None else prepare_image(spec, *item)

        images = []
        progress = ProgressLine(len(loaders), what, enabled=verbose)
        with ThreadPoolExecutor(spec.num_workers) as pool:
            for image in pool.map(work, loaders):
                images.append(image)
                progress.update("images")
    kept = [im for im in images if im is not None]
    if not kept:
        raise ValueError(f"config.data.source={spec.source!r}: every training image was skipped "
                         f"(see the warnings above; need images of at least "
                         f"{spec.lr_patch * spec.scale}px per side)")
    return kept


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
        self.spec, self.images = spec, list(images)
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

    def batch(self, step: int) -> Batch:
        """`{"lr", "hr"}` float32 in [0, 1] (a noisy restoration input may leave [0, 1] slightly)."""
        spec = self.spec
        b, p, s, c = spec.batch_local, spec.lr_patch, spec.scale, 1 if spec.gray_output else 3
        lr_u8 = np.empty((b, p, p, c), np.uint8)
        hr_u8 = np.empty((b, p * s, p * s, c), np.uint8)
        rngs = [self.fill(step, j, lr_u8[j], hr_u8[j]) for j in range(b)]
        hr = np.multiply(hr_u8, np.float32(1 / 255), dtype=np.float32)
        if spec.restoration and self.images[0].source is None:  # LQ = GT + Gaussian noise (float)
            lr = np.stack([add_gaussian_noise(hr[j], spec.noise_sigma, rngs[j], gray=spec.noise_gray)
                           for j in range(b)])
        else:
            lr = np.multiply(lr_u8, np.float32(1 / 255), dtype=np.float32)
        return {"lr": lr, "hr": hr}


class TrainIterator(Iterator[Batch]):
    """Yields `sampler.batch(k)` for k = start_step, start_step + 1, ... in order, assembled by
    `threads` worker threads (NumPy copies release the GIL) up to `prefetch` batches ahead.
    `close()` stops the workers; an error in one re-raises on `next()`."""

    def __init__(self, sampler: BatchSampler, start_step: int = 0, prefetch: int = 2, threads: int = 2):
        self.sampler, self.step, self.threads = sampler, start_step, threads
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(start_step,), daemon=True,
                                        name="train-input")
        self._thread.start()

    def _produce(self, step: int) -> None:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="train-batch") as pool:
            pending: collections.deque = collections.deque()
            while not self._stop.is_set():
                try:
                    while len(pending) < self.threads:
                        pending.append(pool.submit(self.sampler.batch, step))
                        step += 1
                    item: Any = pending.popleft().result()
                except RuntimeError as e:  # interpreter shutting down: the pool takes no more work
                    if "shutdown" in str(e):
                        return
                    item = e
                except BaseException as e:  # handed to the consumer
                    item = e
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if isinstance(item, BaseException):
                    self._stop.set()
            for future in pending:
                future.cancel()

    def __next__(self) -> Batch:
        if self._stop.is_set() and self._queue.empty():
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        self.step += 1
        return item

    def close(self) -> None:
        self._stop.set()

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
                         threads=min(spec.num_workers, 4))


__all__ = [
    "SOURCES", "BatchSampler", "PipelineSpec", "TrainImage", "TrainIterator", "augment_pair",
    "create_train_iterator", "load_train_images", "prepare_image", "resolve_spec", "shard",
    "shard_bounds",
]
