"""A run's step-0 params: a seeded init, or a warm start from a converted checkpoint or another
training workdir (`config.train.warm_start`), optionally re-initializing named top-level params
(`config.train.warm_start_reinit`, e.g. the upsampler of another scale)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mspan_jax.checkpoints.params import CheckpointError
from mspan_jax.checkpoints.resolve import load_weights, recorded_model_config
from mspan_jax.errors import ConfigError
from mspan_jax.models.registry import init_variables
from mspan_jax.models.variables import tree_mismatch
from mspan_jax.train.state import PyTree


def seeded_params(config: ml_collections.ConfigDict, model: Any) -> PyTree:
    """`model.init` with `config.seed`, on one LR patch, started as `config.model.init` says
    (`registry.init_variables`).

    The key uses XLA's RngBitGenerator ('rbg'): its init program compiles several times faster on
    CPU than threefry's (seconds instead of tens of seconds for MSPAN) and is as deterministic."""
    p = config.data.hr_patch_size // config.model.scale
    x = jnp.zeros((1, p, p, config.model.in_channels), jnp.float32)
    return init_variables(config.model, model, jax.random.key(config.seed, impl="rbg"), x)["params"]


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
    how = config.train.get("warm_start_upsampler", "seeded")
    if how not in ("seeded", "subpixel"):
        raise ConfigError(f"config.train.warm_start_upsampler={how!r}; choose 'seeded' or 'subpixel'")
    if how == "subpixel" and "upsampler" in reinit and source_scale != config.model.scale:
        params["upsampler"] = subpixel_upsampler(loaded["upsampler"], source_scale,
                                                 config.model.scale)
    mismatch = tree_mismatch(seeded, params)
    if mismatch:
        raise CheckpointError(f"{config.train.warm_start}: does not fit config.model outside "
                              f"warm_start_reinit {list(reinit)}: {mismatch}")
    return params


def phase_weights(source_scale: int, scale: int) -> np.ndarray:
    """(scale, source_scale) weights: output phase i of an x`scale` sub-pixel conv sits at
    (i + 0.5) / scale of an LR pixel; it takes the two nearest x`source_scale` phases, linearly
    weighted (x4 -> x2: the mean of each pair)."""
    u = (np.arange(scale) + 0.5) / scale * source_scale - 0.5  # in source-phase units
    u = np.clip(u, 0, source_scale - 1)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, source_scale - 1)
    w = np.zeros((scale, source_scale))
    np.add.at(w, (np.arange(scale), lo), 1 - (u - lo))
    np.add.at(w, (np.arange(scale), hi), u - lo)
    return w


def subpixel_upsampler(upsampler: PyTree, source_scale: int, scale: int) -> PyTree:
    """An x`source_scale` upsampler (3x3 conv to C*s^2 channels, PixelShuffle's (c, i, j) order)
    resampled to x`scale`: each new phase filter is a `phase_weights` mix of the old ones, so the
    x2 output starts as the x4 output averaged over 2x2 blocks instead of from noise."""
    w = phase_weights(source_scale, scale)
    mix = np.einsum("ik,jl->ijkl", w, w).reshape(scale * scale, source_scale * source_scale)

    def resample(x: jax.Array) -> jax.Array:  # (..., C * s^2) -> (..., C * scale^2)
        x = np.asarray(x)
        c = x.shape[-1] // source_scale**2
        x = x.reshape(*x.shape[:-1], c, source_scale**2)
        return jnp.asarray((x @ mix.T).reshape(*x.shape[:-2], c * scale * scale), jnp.float32)

    return jax.tree.map(resample, upsampler)
