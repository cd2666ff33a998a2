"""A run's step-0 params: a seeded init, or a warm start from a converted checkpoint or another
training workdir (`config.train.warm_start`), optionally re-initializing named top-level params
(`config.train.warm_start_reinit`, e.g. the upsampler of another scale)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from mspan_jax.checkpoints.params import CheckpointError, tree_mismatch
from mspan_jax.checkpoints.resolve import load_weights, recorded_model_config
from mspan_jax.errors import ConfigError
from mspan_jax.train.state import PyTree


def seeded_params(config: ml_collections.ConfigDict, model: Any) -> PyTree:
    """`model.init` with `config.seed`, on one LR patch.

    The key uses XLA's RngBitGenerator ('rbg'): its init program compiles several times faster on
    CPU than threefry's (seconds instead of tens of seconds for MSPAN) and is as deterministic."""
    p = config.data.hr_patch_size // config.model.scale
    x = jnp.zeros((1, p, p, config.model.in_channels), jnp.float32)
    return model.init(jax.random.key(config.seed, impl="rbg"), x)["params"]


def initial_params(config: ml_collections.ConfigDict, model: Any) -> PyTree:
    """Warm start from a converted checkpoint or a training workdir (config.train.warm_start), else a
    seeded init. `config.train.warm_start_reinit` names top-level params (e.g. 'upsampler') that
    keep the seeded init instead; the warm start may then be of another scale (x2 from x4)."""
    reinit = tuple(config.train.get("warm_start_reinit", ()))
    if not config.train.warm_start:
        return jax.jit(lambda: seeded_params(config, model))()
    source_scale = recorded_model_config(config.train.warm_start).get("scale")
    if not reinit:
        if source_scale != config.model.scale:
            raise CheckpointError(f"{config.train.warm_start}: warm start is x{source_scale}, "
                                  f"config.model is x{config.model.scale}; to keep its body, set "
                                  "config.train.warm_start_reinit=('upsampler',)")
        return load_weights(config.train.warm_start, config.model)["params"]
    seeded = jax.jit(lambda: seeded_params(config, model))()
    unknown = sorted(set(reinit) - set(seeded))
    if unknown:
        raise ConfigError(f"config.train.warm_start_reinit: no top-level params {unknown} in "
                         f"{config.model.name} (it has {sorted(seeded)})")
    # Every architecture key but the scale must match; load_weights checks them.
    source = dict(config.model.to_dict(), scale=source_scale)
    loaded = load_weights(config.train.warm_start, source)["params"]
    params = {k: seeded[k] if k in reinit else loaded[k] for k in seeded}
    mismatch = tree_mismatch(seeded, params)
    if mismatch:
        raise CheckpointError(f"{config.train.warm_start}: does not fit config.model outside "
                              f"warm_start_reinit {list(reinit)}: {mismatch}")
    return params
