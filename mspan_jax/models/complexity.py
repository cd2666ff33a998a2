"""Model size and cost: parameter count and an exact analytic count of conv multiply-adds.

Lightweight-SR papers report Mult-Adds of the convolutions for an SR output of 1280x720;
we count every conv's MACs from its traced input/output shapes (no compile needed).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mspan_jax.models.layers import TorchConv, TorchConvWeights

SR_OUTPUT_HW = (720, 1280)  # the papers' convention: a 1280x720 SR output


def count_params(variables: Any) -> int:
    """Total number of parameter scalars in a (possibly abstract) variables tree."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables)))


def abstract_variables(model: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """Shapes/dtypes of the model's variables, without allocating or computing them."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape, jnp.float32))


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of every conv of the architecture in one forward pass on an input of
    `input_shape` (NHWC): each `TorchConv`, and each `TorchConvWeights` (a conv whose weights its
    caller folds into another's, counted as the paper's layer; all are stride 1, 'same')."""
    total = 0

    def interceptor(next_fun, args, kwargs, context):
        nonlocal total
        module = context.module
        if isinstance(module, (TorchConv, TorchConvWeights)) and context.method_name == "__call__":
            x = args[0]
            taps = module.kernel_size**2 * x.shape[-1] // module.groups
            total += math.prod(x.shape[:-1]) * taps * module.features
        return next_fun(*args, **kwargs)

    variables = abstract_variables(model, input_shape)
    with nn.intercept_methods(interceptor):
        jax.eval_shape(model.apply, variables, jnp.zeros(input_shape, jnp.float32))
    return total


def sr_input_shape(scale: int, in_channels: int = 3) -> tuple[int, int, int, int]:
    """The LR input whose SR output is 1280x720 (NHWC, batch 1)."""
    h, w = SR_OUTPUT_HW
    return (1, h // scale, w // scale, in_channels)
