"""Declarative PyTorch <-> Flax maps: parameter names and layouts, per model.

Every parameter of the SR models is a conv (`kernel` + `bias` in Flax, `weight` + `bias` in
PyTorch), and MSPAN-IR adds LayerNorms (`scale` + `bias` in Flax, `weight` + `bias` in PyTorch),
so a model's map is a short list of module-path rewrites (its spec's `torch_names`), tried in
order, with the fallback "same path, '/' -> '.'". Layouts:

  conv kernel       torch (O, I/groups, kH, kW)  ->  Flax (kH, kW, I/groups, O)   transpose (2, 3, 1, 0)
  depthwise kernel  torch (C, 1, k, k)           ->  Flax (k, k, 1, C)            the same transpose
  bias              (O,)                         ->  (O,)                         as is
  LayerNorm weight  (C,)                         ->  scale (C,)                   as is

The upsampler needs no channel permutation: `mspan_jax.models.layers.pixel_shuffle` uses
torch.nn.PixelShuffle's channel order (tests/test_convert.py proves it at x2, x3 and x4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mspan_jax.convert.torch_io import ConversionError, strip_prefixes
from mspan_jax.models.registry import specs
from mspan_jax.models.variables import expected_variables, tree_mismatch

# Flax leaf name -> torch leaf name.
LEAF_NAMES = {"kernel": "weight", "bias": "bias", "scale": "weight"}  # scale: MSPAN-IR's LayerNorm
KERNEL_TO_TORCH = (3, 2, 0, 1)  # HWIO -> OIHW
KERNEL_FROM_TORCH = (2, 3, 1, 0)  # OIHW -> HWIO


def torch_module_name(model_name: str, flax_module_path: str) -> str:
    """The torch module prefix of a Flax module path ('IMDB1/cca/du1' -> 'IMDB1.cca.conv_du.0')."""
    spec = specs().get(model_name)
    if spec is None or spec.torch_reference is None:
        known = sorted(name for name, s in specs().items() if s.torch_reference is not None)
        raise ConversionError(f"config.model.name={model_name!r} has no conversion rules; "
                              f"choose one of {known}")
    for pattern, template in spec.torch_names:
        match = re.fullmatch(pattern, flax_module_path)
        if match:
            return match.expand(template).replace("/", ".")
    return flax_module_path.replace("/", ".")


def _flat_params(tree: Mapping[str, Any]) -> dict[str, Any]:
    """'IMDB1/c1/kernel' -> leaf for every leaf of a params tree."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in flat}


def key_map(model_config: Mapping[str, Any]) -> dict[str, str]:
    """Flax param path ('IMDB1/c1/kernel') -> torch key ('IMDB1.c1.weight') for a model config."""
    params = expected_variables(model_config)["params"]
    out = {}
    for path in _flat_params(params):
        module, leaf = path.rsplit("/", 1)
        out[path] = f"{torch_module_name(model_config['name'], module)}.{LEAF_NAMES[leaf]}"
    return out


def _to_torch_layout(array: Any) -> Any:
    return np.transpose(array, KERNEL_TO_TORCH) if np.ndim(array) == 4 else array


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[i] for i in KERNEL_TO_TORCH) if len(shape) == 4 else tuple(shape)


def _from_torch_layout(array: np.ndarray) -> np.ndarray:
    return np.transpose(array, KERNEL_FROM_TORCH) if array.ndim == 4 else array


def describe_state_dict(state_dict: Mapping[str, np.ndarray]) -> str:
    """A guess at which model a state_dict is for ('imdn x4, num_features=64'), for error hints:
    the first registered model whose spec recognizes it."""
    for spec in specs().values():
        found = spec.describe_weights(state_dict) if spec.describe_weights else None
        if found:
            return found
    return "an unknown architecture"


def convert_state_dict(model_config: Mapping[str, Any],
                       state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Flax variables `{'params': ...}` (float32 jax arrays) from a PyTorch state_dict.

    Refuses (ConversionError, one line) a state_dict for another architecture, width or scale,
    listing its missing keys, unexpected keys and shape mismatches.
    """
    state_dict = strip_prefixes(state_dict)
    names = key_map(model_config)
    expected_params = _flat_params(expected_variables(model_config)["params"])
    expected_torch = {names[path]: jax.ShapeDtypeStruct(_torch_shape(s.shape), s.dtype)
                      for path, s in expected_params.items()}
    mismatch = tree_mismatch(expected_torch, dict(state_dict))
    if mismatch:
        cfg = model_config
        attention = f", attention={cfg['attention']}" if "attention" in cfg else ""
        raise ConversionError(
            f"state_dict looks like {describe_state_dict(state_dict)} but config.model is "
            f"{cfg['name']} x{cfg['scale']}, num_features={cfg.get('num_features')}{attention}; pass "
            f"the matching --model/--scale/--attention or --config. {mismatch}"
        )
    params: dict[str, Any] = {}
    for path, key in names.items():
        node = params
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(_from_torch_layout(np.asarray(state_dict[key])), jnp.float32)
    return {"params": params}


def to_state_dict(model_config: Mapping[str, Any],
                  variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The PyTorch state_dict (numpy arrays, torch layouts) of Flax variables; inverse of
    `convert_state_dict`."""
    names = key_map(model_config)
    flat = _flat_params(variables["params"])
    missing = sorted(set(names) - set(flat))
    if missing:
        raise ConversionError(f"variables do not fit config.model {model_config['name']}: missing "
                              f"{missing[:8]}")
    return {names[path]: np.ascontiguousarray(_to_torch_layout(np.asarray(flat[path], np.float32)))
            for path in names}
