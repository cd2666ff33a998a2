"""Flax SR models (NHWC, inputs in [0, 1]), one file each with its `ModelSpec`, and their registry."""

from mspan_jax.models.attention import CA, ESA, MSPA
from mspan_jax.models.imdn import IMDN
from mspan_jax.models.layers import pixel_shuffle
from mspan_jax.models.mspan import BLF, IDDB, MSPAN, MSPANIR
from mspan_jax.models.registry import get_model, get_spec, model_names

__all__ = ["BLF", "CA", "ESA", "IDDB", "IMDN", "MSPA", "MSPAN", "MSPANIR", "get_model", "get_spec",
           "model_names", "pixel_shuffle"]
