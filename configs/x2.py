"""MSPAN x2 super-resolution on DIV2K (IMDN's recipe)."""

from mspan_jax.config_base import sr_config


def get_config():
    return sr_config(model="mspan", scale=2)
