"""A model's variables from either kind of checkpoint, for the scripts and the warm start:

  - a params checkpoint (`params_io`: what convert_torch_weights.py and save_params write), or
  - a training workdir (`train.checkpoint`: WORKDIR/best, the highest validation PSNR, else the
    latest WORKDIR/checkpoints step, its EMA params when kept).

The choice lives here, above both readers, so that `params_io` knows nothing of training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from mspan_jax.params_io import (
    METADATA_FILE,
    CheckpointError,
    expected_variables,
    load_params,
    tree_mismatch,
)
from mspan_jax.train import checkpoint as train_checkpoint


def load_weights(path: str | os.PathLike, model_config: Mapping[str, Any]) -> dict[str, Any]:
    """Variables `{'params': ...}` (jax arrays) of a params checkpoint or a training workdir made for
    `model_config`. Raises CheckpointError (one line naming the directory) otherwise."""
    path = Path(path).absolute()
    if (path / METADATA_FILE).exists() or not train_checkpoint.is_train_workdir(path):
        return load_params(path, model_config)
    try:
        params = train_checkpoint.load_workdir_params(path, model_config)
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None
    mismatch = tree_mismatch(expected_variables(model_config), {"params": params})
    if mismatch:
        raise CheckpointError(f"{path}: training checkpoint does not fit config.model: {mismatch}")
    return {"params": jax.tree_util.tree_map(jnp.asarray, params)}
