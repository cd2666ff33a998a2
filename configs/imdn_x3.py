"""IMDN x3 baseline on DIV2K (the official recipe)."""

from mspan_jax.config_base import sr_config


def get_config():
    return sr_config(model="imdn", scale=3)
