"""Prediction on images of any size with a bounded number of compiled programs.

`Predictor` pads each input with zeros to a multiple of `bucket` (per H and W) and passes the
validity mask, so a padded input gives exactly the unpadded result while every size in a bucket
shares one compiled program. `upscale_image` adds overlapping tiles for large images: each tile
carries `tile_overlap` LR pixels of context on every side that are predicted and thrown away, and
all tiles share one padded shape, so a whole photo costs one compile and shows no seams.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from mspan_jax.progress import ProgressLine

ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def padded_size(length: int, bucket: int) -> int:
    """`length` rounded up to a multiple of `bucket`."""
    return int(math.ceil(length / bucket)) * bucket


# The x8 self-ensemble (EDSR): (flip left-right?, number of 90-degree rotations) on (H, W, C).
ENSEMBLE_TRANSFORMS = tuple((flip, rot) for flip in (False, True) for rot in range(4))


def _transform(x: np.ndarray, flip: bool, rot: int) -> np.ndarray:
    return np.rot90(x[:, ::-1] if flip else x, rot, axes=(0, 1))


def _inverse_transform(y: np.ndarray, flip: bool, rot: int) -> np.ndarray:
    y = np.rot90(y, -rot, axes=(0, 1))
    return y[:, ::-1] if flip else y


_JITTED: dict[Any, Any] = {}  # apply_fn -> jax.jit(apply_fn), most recently used last
_MAX_JITTED = 8


def jitted_apply(apply_fn: ApplyFn):
    """`jax.jit(apply_fn)`, shared by every Predictor of the same `apply_fn` (e.g. one model's
    `model.apply`), so repeated evaluations (validation during training) reuse its compiled
    programs: jit compiles once per input shape and variables layout, and variables are an
    argument, so new parameter values do not recompile."""
    try:
        jitted = _JITTED.pop(apply_fn, None)
    except TypeError:  # an unhashable callable: nothing to share
        return jax.jit(apply_fn)
    _JITTED[apply_fn] = jitted if jitted is not None else jax.jit(apply_fn)
    while len(_JITTED) > _MAX_JITTED:
        _JITTED.pop(next(iter(_JITTED)))
    return _JITTED[apply_fn]


class Predictor:
    """Runs `apply_fn(variables, x, mask)` on single float (h, w, C) images in [0, 1].

    Inputs are zero-padded to `pad_to` (default: the next multiples of `bucket`) and masked, so
    one compiled program serves every size in a bucket; `num_compiled` counts the distinct
    programs (padded shapes) this predictor has run. Programs are compiled once per process and
    `apply_fn` (see `jitted_apply`).
    """

    def __init__(self, apply_fn: ApplyFn, variables: Any, *, scale: int, bucket: int = 64):
        if bucket < 1:
            raise ValueError(f"bucket must be a positive integer, got {bucket}")
        self.apply_fn, self.scale, self.bucket = apply_fn, int(scale), int(bucket)
        self.variables = jax.device_put(variables)
        self._jitted = jitted_apply(apply_fn)
        self._shapes: set[tuple[int, ...]] = set()

    @property
    def num_compiled(self) -> int:
        """How many distinct programs (padded input shapes) this predictor has run."""
        return len(self._shapes)

    @property
    def program_shapes(self) -> frozenset[tuple[int, ...]]:
        """The padded input shapes (N, H, W, C) this predictor has run, one program each."""
        return frozenset(self._shapes)

    def predict(self, x: np.ndarray, pad_to: tuple[int, int] | None = None) -> np.ndarray:
        """Float32 output (scale h, scale w, C_out) of one float (h, w, C) input."""
        h, w, c = x.shape
        ph, pw = pad_to if pad_to is not None else (padded_size(h, self.bucket),
                                                     padded_size(w, self.bucket))
        if ph < h or pw < w:
            raise ValueError(f"pad_to {(ph, pw)} is smaller than the input {(h, w)}")
        padded = np.zeros((1, ph, pw, c), np.float32)
        padded[0, :h, :w] = x
        mask = np.zeros((1, ph, pw, 1), np.float32)
        mask[0, :h, :w] = 1.0
        self._shapes.add(padded.shape)
        y = self._jitted(self.variables, padded, mask)
        return np.asarray(y)[0, : self.scale * h, : self.scale * w]

    def predict_ensemble(self, x: np.ndarray, pad_to: tuple[int, int] | None = None) -> np.ndarray:
        """The x8 self-ensemble: mean of the inverse-transformed outputs of 8 flips/rotations."""
        total = None
        for flip, rot in ENSEMBLE_TRANSFORMS:
            shape = pad_to if pad_to is None or rot % 2 == 0 else pad_to[::-1]
            y = _inverse_transform(self.predict(_transform(x, flip, rot), shape), flip, rot)
            total = y.astype(np.float64) if total is None else total + y
        return (total / len(ENSEMBLE_TRANSFORMS)).astype(np.float32)

    def __call__(self, x: np.ndarray, self_ensemble: bool = False,
                 pad_to: tuple[int, int] | None = None) -> np.ndarray:
        return self.predict_ensemble(x, pad_to) if self_ensemble else self.predict(x, pad_to)


def tile_grid(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core_start, core_end, input_start, input_end) along one axis.

    Cores of `tile - 2 * overlap` pixels cover the axis without overlapping; each input extends
    its core by `overlap` context pixels on both sides (clipped to the image), so inputs are at
    most `tile` long.
    """
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than twice tile_overlap ({overlap})")
    step = tile - 2 * overlap
    cores = [(s, min(s + step, length)) for s in range(0, length, step)]
    return [(a, b, max(0, a - overlap), min(length, b + overlap)) for a, b in cores]


def upscale_image(predictor: Predictor, lr: np.ndarray, *, tile: int = 256, tile_overlap: int = 16,
                  self_ensemble: bool = False, progress: bool = False) -> np.ndarray:
    """Float32 SR (scale H, scale W, C_out) in model range of a uint8 (H, W, C) image or a float
    one in [0, 1] (e.g. from 16-bit samples).

    Whole-image when both sides fit in `tile`; otherwise overlapping tiles, all padded to
    (tile, tile) so they share one compiled program.
    """
    x = lr.astype(np.float32) / 255.0 if lr.dtype == np.uint8 else np.asarray(lr, np.float32)
    h, w = lr.shape[:2]
    if h <= tile and w <= tile:
        return predictor(x, self_ensemble)
    s = predictor.scale
    out = None
    rows, cols = tile_grid(h, tile, tile_overlap), tile_grid(w, tile, tile_overlap)
    bar = ProgressLine(len(rows) * len(cols), "tiles", enabled=progress)
    for y0, y1, iy0, iy1 in rows:
        for x0, x1, ix0, ix1 in cols:
            y = predictor(x[iy0:iy1, ix0:ix1], self_ensemble, pad_to=(tile, tile))
            if out is None:  # the model's output channels
                out = np.zeros((s * h, s * w, y.shape[2]), np.float32)
            core = y[s * (y0 - iy0):s * (y1 - iy0), s * (x0 - ix0):s * (x1 - ix0)]
            out[s * y0:s * y1, s * x0:s * x1] = core
            bar.update()
    return out
