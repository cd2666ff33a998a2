"""The orbax checkpoints of a training WORKDIR: their layout, and reading them without the optimizer.

WORKDIR/checkpoints/<step>/  the newest `keep_checkpoints` full TrainStates (resume), periodic;
WORKDIR/best/<step>/         the params with the best validation PSNR (kept apart, one);
WORKDIR/damaged/<step>/      resumable steps that failed their checksums (moved there by resuming).
Each step also holds `meta` (JSON): the model config it was trained for (`params.check_model_config`
refuses another model or scale) and a content hash of every array (`checksums`), checked on every
restore. Paths may be local or gs://.

Evaluation, export and warm starts read a workdir's weights here (`load_workdir_params`), as plain
trees, so that they need neither optax nor `mspan_jax.train`; train/checkpoint.py writes and resumes
the full TrainState with the same managers (`open_manager`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from mspan_jax.checkpoints import checksums
from mspan_jax.checkpoints.params import CheckpointError, check_model_config
from mspan_jax.errors import first_line
from mspan_jax.storage import absolute

RESUME_DIR = "checkpoints"
BEST_DIR = "best"
DAMAGED_DIR = "damaged"  # resumable steps that failed their checksums, moved out of RESUME_DIR


def open_manager(directory: epath.Path, *, keep: int, async_save: bool, best: bool,
                 create: bool = True) -> ocp.CheckpointManager:
    """The orbax manager of one checkpoint folder (items 'state' and 'meta'); `best` keeps the step
    with the highest 'psnr' metric instead of the newest. A relative local folder is made absolute
    (orbax refuses to save to one)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=create,
        enable_async_checkpointing=async_save,
        best_fn=(lambda metrics: metrics["psnr"]) if best else None,
        best_mode="max",
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(absolute(directory), options=options, item_handlers=handlers)


def _single_device_target(metadata: Any) -> Any:
    """Abstract arrays on this process's first device, from a saved tree's metadata."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), metadata)


def verified_state(restored: Mapping[str, Any], where: epath.Path) -> Any:
    """`restored['state']` after checking it against `restored['meta']`'s checksums (CheckpointError,
    one line naming `where` and the array, on a mismatch)."""
    try:
        meta = restored["meta"]
        # A step saved before checksums existed has none at all: loaded unverified, with a warning.
        checksums.verify(restored["state"], meta.get("checksums"), where,
                         legacy="checksums" not in meta)
    except checksums.ChecksumError as e:
        raise CheckpointError(str(e)) from None
    return restored["state"]


def _restore_host_tree(manager: ocp.CheckpointManager, step: int) -> Any:
    """The verified 'state' item of `step` as saved (dicts), on this process's first device; closes
    `manager`."""
    where = manager.directory / str(step)
    try:
        tree = manager.item_metadata(step)["state"]
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_single_device_target(tree)), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax raises many types for a damaged step
        raise CheckpointError(f"{where}: unreadable checkpoint ({first_line(e, typed=True)})") from None
    finally:
        manager.close()
    return verified_state(restored, where)


def is_train_workdir(path: str | epath.Path) -> bool:
    """True when `path` holds a training run's checkpoints (best/ or checkpoints/)."""
    path = epath.Path(path)
    return (path / BEST_DIR).is_dir() or (path / RESUME_DIR).is_dir()


def _weights_step(workdir: epath.Path) -> tuple[str, ocp.CheckpointManager, int, dict[str, Any]]:
    """(sub dir, open manager, step, meta) of the step whose params a workdir's weights are: the
    best-PSNR one, else the latest; FileNotFoundError when there is none."""
    for sub, best in ((BEST_DIR, True), (RESUME_DIR, False)):
        if not (workdir / sub).is_dir():
            continue
        manager = open_manager(workdir / sub, keep=1, async_save=False, best=best, create=False)
        step = manager.best_step() if best else manager.latest_step()
        if step is None:
            manager.close()
            continue
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return sub, manager, step, meta
    raise FileNotFoundError(f"{workdir} holds no training checkpoint ({BEST_DIR}/ or {RESUME_DIR}/)")


def workdir_model_config(workdir: str | epath.Path) -> dict[str, Any]:
    """The `config.model` recorded with the params `load_workdir_params` returns (FileNotFoundError
    when the workdir has none)."""
    _, manager, _, meta = _weights_step(epath.Path(workdir))
    manager.close()
    return meta["model"]


def load_workdir_params(workdir: str | epath.Path, model_config: Mapping[str, Any]) -> Any:
    """The params of a training workdir: the best-PSNR ones, else the latest (EMA when kept).

    Raises FileNotFoundError when it has none, CheckpointError for another model/scale or a damaged
    checkpoint (one line naming the step directory and the array).
    """
    workdir = epath.Path(workdir)
    sub, manager, step, meta = _weights_step(workdir)
    try:
        check_model_config(workdir / sub, meta["model"], model_config)
    except CheckpointError:
        manager.close()
        raise
    restored = _restore_host_tree(manager, step)
    # A full TrainState (resume dir) gives what validation would use: the EMA when kept.
    return restored.get("ema_params") or restored["params"]


def load_latest_state(workdir: str | epath.Path) -> dict[str, Any]:
    """The newest resumable TrainState of a workdir as a plain tree of arrays on this process's first
    device ({'step', 'params', 'opt_state', 'ema_params'}), checked against its checksums, for
    inspection and tests."""
    manager = open_manager(epath.Path(workdir) / RESUME_DIR, keep=1, async_save=False, best=False,
                           create=False)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir} holds no resumable checkpoint in {RESUME_DIR}/")
    return _restore_host_tree(manager, step)
