"""A --checkpoint path -> config, model and variables, for the scripts, `Upscaler` and warm starts.

The path is either kind of checkpoint:
  - a params checkpoint (`checkpoints.params`: what convert_torch_weights.py and save_params write), or
  - a training workdir (`checkpoints.workdir`: WORKDIR/best, the highest validation PSNR, else the
    latest WORKDIR/checkpoints step, its EMA params when kept).

Both record the `config.model` they were made for, so `load_model` (or `checkpoint_config`) gives a
script the model without a --config; with one, the checkpoint is checked against it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mspan_jax.checkpoints import workdir
from mspan_jax.checkpoints.params import (
    METADATA_FILE,
    CheckpointError,
    check_model_config,
    expected_variables,
    load_params,
    read_metadata,
    tree_mismatch,
)
from mspan_jax.config_base import build_model, model_task, restoration_config, sr_config


def load_weights(path: str | os.PathLike, model_config: Mapping[str, Any]) -> dict[str, Any]:
    """Variables `{'params': ...}` (jax arrays) of a params checkpoint or a training workdir made for
    `model_config`. Raises CheckpointError (one line naming the directory) otherwise."""
    path = Path(path).absolute()
    if _is_params_checkpoint(path):
        return load_params(path, model_config)
    try:
        params = workdir.load_workdir_params(path, model_config)
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None
    mismatch = tree_mismatch(expected_variables(model_config), {"params": params})
    if mismatch:
        raise CheckpointError(f"{path}: training checkpoint does not fit config.model: {mismatch}")
    return {"params": jax.tree_util.tree_map(jnp.asarray, params)}


def _is_params_checkpoint(path: Path) -> bool:
    return (path / METADATA_FILE).exists() or not workdir.is_train_workdir(path)


def recorded_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The `config.model` a params checkpoint (its model.json) or a training workdir (the meta of the
    step `load_weights` reads) was made for. CheckpointError (one line) when there is none."""
    path = Path(path).absolute()
    if _is_params_checkpoint(path):
        return read_metadata(path)["model"]
    try:
        return workdir.workdir_model_config(path)
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None


def checkpoint_config(path: str | os.PathLike,
                      config: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
    """The config to run a checkpoint with: `config` (a --config) once its model is checked against
    the checkpoint's (CheckpointError, one line, on a mismatch), else the base config's task, data
    and eval sections (`model_task` of the record: SR's, or restoration's) around the checkpoint's
    recorded `config.model`."""
    recorded = recorded_model_config(path)
    if config is not None:
        check_model_config(Path(path).absolute(), recorded, config.model)
        return config
    name, scale = recorded.get("name"), recorded.get("scale")
    if not isinstance(name, str) or not isinstance(scale, int):
        raise CheckpointError(f"{Path(path).absolute()}: recorded config.model has no name/scale; "
                              "pass --config")
    task = model_task(recorded)
    config = (sr_config(model=name, scale=scale) if task == "sr"
              else restoration_config(int(recorded.get("in_channels", 3)), task))
    config.model = ml_collections.ConfigDict(
        {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})
    return config


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A checkpoint ready to run: the config it runs with, its Flax module and its variables."""

    config: ml_collections.ConfigDict  # checkpoint_config's: the --config, or the recorded model's
    model: nn.Module
    variables: dict[str, Any]  # {'params': ...} as jax arrays

    @property
    def model_config(self) -> ml_collections.ConfigDict:
        return self.config.model


def load_model(path: str | os.PathLike,
               config: ml_collections.ConfigDict | None = None) -> LoadedModel:
    """checkpoint -> config -> model -> weights: `checkpoint_config(path, config)`, its model and the
    checkpoint's variables for it (CheckpointError, one line, when they do not fit)."""
    config = checkpoint_config(path, config)
    return LoadedModel(config, build_model(config.model), load_weights(path, config.model))
