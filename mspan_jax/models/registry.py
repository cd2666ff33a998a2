"""Model registry: `get_model(config.model)` builds a Flax module from a config section;
`pads_exactly(model)` says whether zero padding with a validity mask leaves its output exact."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mspan_jax.models.attention import attention_min_size, attention_pads_exactly
from mspan_jax.models.imdn import IMDN
from mspan_jax.models.mspan import MSPAN, MSPANIR

MODELS: dict[str, type[nn.Module]] = {"mspan": MSPAN, "imdn": IMDN, "mspan_ir": MSPANIR}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# config.model keys of the MSPAN reconstruction that preceded the paper's figures (until 2026-11):
# a checkpoint that records them holds weights of another network.
RETIRED_MSPAN_KEYS = frozenset({"mspa_dilations", "use_mspa", "mspa_fusion"})
# MSPAN-IR before issue 21 was the SR trunk with one output conv; a config.model that records the
# trunk's keys but not `mlp_ratio` (networks.png (c)'s MLP) is of it, and so are its weights.
RETIRED_MSPAN_IR_KEYS = frozenset({"num_features", "num_blocks", "num_units", "attention"})


def get_model(model_config: Mapping[str, Any]) -> nn.Module:
    """Builds the module named by `model_config.name`; other keys are its attributes.

    `dtype` is the compute dtype name ('float32', 'bfloat16'); params stay float32.
    """
    kwargs = dict(model_config)
    name = kwargs.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"config.model.name={name!r} is not a model; choose one of {sorted(MODELS)}")
    cls = MODELS[name]
    retired = sorted(RETIRED_MSPAN_KEYS & set(kwargs))
    if name in ("mspan", "mspan_ir") and retired:
        raise ValueError(f"config.model has {retired}: these weights are of the MSPAN reconstruction "
                         "of before 2026-11, and the MSPAN architecture changed to the paper's figures "
                         "(docs/architecture.md); retrain, or use the shipped weights/mspan_x{2,3,4}")
    if name == "mspan_ir" and set(kwargs) >= RETIRED_MSPAN_IR_KEYS and "mlp_ratio" not in kwargs:
        raise ValueError("config.model mspan_ir has no 'mlp_ratio': these weights are of the MSPAN-IR "
                         "of before issue 21 (the SR trunk and one output conv), and MSPAN-IR changed "
                         "to the paper's figure (c) (docs/restoration.md); retrain")
    dtype = kwargs.pop("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"config.model.dtype={dtype!r}; choose one of {sorted(DTYPES)}")
    fields = set(cls.__dataclass_fields__) - {"parent", "name"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"config.model has keys {unknown} that {name} does not take; "
                         f"it takes {sorted(fields - {'dtype'})}")
    for key, value in kwargs.items():  # ConfigDict hands tuples over as lists
        if isinstance(value, list):
            kwargs[key] = tuple(value)
    return cls(dtype=DTYPES[dtype], **kwargs)


def pads_exactly(model: nn.Module) -> bool:
    """Whether `model.apply(variables, x, mask)` on an x zero-padded beyond its validity mask gives
    the unpadded output (to float rounding), so inference may pad inputs to shared bucket sizes.

    IMDN: yes (every conv output that feeds a conv is masked, CCA's mean and std are over the mask).
    MSPAN and MSPAN-IR: as their block attention (`attention_pads_exactly`): "none" and CA yes;
    MSPA and ESA no, their pooled, strided and resized branches see the padding and the padded
    size. Any other module is taken to honour the mask it is given.
    """
    if isinstance(model, MSPAN | MSPANIR):
        return attention_pads_exactly(model.attention)
    return True


def min_input_size(model: nn.Module) -> int:
    """The smallest LR height and width `model` runs on: 1 for the plain convolutional models, more
    where the block attention pools (MSPA 4, ESA 15)."""
    if isinstance(model, MSPAN | MSPANIR):
        return attention_min_size(model.attention)
    return 1
