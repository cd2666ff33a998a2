"""Prediction on images of any size with a bounded number of compiled programs.

`Predictor` takes one of two paths, by `models.registry.pads_exactly` of the model:

- **padded** (IMDN; MSPAN and MSPAN-IR with attention "none" or "ca"): each input is zero-padded
  to a multiple of `bucket` (per H and W) and the validity mask passed, so a padded input gives
  exactly the unpadded result while every size in a bucket shares one compiled program;
- **exact size** (MSPAN and MSPAN-IR with MSPA, the default, or ESA): their pooled and resized
  attention branches would see the padding, so each input runs at its own size, without a mask:
  one program per distinct size.

Either way compiled programs live in one process-wide cache, keyed by `apply_fn`, the variables'
shapes and the input shape, least recently used dropped beyond `MAX_PROGRAMS`; repeated
evaluations with new parameter values reuse them. `upscale_image` adds overlapping tiles for large
images: each tile carries at least `tile_overlap` LR pixels of context on every side that has
image, predicted and thrown away, and tiles take one of a few input shapes (`tile_grid`), so a
folder of photos costs a few compiles. Tiles equal whole-image inference when the model's
receptive field fits in the overlap and it has no global statistics (MSPAN without attention);
MSPA's pooled context and IMDN's CCA see the tile borders (docs/evaluation.md gives the
differences).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from mspan_jax.models.registry import min_input_size, pads_exactly
from mspan_jax.progress import ProgressLine

ApplyFn = Callable[[Any, jax.Array, jax.Array | None], jax.Array]


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


# (owner, variables' avals, input shape, masked?) -> compiled program; most recently used last.
_PROGRAMS: OrderedDict[Hashable, Any] = OrderedDict()
MAX_PROGRAMS = 32  # compiled programs kept per process (each input size of an exact-size model is one)


def _variables_key(variables: Any) -> Hashable:
    leaves, treedef = jax.tree.flatten(variables)
    return treedef, tuple(jax.typeof(leaf) for leaf in leaves)


def _compile(apply_fn: ApplyFn, variables: Any, x: np.ndarray, mask: np.ndarray | None):
    """`apply_fn` compiled ahead of time for these argument shapes: dropping the program frees it,
    where a jitted function keeps one for every shape it has seen."""
    return jax.jit(apply_fn).lower(variables, x, mask).compile()


def _compiled(owner: Hashable, apply_fn: ApplyFn, variables: Any, variables_key: Hashable,
              x: np.ndarray, mask: np.ndarray | None):
    """The program of `apply_fn` for these argument shapes: from `_PROGRAMS`, else compiled."""
    key = (owner, variables_key, x.shape, mask is not None)
    program = _PROGRAMS.pop(key, None)
    if program is None:
        program = _compile(apply_fn, variables, x, mask)
    _PROGRAMS[key] = program
    while len(_PROGRAMS) > MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


def model_pads_exactly(apply_fn: ApplyFn) -> bool:
    """`pads_exactly` of the model whose bound `apply` `apply_fn` is (e.g. `model.apply`); True for
    any other callable (a stand-in that takes the mask)."""
    model = getattr(apply_fn, "__self__", None)
    return pads_exactly(model) if isinstance(model, nn.Module) else True


def model_min_size(apply_fn: ApplyFn) -> int:
    """`min_input_size` of the model whose bound `apply` `apply_fn` is; 1 for any other callable."""
    model = getattr(apply_fn, "__self__", None)
    return min_input_size(model) if isinstance(model, nn.Module) else 1


class Predictor:
    """Runs `apply_fn(variables, x, mask)` on single float (h, w, C) images in [0, 1].

    `padded` (default: `model_pads_exactly(apply_fn)`): inputs are zero-padded to `pad_to`
    (default: the next multiples of `bucket`) and masked, so one program serves every size in a
    bucket. Not `padded`: each input runs at its own size with mask None (exact for every model;
    one program per size, `bucket` and `pad_to` unused). `num_compiled` counts the distinct
    programs (input shapes as run) this predictor has used; they are compiled once per process
    while in the cache (`MAX_PROGRAMS`), shared by predictors of the same `apply_fn`.

    An input below `min_size` (default: `model_min_size(apply_fn)`, e.g. MSPA's 4 pixels) on a
    side runs edge-padded to it and its output is cropped: every image of at least 1x1 gives its
    scale x size output.
    """

    def __init__(self, apply_fn: ApplyFn, variables: Any, *, scale: int, bucket: int = 64,
                 padded: bool | None = None, min_size: int | None = None):
        if bucket < 1:
            raise ValueError(f"bucket must be a positive integer, got {bucket}")
        self.apply_fn, self.scale, self.bucket = apply_fn, int(scale), int(bucket)
        self.padded = model_pads_exactly(apply_fn) if padded is None else bool(padded)
        self.min_size = model_min_size(apply_fn) if min_size is None else max(1, int(min_size))
        self.variables = jax.device_put(variables)
        self._variables_key = _variables_key(self.variables)
        try:
            hash(apply_fn)
            self._owner: Hashable = apply_fn
        except TypeError:  # an unhashable callable: its programs are this predictor's own
            self._owner = object()
        self._shapes: set[tuple[int, ...]] = set()

    @property
    def num_compiled(self) -> int:
        """How many distinct programs (input shapes as run, padded or exact) this predictor has run."""
        return len(self._shapes)

    @property
    def program_shapes(self) -> frozenset[tuple[int, ...]]:
        """The input shapes (N, H, W, C) as run (padded or exact) by this predictor, one program each."""
        return frozenset(self._shapes)

    def _run(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        self._shapes.add(x.shape)
        program = _compiled(self._owner, self.apply_fn, self.variables, self._variables_key, x, mask)
        return np.asarray(program(self.variables, x, mask))

    def predict(self, x: np.ndarray, pad_to: tuple[int, int] | None = None) -> np.ndarray:
        """Float32 output (scale h, scale w, C_out) of one float (h, w, C) input; `pad_to` (padded
        path only) overrides the bucket's size."""
        h, w, c = x.shape
        if h < 1 or w < 1:
            raise ValueError(f"an image needs at least 1x1 pixels, got {w}x{h}")
        m = self.min_size
        if not self.padded:
            if h < m or w < m:  # below what the model runs on: edge-padded, the output cropped
                x = np.pad(x, ((0, max(0, m - h)), (0, max(0, m - w)), (0, 0)), mode="edge")
            y = self._run(np.ascontiguousarray(x[None], np.float32), None)
            return y[0, : self.scale * h, : self.scale * w]
        ph, pw = pad_to if pad_to is not None else (padded_size(h, self.bucket),
                                                     padded_size(w, self.bucket))
        ph, pw = max(ph, m), max(pw, m)
        if ph < h or pw < w:
            raise ValueError(f"pad_to {(ph, pw)} is smaller than the input {(h, w)}")
        padded = np.zeros((1, ph, pw, c), np.float32)
        padded[0, :h, :w] = x
        mask = np.zeros((1, ph, pw, 1), np.float32)
        mask[0, :h, :w] = 1.0
        return self._run(padded, mask)[0, : self.scale * h, : self.scale * w]

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


# Tile windows start on multiples of this where they can: MSPA's coarsest pooling is 4x4, so a
# window starting on one pools the whole image's 4x4 (and 2x2) windows, not windows shifted
# against them (full-size MSPAN x4, 427-pixel-high image: max tile difference ~8x smaller).
TILE_ALIGN = 4


def tile_grid(length: int, tile: int, overlap: int,
              align: int = TILE_ALIGN) -> list[tuple[int, int, int, int]]:
    """(core_start, core_end, input_start, input_end) along one axis.

    Cores of `tile - 2 * overlap` pixels cover the axis without overlapping; each input is a
    window of min(tile, length) pixels around its core, with at least `overlap` context pixels on
    each side that has image (at the image border the window shifts inward, taking more on the
    other side). Of the starts that allow, the first multiple of `align` is taken, if any: that
    shortens a window at the far border by less than `align`. So an axis has at most `align` input
    lengths over all images: tiles share a few programs at their own sizes, one padded to
    (tile, tile).
    """
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than twice tile_overlap ({overlap})")
    step, size = tile - 2 * overlap, min(tile, length)
    grid = []
    for a in range(0, length, step):
        b = min(a + step, length)
        # The window must reach b + overlap (or the end) and start by a - overlap (or 0).
        lowest, highest = max(0, min(length, b + overlap) - size), max(0, a - overlap)
        start = -(-lowest // align) * align
        start = start if start <= highest else lowest
        grid.append((a, b, start, min(length, start + size)))
    return grid


def upscale_strips(predictor: Predictor, lr: np.ndarray, *, tile: int = 256,
                   tile_overlap: int = 16, self_ensemble: bool = False,
                   progress: bool = False) -> Iterator[np.ndarray]:
    """The float32 SR of a uint8 (H, W, C) image or a float one in [0, 1] (e.g. from 16-bit
    samples), in model range, as strips of whole output rows (rows, scale W, C_out) from top to
    bottom, so that a caller can store or write each before the next is made: memory holds one row
    of tiles, not the output.

    Whole-image (one strip) when both sides fit in `tile`; otherwise overlapping tiles
    (`tile_grid`), a strip per row of them: padded to (tile, tile) on the padded path, so they
    share one compiled program; at their own sizes on the exact-size path, (tile, tile) inside the
    image and shorter by less than `TILE_ALIGN` pixels at its far borders, so all images share at
    most TILE_ALIGN**2 programs. With `progress`, tiles count as they are made, and the last once
    the caller has taken (written, when the caller writes them) the last row: the rows' writing is
    inside the rate, and the line ends when the output is complete.
    """
    x = lr.astype(np.float32) / 255.0 if lr.dtype == np.uint8 else np.asarray(lr, np.float32)
    h, w = lr.shape[:2]
    if h <= tile and w <= tile:
        yield predictor(x, self_ensemble)
        return
    s = predictor.scale
    rows, cols = tile_grid(h, tile, tile_overlap), tile_grid(w, tile, tile_overlap)
    bar = ProgressLine(len(rows) * len(cols), "tiles", enabled=progress)
    for y0, y1, iy0, iy1 in rows:
        strip = None
        for x0, x1, ix0, ix1 in cols:
            y = predictor(x[iy0:iy1, ix0:ix1], self_ensemble, pad_to=(tile, tile))
            if strip is None:  # the model's output channels
                strip = np.empty((s * (y1 - y0), s * w, y.shape[2]), np.float32)
            strip[:, s * x0:s * x1] = y[s * (y0 - iy0):s * (y1 - iy0), s * (x0 - ix0):s * (x1 - ix0)]
            if bar.done < bar.total - 1:
                bar.update()
        yield strip
    bar.update()  # the last tile: once the caller has taken (written) the last row


def upscale_image(predictor: Predictor, lr: np.ndarray, *, tile: int = 256, tile_overlap: int = 16,
                  self_ensemble: bool = False, progress: bool = False) -> np.ndarray:
    """Float32 SR (scale H, scale W, C_out) in model range of a uint8 (H, W, C) image or a float
    one in [0, 1]: `upscale_strips` stacked."""
    out, row = None, 0
    for strip in upscale_strips(predictor, lr, tile=tile, tile_overlap=tile_overlap,
                                self_ensemble=self_ensemble, progress=progress):
        s = predictor.scale
        if out is None and len(strip) == s * lr.shape[0]:  # whole-image: the one strip is it
            return strip
        if out is None:
            out = np.empty((s * lr.shape[0], s * lr.shape[1], strip.shape[2]), np.float32)
        out[row:row + len(strip)] = strip
        row += len(strip)
    return out
