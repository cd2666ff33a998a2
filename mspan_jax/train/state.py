"""Training state, optimizer and learning-rate schedule, all built from `config.train`."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position (which is `step`).

    `ema_params` is None when `config.train.ema_decay` is 0.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    ema_params: PyTree | None = None

    def eval_params(self) -> PyTree:
        """The params used for validation and the best checkpoint: the EMA when kept."""
        return self.params if self.ema_params is None else self.ema_params


def total_steps(train_config: ml_collections.ConfigDict) -> int:
    """Steps of the run: `num_steps` when > 0, else `num_epochs * steps_per_epoch`."""
    if train_config.num_steps > 0:
        return int(train_config.num_steps)
    return int(train_config.num_epochs * train_config.steps_per_epoch)


def learning_rate_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
    """`lr_schedule` "step": `learning_rate * lr_decay_factor ** (step // (lr_decay_epochs *
    steps_per_epoch))`, independent of `num_steps`, so a capped or resumed run follows the same
    schedule. "cosine": from `learning_rate` down to 0 over the run's `total_steps`, for short runs
    of a fixed length (equal-budget comparisons)."""
    kind = train_config.get("lr_schedule", "step")
    if kind == "cosine":
        return optax.cosine_decay_schedule(train_config.learning_rate, total_steps(train_config))
    if kind != "step":
        raise ValueError(f"config.train.lr_schedule={kind!r}; choose 'step' or 'cosine'")
    return optax.exponential_decay(
        init_value=train_config.learning_rate,
        transition_steps=int(train_config.lr_decay_epochs * train_config.steps_per_epoch),
        decay_rate=train_config.lr_decay_factor,
        staircase=True,
    )


class Optimizer(NamedTuple):
    """The optax transformation and the learning-rate schedule it follows, built together so the
    train step reports the rate the optimizer applies."""

    tx: optax.GradientTransformation
    schedule: optax.Schedule


def create_optimizer(train_config: ml_collections.ConfigDict) -> Optimizer:
    """Adam on `learning_rate_schedule`, after optional global-norm gradient clipping; with that
    schedule."""
    schedule = learning_rate_schedule(train_config)
    tx = optax.adam(schedule, b1=train_config.adam_b1, b2=train_config.adam_b2,
                    eps=train_config.adam_eps)
    if train_config.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), tx)
    return Optimizer(tx, schedule)


def create_train_state(params: PyTree, tx: optax.GradientTransformation,
                       ema_decay: float) -> TrainState:
    """A step-0 state for `params` (float32), with an EMA copy when `ema_decay` > 0."""
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    ema = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      ema_params=ema)
