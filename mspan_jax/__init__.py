"""mspan-jax: MSPAN, IMDN and RFDN image super-resolution, and MSPAN-IR restoration, in JAX/Flax."""

from mspan_jax import storage as _storage

# Before etils, gcsfs or tensorstore are imported: the environment their gs:// access reads.
_storage.configure()

__version__ = "0.1.0"

__all__ = ["Upscaler"]


def __getattr__(name: str):
    """`from mspan_jax import Upscaler` imports JAX and the models only when asked for."""
    if name == "Upscaler":
        from mspan_jax.upscaler import Upscaler

        return Upscaler
    raise AttributeError(f"module 'mspan_jax' has no attribute {name!r}")
