"""Flax SR models (NHWC, inputs in [0, 1]) and their registry."""

from mspan_jax.models.attention import CA, ESA, MSPA
from mspan_jax.models.imdn import IMDN
from mspan_jax.models.layers import pixel_shuffle
from mspan_jax.models.mspan import BLF, IDDB, MSPAN, MSPANIR
from mspan_jax.models.registry import MODELS, get_model

__all__ = ["BLF", "CA", "ESA", "IDDB", "IMDN", "MODELS", "MSPA", "MSPAN", "MSPANIR", "get_model",
           "pixel_shuffle"]
