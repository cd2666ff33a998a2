"""Model size and cost: parameter count and an exact analytic count of conv multiply-adds.

Lightweight-SR papers report Mult-Adds for an SR output of 1280x720; we count every conv (and
pooling op) from its traced input/output shapes (no compile needed), in both conventions that
the MSPAN paper's tables mix (`count_ops`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mspan_jax.models.layers import GlobalAvgPool, Pool, TorchConv

SR_OUTPUT_HW = (720, 1280)  # the papers' convention: a 1280x720 SR output


def count_params(variables: Any) -> int:
    """Total number of parameter scalars in a (possibly abstract) variables tree."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables)))


def abstract_variables(model: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """Shapes/dtypes of the model's variables, without allocating or computing them."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape, jnp.float32))


def count_ops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Analytic operation counts of one forward pass on an input of `input_shape` (NHWC), in the
    two conventions of the MSPAN paper's tables (docs/architecture.md):

    - `macs`: multiply-adds of every conv (output pixels x k*k x in/groups x out): the IMDN
      paper's Mult-Adds, and the IMDN rows of MSPAN's table.
    - `macs_with_bias`: those plus one add per biased conv output and the pooling ops, as the
      leaf counters of IMDN's FLOPs/count_hooks.py count them (avg: k*k adds + 1 divide per
      output, max: k*k per output); activations, resizes and products are not counted. The MSPAN
      rows of the table fit this convention.
    """
    macs = bias = pooling = 0

    def interceptor(next_fun, args, kwargs, context):
        nonlocal macs, bias, pooling
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name != "__call__":
            return out
        if isinstance(module, TorchConv):
            cin = sum(x.shape[-1] for x in (args[0] if isinstance(args[0], list | tuple) else [args[0]]))
            taps = module.kernel_size**2 * cin // module.groups
            pixels = math.prod(out.shape[:-1])
            macs += pixels * taps * module.features
            bias += pixels * module.features
        elif isinstance(module, Pool):
            pooling += out.size * (module.window**2 + (module.kind == "avg"))
        elif isinstance(module, GlobalAvgPool):
            pooling += out.size * (math.prod(args[0].shape[1:3]) + 1)
        return out

    variables = abstract_variables(model, input_shape)
    with nn.intercept_methods(interceptor):
        jax.eval_shape(model.apply, variables, jnp.zeros(input_shape, jnp.float32))
    return {"macs": macs, "macs_with_bias": macs + bias + pooling}


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of every conv (`count_ops`'s `macs`)."""
    return count_ops(model, input_shape)["macs"]


def sr_input_shape(scale: int, in_channels: int = 3, round_up: bool = True) -> tuple[int, int, int, int]:
    """The LR input whose SR output is 1280x720 (NHWC, batch 1). Where 1280 or 720 is not a
    multiple of the scale, the papers' LR side is rounded up (x3: 427x240, the IMDN paper's 71.5 G);
    `round_up=False` gives the floor (426x240, the only size the MSPAN paper's x3 row fits)."""
    h, w = SR_OUTPUT_HW
    side = (lambda n: -(-n // scale)) if round_up else (lambda n: n // scale)
    return (1, side(h), side(w), in_channels)
