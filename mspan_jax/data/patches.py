"""Random training patches cut from the decoded images: batch `k` of a process as a pure function of
(seed, process, k), so that batches are deterministic for a seed and a run resumes at any step.

Sample `j` of step `k` on process `p` uses image `perm_e[i % n]` with `i = k * B_local + j`,
`e = i // n` and `perm_e` a permutation of the shard seeded by `(seed, p, e)` (every image once per
epoch); its crop, flips / transpose and noise come from an RNG seeded by `(seed, p, k, j)`. LR and HR
windows stay aligned: LR `(y, x, p, p)`, HR `(s*y, s*x, s*p, s*p)`, the same augmentation on both.

Batches stay uint8 (a quarter of float32's bytes) until the device: `device_batch_to_float`, inside
the jitted train step, makes them float32 in [0, 1], bit for bit what `batch_to_float` gives on the
host. In a grain worker (`grain_workers.in_worker()`) a batch is cut straight into shared memory that the
worker reuses (`shm_slots`), which the training process reads without copying it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from mspan_jax.data import grain_workers, shm_slots
from mspan_jax.data.decoded_cache import DecodedImages, TrainImage
from mspan_jax.data.degradations import add_gaussian_noise
from mspan_jax.data.train_spec import PipelineSpec

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
        In a grain worker the arrays are cut into the worker's shared-memory slots (`shm_slots`, the
        segments of the iterator whose token is `slots`) and the batch holds their references,
        which `shm_slots.Receiver` turns back into arrays."""
        spec = self.spec
        b, p, s, c = spec.batch_local, spec.lr_patch, spec.scale, 1 if spec.gray_output else 3
        new = (functools.partial(shm_slots.worker_array, token=slots) if grain_workers.in_worker()
               else _local_array)
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
