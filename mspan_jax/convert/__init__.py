"""PyTorch weights -> Flax variables: file reading, declarative name/layout maps.

The PyTorch reference models are the `torch_*` modules that each model's spec names, built by
`mspan_jax.convert.torch_reference` (needs torch; import it explicitly).
"""

from mspan_jax.convert.rules import convert_state_dict, key_map, to_state_dict
from mspan_jax.convert.torch_io import ConversionError, read_state_dict, read_weights

__all__ = ["ConversionError", "convert_state_dict", "key_map", "read_state_dict", "read_weights",
           "to_state_dict"]
