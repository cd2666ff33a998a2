"""mspan-jax: MSPAN and IMDN image super-resolution in JAX/Flax."""

__version__ = "0.1.0"
