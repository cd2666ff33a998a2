"""A --checkpoint path -> config, model and variables, for the scripts, `Upscaler` and warm starts.

The path is either kind of checkpoint:
  - a params checkpoint (`checkpoints.params`: what convert_torch_weights.py and save_params write), or
  - a training workdir (`checkpoints.workdir`: WORKDIR/best, the highest validation PSNR, else the
    latest WORKDIR/checkpoints step, its EMA params when kept).

Both record the `config.model` they were made for, so `load_model` (or `checkpoint_config`) gives a
script the model without a --config; with one, the checkpoint is checked against it.

Two more things are taken where a path is (`load_model`):
  - the name of shipped weights (`mspan_x4`: the repository's weights/mspan_x4), from any working
    directory (`resolve_checkpoint`, `shipped_models`);
  - a PyTorch weight file (.pth, .pt, .safetensors) of a model the converter knows, with the model
    named (`model=("imdn", 4)`, the scripts' --model/--scale) or a config: converted in memory.
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
    load_params,
    read_metadata,
)
from mspan_jax.config_base import model_config, model_task, restoration_config, sr_config
from mspan_jax.models.registry import complete_record, get_model
from mspan_jax.models.variables import expected_variables, tree_mismatch
from mspan_jax.storage import absolute, as_path, is_remote

# The repository's shipped weights (weights/<name>/model.json + params/). A pip-installed,
# non-editable package has no repository around it: names then fail with a line saying so.
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
TORCH_SUFFIXES = (".pth", ".pt", ".safetensors")


def shipped_models(weights_dir: Path | None = None) -> dict[str, Path]:
    """{name: directory} of the shipped params checkpoints (weights/mspan_x4, ...), sorted by name;
    empty when the package runs outside its repository."""
    weights_dir = WEIGHTS_DIR if weights_dir is None else weights_dir
    if not weights_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(weights_dir.iterdir()) if (p / METADATA_FILE).is_file()}


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """The checkpoint a --checkpoint value names: an existing path as given, else the shipped
    weights of that name (`mspan_x4`), else CheckpointError (one line) listing the names."""
    if is_remote(spec):
        return as_path(spec)
    path = Path(spec)
    if path.exists():
        return path
    text = str(spec)
    if "/" in text or os.sep in text or path.suffix:
        return path  # a path that does not exist: the loaders name it
    shipped = shipped_models()
    if text in shipped:
        return shipped[text]
    if not WEIGHTS_DIR.is_dir():
        raise CheckpointError(f"{text}: no such checkpoint, and this install has no shipped weights "
                              f"({WEIGHTS_DIR} is missing: the package is not run from its repository); "
                              "give the path of a clone's weights/<name> folder")
    raise CheckpointError(f"{text}: no such checkpoint or shipped model; shipped: "
                          f"{', '.join(shipped) or 'none'} (python scripts/upscale.py --list-models)")


def is_torch_weights(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in TORCH_SUFFIXES


def load_weights(path: str | os.PathLike, model_config: Mapping[str, Any]) -> dict[str, Any]:
    """Variables `{'params': ...}` (jax arrays) of a params checkpoint or a training workdir made for
    `model_config`. Raises CheckpointError (one line naming the directory) otherwise."""
    path = absolute(path)
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
    step `load_weights` reads) was made for, keys it predates filled in as it means them
    (`registry.complete_record`). CheckpointError (one line) when there is none."""
    path = absolute(path)
    if _is_params_checkpoint(path):
        return complete_record(read_metadata(path)["model"])
    try:
        return complete_record(workdir.workdir_model_config(path))
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
        check_model_config(absolute(path), recorded, config.model)
        return config
    name, scale = recorded.get("name"), recorded.get("scale")
    if not isinstance(name, str) or not isinstance(scale, int):
        raise CheckpointError(f"{absolute(path)}: recorded config.model has no name/scale; "
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


def load_model(path: str | os.PathLike, config: ml_collections.ConfigDict | None = None, *,
               model: tuple[str, int] | None = None) -> LoadedModel:
    """checkpoint -> config -> model -> weights: `checkpoint_config(path, config)`, its model and the
    checkpoint's variables for it (CheckpointError, one line, when they do not fit). `path` may be
    a shipped model's name (`resolve_checkpoint`) or a PyTorch weight file (`load_torch_model`);
    `model` (name, scale) is for the latter, which records no model."""
    path = resolve_checkpoint(path)
    if is_torch_weights(path):
        return load_torch_model(path, config, model)
    if model is not None:
        raise CheckpointError(f"{path}: --model/--scale are for PyTorch weight files (.pth, .pt, "
                              ".safetensors); a checkpoint records its model")
    config = checkpoint_config(path, config)
    return LoadedModel(config, get_model(config.model), load_weights(path, config.model))


def load_torch_model(path: str | os.PathLike, config: ml_collections.ConfigDict | None = None,
                     model: tuple[str, int] | None = None) -> LoadedModel:
    """A PyTorch weight file of a known model (e.g. the official IMDN_x4.pth), converted in memory
    (`convert.convert_state_dict`, as convert_torch_weights.py does) for `config`'s model or the
    default model of `model` = (name, scale)."""
    from mspan_jax.convert import convert_state_dict, read_weights

    if config is None:
        if model is None:
            raise CheckpointError(f"{path}: a PyTorch weight file records no model; pass --model and "
                                  "--scale (e.g. --model imdn --scale 4) or --config")
        name, scale = model
        cfg = model_config(name, int(scale))
        config = (restoration_config(int(cfg.get("in_channels", 3))) if int(scale) == 1
                  else sr_config(model=name, scale=int(scale)))
        config.model = cfg
    elif model is not None and (config.model.name, int(config.model.scale)) != tuple(model):
        raise CheckpointError(f"--model {model[0]} --scale {model[1]} disagrees with the config's "
                              f"{config.model.name} x{config.model.scale}; drop one of them")
    state_dict, _, _ = read_weights(path)
    variables = convert_state_dict(config.model, state_dict)
    return LoadedModel(config, get_model(config.model), variables)
