"""The model registry: every `ModelSpec` of this package by name, and the one model builder.

A model file of `mspan_jax.models` that defines `SPECS` registers them; nothing else does.
`get_model(config.model)` builds the Flax module a config section names, `pads_exactly(model)` /
`min_input_size(model)` answer for a built module, `get_spec(name)` gives the rest of its spec.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mspan_jax.errors import ConfigError
from mspan_jax.models.layers import INIT_SCHEMES, init_scheme_params
from mspan_jax.models.spec import ModelSpec

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@functools.cache
def specs() -> dict[str, ModelSpec]:
    """name -> spec, from the `SPECS` of every module of this package (imported on first call)."""
    package = importlib.import_module(__package__)
    found: dict[str, ModelSpec] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__package__}.{info.name}")
        for spec in getattr(module, "SPECS", ()):
            if spec.name in found:
                raise RuntimeError(f"model {spec.name!r} is registered twice ({module.__name__})")
            found[spec.name] = spec
    return found


def model_names() -> list[str]:
    """The registered `config.model.name` values, sorted."""
    return sorted(specs())


def get_spec(name: Any) -> ModelSpec:
    """The spec of `config.model.name` `name`; ConfigError (one line) when there is none."""
    found = specs().get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(f"config.model.name={name!r} is not a model; choose one of {model_names()}")
    return found


def spec_of(model: nn.Module) -> ModelSpec | None:
    """The spec whose module `model` is an instance of (None for a module no spec builds)."""
    for spec in specs().values():
        if isinstance(model, spec.module):
            return spec
    return None


def get_model(model_config: Mapping[str, Any]) -> nn.Module:
    """The Flax module `model_config.name` names, its other keys as attributes; `dtype` is the
    compute dtype name ('float32', 'bfloat16'; params stay float32). The section is user input (a
    --config, a checkpoint's record): an unknown name, key or dtype, or a section the model refuses,
    is a ConfigError (one line)."""
    kwargs = dict(model_config)
    spec = get_spec(kwargs.pop("name", None))
    problem = spec.config_problem(kwargs)
    if problem:
        raise ConfigError(problem)
    init_scheme(kwargs)
    kwargs.pop("init", None)  # how params start, not a module attribute (`init_variables`)
    dtype = kwargs.pop("dtype", "float32")
    if dtype not in DTYPES:
        raise ConfigError(f"config.model.dtype={dtype!r}; choose one of {sorted(DTYPES)}")
    fields = set(spec.module.__dataclass_fields__) - {"parent", "name"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(f"config.model has keys {unknown} that {spec.name} does not take; "
                          f"it takes {sorted(fields - {'dtype'})}")
    for key, value in kwargs.items():  # ConfigDict hands tuples over as lists
        if isinstance(value, list):
            kwargs[key] = tuple(value)
    return spec.module(dtype=DTYPES[dtype], **kwargs)


def complete_record(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded `config.model` (a checkpoint's, a workdir's) with the keys its model gained since
    filled in as the record means them (`ModelSpec.recorded_defaults`): a record without
    `init` started from "flax", an MSPAN record without `blf_activation` has ReLU projections."""
    record = dict(model_config)
    spec = specs().get(record.get("name")) if isinstance(record.get("name"), str) else None
    defaults = dict(spec.recorded_defaults) if spec is not None else {}
    if spec is not None and "init" in spec.defaults:
        defaults.setdefault("init", "flax")
    return {**defaults, **record}


def init_scheme(model_config: Mapping[str, Any]) -> str:
    """`config.model.init`: how the params start ("torch" or "flax", `layers.INIT_SCHEMES`); a
    section without the key (a record from before it existed) is "flax". ConfigError otherwise."""
    scheme = model_config.get("init", "flax")
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"config.model.init={scheme!r}; choose one of {list(INIT_SCHEMES)}")
    return scheme


def init_variables(model_config: Mapping[str, Any], model: nn.Module, key: jax.Array,
                   x: jax.Array) -> dict[str, Any]:
    """`model.init(key, x)` with its params started as `config.model.init` says: Flax's defaults
    ("flax", exactly `model.init`), or PyTorch's Conv2d initialization ("torch", `torch_init`
    with a key folded from `key`)."""
    variables = dict(model.init(key, x))
    scheme = init_scheme(model_config)
    variables["params"] = init_scheme_params(variables["params"], scheme, jax.random.fold_in(key, 1))
    return variables


def pads_exactly(model: nn.Module) -> bool:
    """Whether `model.apply(variables, x, mask)` on an x zero-padded beyond its validity mask gives
    the unpadded output (to float rounding), so inference may pad inputs to shared bucket sizes:
    its spec's answer; a module no spec builds is taken to honour the mask it is given."""
    spec = spec_of(model)
    return True if spec is None else spec.pads_exactly(model)


def min_input_size(model: nn.Module) -> int:
    """The smallest LR height and width `model` runs on (its spec's; 1 for a module without one)."""
    spec = spec_of(model)
    return 1 if spec is None else spec.min_input_size(model)
