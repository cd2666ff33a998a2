"""`Upscaler`: a trained or converted model as one Python object, for notebooks and other programs.

    from mspan_jax import Upscaler
    up = Upscaler.from_checkpoint("mspan_x4")  # shipped weights by name, a checkpoint or a workdir
    sr = up.upscale("photo.png")  # or a PIL image, or uint8 / uint16 / float (H, W[, C]) arrays

It runs exactly what scripts/upscale.py runs (`inference.Predictor` + `upscale_image`): whole images
padded to a bucket (IMDN; MSPAN without attention or with CA) or at their own size (MSPAN with
MSPA or ESA, which would see the padding; `models.registry.pads_exactly`), large ones as
overlapping tiles sharing a few compiled programs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

from mspan_jax.checkpoints.resolve import load_model
from mspan_jax.data.images import StoredImage, gray_plane, pil_to_array, read_stored_image, to_uint8
from mspan_jax.data.imresize import imresize
from mspan_jax.deploy.onnx_runtime import OnnxPredictor, is_onnx_file
from mspan_jax.errors import ConfigError
from mspan_jax.inference import Predictor, upscale_image
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
        with `model=("imdn", 4)`, or an ONNX file from export.py (run by onnxruntime, the [onnx]
        extra); `options` are `__init__`'s (tile, tile_overlap, bucket, self_ensemble)."""
        if is_onnx_file(path):
            if config is not None or model is not None:
                raise ConfigError(f"{path}: an ONNX file records its model; pass no config or model")
            predictor = OnnxPredictor.from_file(path)
            return cls(predictor.model.model_config, None, predictor=predictor, **options)
        loaded = load_model(path, config, model=model)
        return cls(loaded.model_config, loaded.variables, **options)

    def upscale(self, images: Any) -> np.ndarray:
        """SR of what scripts/upscale.py takes, in the input's layout and type:

        - a numpy array: one image (H, W) or (H, W, C) with C = 1 (gray), 2 (gray + alpha), 3 (RGB)
          or 4 (RGBA), or a batch (N, H, W, C); uint8 -> uint8, uint16 -> uint16 (the model runs
          on x / 65535), float in [0, 1] -> float32 (clipped to [0, 1]);
        - a file path (str or os.PathLike) or a PIL image: its samples as `read_stored_image` keeps
          them (16 bits, gray, alpha; a palette image is RGB unless it has transparency), returned
          as a uint8 or uint16 array.

        Gray goes through an RGB model as R = G = B and comes back with MATLAB rgb2gray's weights;
        alpha is upscaled with the MATLAB bicubic, not the model (as scripts/upscale.py does).
        Anything else raises ValueError (one line saying what is accepted)."""
        if isinstance(images, (str, os.PathLike)):
            stored = read_stored_image(images)
            dtype = np.dtype(np.uint8 if stored.bits == 8 else np.uint16)
            return _from_stored(self._stored(stored), dtype, keep_channel_axis=True)
        if isinstance(images, Image.Image):
            images = pil_to_array(images)
        if hasattr(images, "__array__") or isinstance(images, (list, tuple)) or np.isscalar(images):
            images = np.asarray(images)
        else:
            raise ValueError(f"expected a numpy (or JAX) image, a file path or a PIL image, got "
                             f"{type(images).__name__}")
        if images.dtype not in (np.uint8, np.uint16) and not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"expected uint8, uint16 or float (in [0, 1]) images, got {images.dtype}")
        if images.ndim == 4 and images.shape[-1] in CHANNELS:
            return np.stack([self._one(image) for image in images])
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in CHANNELS):
            return self._one(images)
        raise ValueError(f"expected an (H, W) or (H, W, C) image or an (N, H, W, C) batch with C in "
                         f"{CHANNELS} (gray, gray + alpha, RGB, RGBA), got shape {images.shape}")

    def _stored(self, image: StoredImage) -> StoredImage:
        return upscale_stored(self.predictor, image, self.channels, tile=self.tile,
                              tile_overlap=self.tile_overlap, self_ensemble=self.self_ensemble)

    def _one(self, image: np.ndarray) -> np.ndarray:
        top = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
        x = image.astype(np.float32) / np.float32(top) if top != 1.0 else image.astype(np.float32)
        planes = x if x.ndim == 3 else x[:, :, None]
        has_alpha = planes.shape[2] in (2, 4)
        stored = StoredImage(color=planes[:, :, :-1] if has_alpha else planes,
                             alpha=planes[:, :, -1] if has_alpha else None,
                             bits=16 if top == 65535.0 else 8)
        return _from_stored(self._stored(stored), image.dtype, keep_channel_axis=image.ndim == 3)


CHANNELS = (1, 2, 3, 4)


def upscale_stored(predictor: Predictor, image: StoredImage, in_channels: int,
                   **options: Any) -> StoredImage:
    """The model's output for a StoredImage, in the input's layout: gray in -> gray out (through
    R = G = B and rgb2gray for an RGB model), alpha upscaled with the MATLAB bicubic, same bits;
    `options` are `upscale_image`'s (tile, tile_overlap, self_ensemble, progress)."""
    x = image.color
    if in_channels == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif in_channels == 1 and x.shape[2] == 3:
        x = gray_plane(x)[:, :, None].astype(np.float32)
    y = np.asarray(upscale_image(predictor, x, **options), np.float32)
    if image.color.shape[2] == 1 and y.shape[2] == 3:
        y = gray_plane(y)[:, :, None].astype(np.float32)
    alpha = image.alpha
    if alpha is not None and predictor.scale != 1:
        alpha = np.clip(imresize(alpha.astype(np.float64), float(predictor.scale)), 0.0, 1.0)
    return StoredImage(color=y, alpha=alpha, bits=image.bits)


def _from_stored(image: StoredImage, dtype: np.dtype, keep_channel_axis: bool) -> np.ndarray:
    planes = image.color if image.alpha is None else np.concatenate(
        [image.color, image.alpha[:, :, None]], axis=2)
    planes = np.clip(planes, 0.0, 1.0)
    if dtype == np.uint8:
        out = to_uint8(planes)
    elif dtype == np.uint16:
        out = np.round(planes.astype(np.float64) * 65535.0).astype(np.uint16)
    else:
        out = planes.astype(np.float32)
    return out if keep_channel_axis or out.shape[2] != 1 else out[:, :, 0]
