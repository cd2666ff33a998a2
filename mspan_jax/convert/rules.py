"""Declarative PyTorch <-> Flax maps: parameter names and layouts, per model.

Every parameter of the SR models is a conv (`kernel` + `bias` in Flax, `weight` + `bias` in
PyTorch), and MSPAN-IR adds LayerNorms (`scale` + `bias` in Flax, `weight` + `bias` in PyTorch),
so a model's map is a short list of module-path rewrites, tried in order, with the fallback
"same path, '/' -> '.'". Layouts:

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

from mspan_jax.checkpoints.params import expected_variables, tree_mismatch
from mspan_jax.convert.torch_io import ConversionError, strip_prefixes

# (Flax module path regex, torch module prefix template); first full match wins.
MODULE_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "imdn": (
        (r"(IMDB\d+)/cca/du1", r"\1.cca.conv_du.0"),
        (r"(IMDB\d+)/cca/du2", r"\1.cca.conv_du.2"),
        (r"c", "c.0"),
        (r"upsampler", "upsampler.0"),
    ),
    "mspan": (
        (r"body/(.+)", r"\1"),
        (r"upsampler", "upsampler.0"),
    ),
    "mspan_ir": (),  # figure (c): head_conv1, stage1/iddb/AU1, stage1/norm, ... as they are
}
# Flax leaf name -> torch leaf name.
LEAF_NAMES = {"kernel": "weight", "bias": "bias", "scale": "weight"}  # scale: MSPAN-IR's LayerNorm
KERNEL_TO_TORCH = (3, 2, 0, 1)  # HWIO -> OIHW
KERNEL_FROM_TORCH = (2, 3, 1, 0)  # OIHW -> HWIO


def torch_module_name(model_name: str, flax_module_path: str) -> str:
    """The torch module prefix of a Flax module path ('IMDB1/cca/du1' -> 'IMDB1.cca.conv_du.0')."""
    if model_name not in MODULE_RULES:
        raise ConversionError(f"config.model.name={model_name!r} has no conversion rules; "
                              f"choose one of {sorted(MODULE_RULES)}")
    for pattern, template in MODULE_RULES[model_name]:
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
    """A guess at which model a state_dict is for ('imdn x4, num_features=64'), for error hints."""
    if "IMDB1.c1.weight" in state_dict:
        name = "imdn"
    elif "IDDB1.AU1.weight" in state_dict and "out_conv.weight" in state_dict:
        return "the MSPAN-IR of before issue 21 (SR trunk + out_conv; retired, retrain)"
    elif "IDDB1.AU1.weight" in state_dict:
        name = "mspan"
    elif "stage1.iddb.AU1.weight" in state_dict:
        name = "mspan_ir"
    else:
        return "an unknown architecture"
    up = state_dict.get("upsampler.0.weight")
    if up is not None:  # out_channels * scale^2 filters, assuming RGB output
        scale = round((np.shape(up)[0] / 3) ** 0.5)
        name += f" x{scale}" if 3 * scale * scale == np.shape(up)[0] else ""
    fea = state_dict.get("fea_conv.weight", state_dict.get("head_conv1.weight"))
    name += f", num_features={np.shape(fea)[0]}" if fea is not None else ""
    if name.startswith("mspan"):  # the block attention, by its module name in the first IDDB
        block = "stage1.iddb" if name.startswith("mspan_ir") else "IDDB1"
        kinds = [k for k in ("mspa", "ca", "esa")
                 if any(key.startswith(f"{block}.{k}.") for key in state_dict)]
        name += f", attention={kinds[0] if kinds else 'none'}"
    return name


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
