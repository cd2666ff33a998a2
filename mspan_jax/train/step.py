"""Pure train and loss steps, and `make_train_step`: the one jitted (and, given a mesh, sharded)
train step that the loop, the benchmarks and the tests all run."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from mspan_jax.data.input_pipeline import device_batch_to_float
from mspan_jax.train import sharding
from mspan_jax.train.state import Optimizer, PyTree, TrainState

Batch = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, dict[str, Any]]]
LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "l1": lambda sr, hr: jnp.mean(jnp.abs(sr - hr)),
    "l2": lambda sr, hr: jnp.mean(jnp.square(sr - hr)),
}


def loss_fn(params: PyTree, apply_fn: Callable[..., jax.Array], batch: Batch, loss: str) -> jax.Array:
    """Mean `loss` ('l1' or 'l2') between model(batch['lr']) and batch['hr'], in float32."""
    batch = device_batch_to_float(batch)  # the pipeline's uint8 -> float32 in [0, 1], on the device
    sr = apply_fn({"params": params}, batch["lr"]).astype(jnp.float32)
    return LOSSES[loss](sr, batch["hr"].astype(jnp.float32))


def ema_warmup_decay(ema_decay: float, step: jax.Array) -> jax.Array:
    """The EMA's decay at `step` (the state's step before the update): min(ema_decay,
    (1 + step) / (10 + step)), so the average forgets the random initialisation within the first
    steps (at a flat 0.999, ~37% of it was still in step 1,000's EMA) and is `ema_decay` later."""
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(ema_decay), (1.0 + t) / (10.0 + t))


def train_step(state: TrainState, batch: Batch, *, apply_fn: Callable[..., jax.Array],
               optimizer: optax.GradientTransformation, loss: str, ema_decay: float,
               schedule: optax.Schedule) -> tuple[TrainState, dict[str, Any]]:
    """One optimizer step on a (global) batch; returns the new state and scalar metrics.

    NaN/Inf guard: when the loss or the gradient norm is not finite, the state is returned
    unchanged (step included) and metrics['nonfinite'] is 1, so the loop can stop with the last
    good params.
    """
    value, grads = jax.value_and_grad(loss_fn)(state.params, apply_fn, batch, loss)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
        decay = ema_warmup_decay(ema_decay, state.step)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {"loss": value, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
               "nonfinite": jnp.logical_not(finite).astype(jnp.int32)}
    return new_state, metrics


def make_train_step(train_config: ml_collections.ConfigDict, apply_fn: Callable[..., jax.Array],
                    optimizer: Optimizer, mesh: Mesh | None = None, *, donate: bool = True) -> StepFn:
    """`train_step` with `train_config`'s loss and EMA decay and `optimizer` (`create_optimizer`),
    jitted. With `mesh`: state replicated and batch split over its 'data' axis (the loop's data
    parallelism); without, a single-device program. `donate` reuses the input state's buffers for
    the new state (the caller must not read the old state after the call)."""
    step = functools.partial(train_step, apply_fn=apply_fn, optimizer=optimizer.tx,
                             loss=train_config.loss, ema_decay=train_config.ema_decay,
                             schedule=optimizer.schedule)
    shardings = {}
    if mesh is not None:
        replicated = sharding.replicated(mesh)
        shardings = dict(in_shardings=(replicated, sharding.batch_sharding(mesh)),
                         out_shardings=(replicated, replicated))
    return jax.jit(step, donate_argnums=(0,) if donate else (), **shardings)
