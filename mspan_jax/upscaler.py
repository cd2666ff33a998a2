"""`Upscaler`: a trained or converted model as one Python object, for notebooks and other programs.

    from mspan_jax import Upscaler
    up = Upscaler.from_checkpoint("weights/mspan_x4")  # a params checkpoint or a training workdir
    sr = up.upscale(lr)  # uint8 (H, W, 3) -> uint8 (4H, 4W, 3); also (N, H, W, 3) and floats in [0, 1]

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

from mspan_jax.checkpoints.resolve import load_model
from mspan_jax.data.images import to_uint8
from mspan_jax.inference import Predictor, upscale_image
from mspan_jax.models import get_model


class Upscaler:
    """A model with its weights, upscaling numpy images (see the module docstring)."""

    def __init__(self, model_config: Mapping[str, Any], variables: Mapping[str, Any], *,
                 tile: int = 256, tile_overlap: int = 16, bucket: int = 64,
                 self_ensemble: bool = False):
        if tile < 1 or tile_overlap < 0 or tile <= 2 * tile_overlap:
            raise ValueError(f"tile ({tile}) must exceed 2 x tile_overlap ({tile_overlap})")
        self.model_config = model_config
        self.scale = int(model_config["scale"])
        self.channels = int(model_config.get("in_channels", 3))
        self.tile, self.tile_overlap, self.self_ensemble = tile, tile_overlap, self_ensemble
        self.predictor = Predictor(get_model(model_config).apply, variables, scale=self.scale,
                                   bucket=bucket)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike,
                        config: ml_collections.ConfigDict | None = None, **options: Any) -> Upscaler:
        """The model a params checkpoint or training workdir records (checked against `config`'s
        model when given); `options` are `__init__`'s (tile, tile_overlap, bucket, self_ensemble)."""
        loaded = load_model(path, config)
        return cls(loaded.model_config, loaded.variables, **options)

    def upscale(self, images: np.ndarray) -> np.ndarray:
        """SR of one (H, W, C) image or a batch (N, H, W, C): uint8 in -> uint8 out, float in [0, 1]
        -> float32 out (clipped to [0, 1])."""
        images = np.asarray(images)
        if images.ndim not in (3, 4) or images.shape[-1] != self.channels:
            raise ValueError(f"expected an (H, W, {self.channels}) image or an (N, H, W, "
                             f"{self.channels}) batch, got shape {images.shape}")
        if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"expected uint8 or float images in [0, 1], got {images.dtype}")
        batch = images if images.ndim == 4 else images[None]
        out = [self._one(image) for image in batch]
        return np.stack(out) if images.ndim == 4 else out[0]

    def _one(self, image: np.ndarray) -> np.ndarray:
        sr = upscale_image(self.predictor, image, tile=self.tile, tile_overlap=self.tile_overlap,
                           self_ensemble=self.self_ensemble)
        return to_uint8(sr) if image.dtype == np.uint8 else np.clip(sr, 0.0, 1.0).astype(np.float32)
