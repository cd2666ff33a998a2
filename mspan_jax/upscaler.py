"""`Upscaler`: a trained or converted model as one Python object, for notebooks and other programs.

    from mspan_jax import Upscaler
    up = Upscaler.from_checkpoint("mspan_x4")  # shipped weights by name, a checkpoint or a workdir
    sr = up.upscale("photo.png")  # or a PIL image (one comes back), or uint8 / uint16 / float arrays

It runs exactly what scripts/upscale.py runs (`inference.Predictor` + `upscale_image`): whole images
padded to a bucket (IMDN; MSPAN without attention or with CA) or at their own size (MSPAN with
MSPA or ESA, which would see the padding; `models.registry.pads_exactly`), large ones as
overlapping tiles sharing a few compiled programs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

from mspan_jax.checkpoints.resolve import load_model
from mspan_jax.data.images import (
    StoredImage,
    gray_plane,
    pil_to_array,
    quantize,
    read_stored_image,
    stored_image,
)
from mspan_jax.data.imresize import imresize
from mspan_jax.deploy.onnx_runtime import ExportedPredictor, is_exported_file
from mspan_jax.errors import ConfigError
from mspan_jax.inference import Predictor, upscale_strips
from mspan_jax.models import get_model


class Upscaler:
    """A model with its weights, upscaling numpy images (see the module docstring)."""

    def __init__(self, model_config: Mapping[str, Any], variables: Mapping[str, Any] | None, *,
                 tile: int = 256, tile_overlap: int = 16, bucket: int = 64,
                 self_ensemble: bool = False, predictor: Predictor | None = None):
        if tile < 1 or tile_overlap < 0 or tile <= 2 * tile_overlap:
            raise ValueError(f"tile ({tile}) must exceed 2 x tile_overlap ({tile_overlap})")
        self.model_config = model_config
        self.scale = int(model_config["scale"])
        self.channels = int(model_config.get("in_channels", 3))
        self.tile, self.tile_overlap, self.self_ensemble = tile, tile_overlap, self_ensemble
        # `predictor`: another backend (an exported file's, `from_checkpoint` of a .onnx path).
        self.predictor = predictor or Predictor(get_model(model_config).apply, variables,
                                                scale=self.scale, bucket=bucket)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike,
                        config: ml_collections.ConfigDict | None = None, *,
                        model: tuple[str, int] | None = None, **options: Any) -> Upscaler:
        """The model a params checkpoint or training workdir records (checked against `config`'s
        model when given), shipped weights by name ("mspan_x4"), or a PyTorch .pth / .safetensors
        with `model=("imdn", 4)`, or an ONNX / TFLite file from export.py (run by onnxruntime /
        LiteRT, the [onnx] / [tflite] extra); `options` are `__init__`'s (tile, tile_overlap,
        bucket, self_ensemble)."""
        if is_exported_file(path):
            if config is not None or model is not None:
                raise ConfigError(f"{path}: an exported file records its model; pass no config or "
                                  "model")
            predictor = ExportedPredictor.from_file(path)
            return cls(predictor.model.model_config, None, predictor=predictor, **options)
        loaded = load_model(path, config, model=model)
        return cls(loaded.model_config, loaded.variables, **options)

    def upscale(self, images: Any) -> Any:
        """SR of what scripts/upscale.py takes, in the input's layout and type:

        - a numpy array: one image (H, W) or (H, W, C) with C = 1 (gray), 2 (gray + alpha), 3 (RGB)
          or 4 (RGBA), or a batch (N, H, W, C); uint8 -> uint8, uint16 -> uint16 (the model runs
          on x / 65535), float in [0, 1] -> float32 (clipped to [0, 1]); a float image with values
          outside [0, 1] (e.g. 0..255) is refused, not clipped;
        - a file path (str or os.PathLike): its samples as `read_stored_image` keeps them (upright,
          16 bits, gray, alpha; a palette image is RGB unless it has transparency), returned as a
          uint8 or uint16 array;
        - a PIL image: a PIL image (upright, as files are read) of its samples' mode (L, LA, RGB,
          RGBA, I;16 or I; palette, 1-bit and CMYK come back as RGB(A) or L), with its ICC profile
          and DPI in `info`.

        Gray goes through an RGB model as R = G = B and comes back with MATLAB rgb2gray's weights;
        alpha is upscaled with the MATLAB bicubic, not the model (as scripts/upscale.py does).
        Images smaller than the model runs on are edge-padded and cropped (`Predictor`). Anything
        else raises ValueError (one line saying what is accepted)."""
        if isinstance(images, (str, os.PathLike)):
            stored = read_stored_image(images)
            return self._assemble(stored, np.dtype(np.uint8 if stored.bits == 8 else np.uint16))
        if isinstance(images, Image.Image):
            return self._pil(images)
        if hasattr(images, "__array__") or isinstance(images, (list, tuple)) or np.isscalar(images):
            images = np.asarray(images)
        else:
            raise ValueError(f"expected a numpy (or JAX) image, a file path or a PIL image, got "
                             f"{type(images).__name__}")
        if images.dtype not in (np.uint8, np.uint16) and not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"expected uint8, uint16 or float (in [0, 1]) images, got {images.dtype}")
        if images.ndim == 4 and images.shape[-1] in CHANNELS:
            _check_values(images)
            return np.stack([self._one(image) for image in images])
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in CHANNELS):
            _check_values(images)
            return self._one(images)
        raise ValueError(f"expected an (H, W) or (H, W, C) image or an (N, H, W, C) batch with C in "
                         f"{CHANNELS} (gray, gray + alpha, RGB, RGBA), got shape {images.shape}")

    def _assemble(self, image: StoredImage, dtype: np.dtype) -> np.ndarray:
        return upscale_to_array(self.predictor, image, self.channels, dtype, tile=self.tile,
                                tile_overlap=self.tile_overlap, self_ensemble=self.self_ensemble)

    def _pil(self, im: Image.Image) -> Image.Image:
        samples = pil_to_array(im)
        _check_size(samples.shape)
        out = self._assemble(stored_image(samples), samples.dtype)
        result = Image.fromarray(out[:, :, 0] if out.shape[2] == 1 else out)  # L, I;16, LA, RGB(A)
        if im.mode == "I":
            result = result.convert("I")
        for key in ("icc_profile", "dpi"):
            if im.info.get(key):
                result.info[key] = im.info[key]
        return result

    def _one(self, image: np.ndarray) -> np.ndarray:
        _check_size(image.shape)
        if image.dtype in (np.uint8, np.uint16):
            stored = stored_image(image)
        else:
            planes = image.astype(np.float32)
            planes = planes if planes.ndim == 3 else planes[:, :, None]
            has_alpha = planes.shape[2] in (2, 4)
            stored = StoredImage(color=planes[:, :, :-1] if has_alpha else planes,
                                 alpha=planes[:, :, -1] if has_alpha else None, bits=8)
        out = self._assemble(stored, image.dtype if image.dtype in (np.uint8, np.uint16)
                             else np.dtype(np.float32))
        return out if image.ndim == 3 or out.shape[2] != 1 else out[:, :, 0]


CHANNELS = (1, 2, 3, 4)
# Float samples further than half a uint8 step outside [0, 1] are refused: nearer ones quantize as
# their clipped value would, so clipping them changes nothing anyone sees.
FLOAT_TOLERANCE = 0.5 / 255.0


def _check_size(shape: tuple[int, ...]) -> None:
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"an image needs at least 1x1 pixels, got shape {shape}")


def _check_values(images: np.ndarray) -> None:
    """ValueError for float samples that are not in [0, 1]: e.g. 0..255 values would be clipped
    to white."""
    if images.dtype.kind != "f" or images.size == 0:
        return
    lo, hi = float(np.min(images)), float(np.max(images))
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError("the float image holds NaN; give samples in [0, 1]")
    if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
        hint = " (0..255 samples: divide by 255, or pass them as uint8)" if hi <= 255.5 else ""
        raise ValueError(f"float images must be in [0, 1], got values from {lo:g} to {hi:g}{hint}")


ALPHA_CONTEXT = 4  # LR rows beyond a strip that its bicubic alpha sees (the kernel reaches 2)
SAMPLE_BLOCK_BYTES = 1 << 24  # float32 output rows converted (gray, alpha, quantized) at a time


def _alpha_rows(alpha: np.ndarray, scale: int, start: int, stop: int) -> np.ndarray:
    """Output rows [start, stop) of the MATLAB bicubic upscale of `alpha` (H, W), clipped to
    [0, 1]: computed from the LR rows they see, equal to those rows of the whole upscale."""
    if scale == 1:
        return alpha[start:stop]
    a = max(0, start // scale - ALPHA_CONTEXT)
    b = min(alpha.shape[0], -(-stop // scale) + ALPHA_CONTEXT)
    rows = imresize(alpha[a:b].astype(np.float64), float(scale))
    return np.clip(rows[start - scale * a:stop - scale * a], 0.0, 1.0)


def upscale_samples(predictor: Predictor, image: StoredImage, in_channels: int, dtype: np.dtype,
                    **options: Any) -> Iterator[np.ndarray]:
    """The model's output for a StoredImage in the input's layout, as strips of whole rows (rows,
    scale W, C) from top to bottom (`upscale_strips`): gray in -> gray out (through R = G = B and
    rgb2gray for an RGB model), alpha (last channel) upscaled with the MATLAB bicubic; samples
    quantized to `dtype` (uint8, uint16) or float32 clipped to [0, 1]. `options` are
    `upscale_strips`'s (tile, tile_overlap, self_ensemble, progress)."""
    x = image.color
    if in_channels == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif in_channels == 1 and x.shape[2] == 3:
        x = gray_plane(x)[:, :, None].astype(np.float32)
    dtype, row = np.dtype(dtype), 0
    for strip in upscale_strips(predictor, x, **options):
        block = max(1, SAMPLE_BLOCK_BYTES // (strip[0].size * 4))
        for i in range(0, len(strip), block):  # in blocks: float64 temporaries of a fixed size
            y = strip[i:i + block]
            if image.color.shape[2] == 1 and y.shape[2] == 3:
                y = gray_plane(y)[:, :, None].astype(np.float32)
            if image.alpha is not None:
                alpha = _alpha_rows(image.alpha, predictor.scale, row, row + len(y))
                y = np.concatenate([y, alpha[:, :, None].astype(np.float32)], axis=2)
            row += len(y)
            yield quantize(y, 8 if dtype == np.uint8 else 16) if dtype.kind == "u" else \
                np.clip(y, 0.0, 1.0).astype(np.float32)


def upscale_to_array(predictor: Predictor, image: StoredImage, in_channels: int, dtype: np.dtype,
                     **options: Any) -> np.ndarray:
    """`upscale_samples` as one (scale H, scale W, C) array of `dtype`, filled strip by strip: the
    output as stored plus one strip in memory."""
    s, (h, w) = predictor.scale, image.color.shape[:2]
    out = np.empty((s * h, s * w, image.color.shape[2] + (image.alpha is not None)), dtype)
    row = 0
    for strip in upscale_samples(predictor, image, in_channels, dtype, **options):
        out[row:row + len(strip)] = strip
        row += len(strip)
    return out


def upscale_stored(predictor: Predictor, image: StoredImage, in_channels: int,
                   **options: Any) -> StoredImage:
    """`upscale_samples` as one float32 StoredImage (same bits and metadata)."""
    planes = upscale_to_array(predictor, image, in_channels, np.dtype(np.float32), **options)
    has_alpha = image.alpha is not None
    return StoredImage(color=planes[:, :, :-1] if has_alpha else planes,
                       alpha=planes[:, :, -1] if has_alpha else None, bits=image.bits,
                       meta=image.meta)
