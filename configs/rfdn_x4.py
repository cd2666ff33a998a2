"""RFDN x4 (the authors' AIM 2020 model) on DIV2K with IMDN's recipe; its released weights convert
with scripts/convert_torch_weights.py --model rfdn --scale 4 (docs/conversion.md)."""

from mspan_jax.config_base import sr_config


def get_config():
    return sr_config(model="rfdn", scale=4)
