"""Saving and loading a model's variables (`{'params': ...}`) as a self-describing checkpoint.

A params checkpoint is a directory with
  - `params/`     an orbax (StandardCheckpointer) checkpoint of the variables tree, and
  - `model.json`  the format version, the `config.model` section that built the model, and a
                  content hash of every array (`checkpoints.checksums`).

Loading checks the recorded model config and the tree's structure and shapes against the
config it is asked to load into, so a checkpoint of another model, scale or width fails with
one clear line instead of a shape error deep inside `model.apply`; it then checks every restored
array against its recorded hash, so a damaged file fails with one line naming the array.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mspan_jax.checkpoints import checksums
from mspan_jax.config_base import model_task, task_kind
from mspan_jax.errors import UserError, first_line
from mspan_jax.files import check_output_dir
from mspan_jax.models.registry import complete_record
from mspan_jax.models.variables import expected_variables, tree_mismatch
from mspan_jax.storage import absolute, remove_tree

FORMAT_NAME = "mspan_jax.params"
FORMAT_VERSION = 2  # 2: model.json records array checksums
READABLE_VERSIONS = (1, FORMAT_VERSION)  # 1: before checksums, loaded unverified with a warning
METADATA_FILE = "model.json"
PARAMS_SUBDIR = "params"
# Keys of config.model that change neither the parameter tree nor the function of the params: the
# compute dtype, and how the params started (`init`).
NON_ARCHITECTURE_KEYS = frozenset({"dtype", "init"})


class CheckpointError(UserError, ValueError):
    """A checkpoint directory is missing, unreadable, or does not match the model config."""


def model_config_dict(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready plain dict of a `config.model` section (ConfigDict or dict)."""
    raw = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    return json.loads(json.dumps(raw, default=lambda v: list(v) if isinstance(v, tuple) else str(v)))


def _describe(cfg: Mapping[str, Any]) -> str:
    return f"{cfg.get('name')} x{cfg.get('scale')}"


def check_writable(directory: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raises CheckpointError unless `save_params(directory, ..., overwrite=overwrite)` may write
    there; scripts call it before long work so that they fail early."""
    target = absolute(directory)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target}: exists and is not a directory; choose another output path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise CheckpointError(f"{target}: already exists and is not empty; remove it or choose another "
                              "output path")
    check_output_dir(target, "--out")


def save_params(
    directory: str | os.PathLike,
    variables: Mapping[str, Any],
    model_config: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> None:
    """Writes `variables` and the model config to `directory`, atomically.

    Everything is written into a temporary sibling directory that is renamed into place, so a
    failure never leaves a partial checkpoint. An existing non-empty `directory` is refused
    unless `overwrite=True`.
    """
    target = absolute(directory)
    if "params" not in variables:
        raise CheckpointError(f"{target}: variables must be a {{'params': ...}} tree; got keys "
                              f"{sorted(variables)}")
    check_writable(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tree = jax.tree_util.tree_map(jnp.asarray, dict(variables))
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp / PARAMS_SUBDIR, tree)
        metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                    "model": model_config_dict(model_config), "checksums": checksums.record(tree)}
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            tmp.rename(target)
            remove_tree(old)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            remove_tree(tmp)


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The `model.json` of a params checkpoint; CheckpointError when it is not one."""
    path = absolute(directory)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: is a file, not a checkpoint directory")
    meta_file = path / METADATA_FILE
    if not meta_file.is_file() or not (path / PARAMS_SUBDIR).is_dir():
        raise CheckpointError(f"{path}: not a params checkpoint (needs {METADATA_FILE} and "
                              f"{PARAMS_SUBDIR}/); make one with save_params or "
                              "scripts/convert_torch_weights.py")
    try:
        metadata = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_file}: unreadable metadata ({e})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{meta_file}: not a {FORMAT_NAME} metadata file")
    if metadata.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{meta_file}: format_version {metadata.get('format_version')!r} is not "
                              f"supported (this version reads {list(READABLE_VERSIONS)}); convert or "
                              "save the checkpoint again")
    if not isinstance(metadata.get("model"), dict):
        raise CheckpointError(f"{meta_file}: has no 'model' section")
    return metadata


def check_model_config(directory: str | os.PathLike, saved: Mapping[str, Any],
                       model_config: Mapping[str, Any]) -> None:
    """Raises CheckpointError when the saved `config.model` differs from `model_config` in any key
    that shapes the parameters or what they compute (everything but NON_ARCHITECTURE_KEYS); keys
    the record predates mean what they meant then (`registry.complete_record`)."""
    want = model_config_dict(model_config)
    saved = complete_record(saved)
    tasks = [task_kind(model_task(cfg)) for cfg in (saved, want)]
    if tasks[0] != tasks[1]:  # e.g. an SR x4 checkpoint given to a denoising config
        raise CheckpointError(f"{directory}: checkpoint is a {tasks[0]} model ({_describe(saved)}) "
                              f"but config.model is {tasks[1]} ({_describe(want)}); pass the --config "
                              "it was trained with")
    if (saved.get("name"), saved.get("scale")) != (want.get("name"), want.get("scale")):
        raise CheckpointError(f"{directory}: checkpoint is {_describe(saved)} but config.model is "
                              f"{_describe(want)}; pass the matching --config")
    keys = sorted((set(saved) | set(want)) - NON_ARCHITECTURE_KEYS)
    diffs = [f"{k}={saved.get(k)!r} (config: {want.get(k)!r})"
             for k in keys if saved.get(k) != want.get(k)]
    if diffs:
        raise CheckpointError(f"{directory}: checkpoint's {_describe(saved)} has {', '.join(diffs)}; "
                              "pass the matching --config")


def load_params(directory: str | os.PathLike, model_config: Mapping[str, Any]) -> dict[str, Any]:
    """Variables `{'params': ...}` (jax arrays) of a params checkpoint made for `model_config`.

    Raises CheckpointError (one line naming the directory) when the directory is missing, is
    not a checkpoint, or holds another model/scale/width or a tree of other paths/shapes. (A
    training workdir is read by `checkpoints.resolve.load_weights`, which dispatches to this.)
    """
    path = absolute(directory)
    metadata = read_metadata(path)
    check_model_config(path, metadata["model"], model_config)
    expected = expected_variables(model_config)
    params_dir = path / PARAMS_SUBDIR
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            found = checkpointer.metadata(params_dir)  # step metadata (orbax 0.12), or the tree's
            stored = getattr(found, "item_metadata", found).tree  # garbage: an error, "unreadable"
            mismatch = tree_mismatch(expected, stored)
            if mismatch:
                raise CheckpointError(f"{path}: parameters do not fit config.model "
                                      f"{_describe(model_config_dict(model_config))}: {mismatch}")
            # On this host's first device, whatever device saved it (a CPU-made checkpoint on a GPU
            # host; the stored sharding names a device this host may not have).
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            restored = checkpointer.restore(params_dir, jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), expected))
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax raises many types for a damaged checkpoint
        raise CheckpointError(f"{path}: unreadable params checkpoint ({first_line(e)})") from None
    try:
        checksums.verify(restored, metadata.get("checksums"), path,
                         legacy=metadata["format_version"] == 1)
    except checksums.ChecksumError as e:
        raise CheckpointError(str(e)) from None
    return jax.tree_util.tree_map(jnp.asarray, restored)
