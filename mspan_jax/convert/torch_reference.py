"""The PyTorch reference of any registered model, and the parity check of a conversion.

Each model's spec names its reference (`ModelSpec.torch_reference`, e.g. `torch_imdn.build`); the
references prove weight conversion: a state_dict that loads into one strictly converts to Flax
variables that give the same outputs as the Flax model. PyTorch is an optional extra
(`pip install -e .[torch]`); only the `torch_*` modules import it, and nothing else in the package
imports them eagerly.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import torch
from torch import nn

from mspan_jax.models.registry import get_model, get_spec


def build_torch_model(model_config: Mapping[str, Any]) -> nn.Module:
    """The reference module (eval mode, float32) of a `config.model` section."""
    cfg = dict(model_config)
    spec = get_spec(cfg.get("name"))
    if spec.torch_reference is None:
        raise ValueError(f"config.model.name={spec.name!r} has no PyTorch reference")
    module_name, _, function = spec.torch_reference.partition(":")
    build = getattr(importlib.import_module(module_name), function)
    return build(cfg).float().eval()


def max_abs_difference(model_config: Mapping[str, Any], state_dict: Mapping[str, np.ndarray],
                       variables: Mapping[str, Any], input_hw: tuple[int, int] = (32, 40),
                       seed: int = 0) -> float:
    """Max |Flax - PyTorch| of the output on one random [0, 1] input of size `input_hw`, on the
    [0, 1] scale: the reference model loads `state_dict` (strictly) and sees the input in its own
    pixel range (`ModelSpec.torch_pixel_range`), the Flax model uses the converted `variables`."""
    reference = build_torch_model(model_config)
    tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_dict.items()}
    reference.load_state_dict(tensors, strict=True)
    white = get_spec(model_config["name"]).torch_pixel_range
    x = np.random.default_rng(seed).random((1, model_config["in_channels"], *input_hw), dtype=np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x * np.float32(white))).numpy().transpose(0, 2, 3, 1)
    expected = expected / np.float32(white)
    got = np.asarray(jax.jit(get_model(model_config).apply)(variables, x.transpose(0, 2, 3, 1)))
    if got.shape != expected.shape:
        raise ValueError(f"output shapes differ: Flax {got.shape}, PyTorch {expected.shape}")
    return float(np.max(np.abs(got - expected)))
