"""Orbax checkpoints of a training WORKDIR.

WORKDIR/checkpoints/<step>/  the newest `keep_checkpoints` full TrainStates (resume), periodic;
WORKDIR/best/<step>/         the params with the best validation PSNR (kept apart, one).
Each step also holds `meta` (JSON): the model config it was trained for, so a workdir cannot be
resumed or evaluated with another model or scale (params_io.check_model_config), and a content hash of
every array (`mspan_jax.checksums`), checked on every restore: resuming skips a damaged step (moved to
WORKDIR/damaged/) for the newest intact one. Paths may be local or gs://.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from mspan_jax import checksums
from mspan_jax.cli import first_line
from mspan_jax.params_io import CheckpointError, check_model_config, model_config_dict
from mspan_jax.train.state import PyTree, TrainState

RESUME_DIR = "checkpoints"
BEST_DIR = "best"
DAMAGED_DIR = "damaged"  # resumable steps that failed their checksums, moved out of RESUME_DIR


def _manager(directory: epath.Path, *, keep: int, async_save: bool, best: bool,
             create: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=create,
        enable_async_checkpointing=async_save,
        best_fn=(lambda metrics: metrics["psnr"]) if best else None,
        best_mode="max",
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def _single_device_target(metadata: PyTree) -> PyTree:
    """Abstract arrays on this process's first device, from a saved tree's metadata."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), metadata)


def _verified(restored: Mapping[str, Any], where: epath.Path) -> PyTree:
    """`restored['state']` after checking it against `restored['meta']`'s checksums."""
    try:
        meta = restored["meta"]
        # A step saved before checksums existed has none at all: loaded unverified, with a warning.
        checksums.verify(restored["state"], meta.get("checksums"), where,
                         legacy="checksums" not in meta)
    except checksums.ChecksumError as e:
        raise CheckpointError(str(e)) from None
    return restored["state"]


def _restore_host_tree(manager: ocp.CheckpointManager, step: int) -> PyTree:
    """The verified 'state' item of `step` as saved (dicts), on this process's first device; closes
    `manager`."""
    where = manager.directory / str(step)
    try:
        tree = manager.item_metadata(step)["state"]
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_single_device_target(tree)), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax raises many types for a damaged step
        raise CheckpointError(f"{where}: unreadable checkpoint ({type(e).__name__}: "
                              f"{first_line(e)})") from None
    finally:
        manager.close()
    return _verified(restored, where)


class TrainCheckpoints:
    """The resumable and best checkpoints of one training workdir (call on every process)."""

    def __init__(self, workdir: str | epath.Path, train_config: ml_collections.ConfigDict):
        self.workdir = epath.Path(workdir)
        self.resume = _manager(self.workdir / RESUME_DIR, keep=train_config.keep_checkpoints,
                               async_save=train_config.async_checkpointing, best=False)
        self.best = _manager(self.workdir / BEST_DIR, keep=1,
                             async_save=train_config.async_checkpointing, best=True)

    def latest_step(self) -> int | None:
        return self.resume.latest_step()

    def check_model(self, model_config: Mapping[str, Any]) -> None:
        """Fails with one line if the workdir's checkpoints are of another model or scale (a step whose
        meta is unreadable is left to `restore`, which skips damaged steps)."""
        for manager in (self.resume, self.best):
            step = manager.latest_step()
            if step is not None:
                try:
                    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                    saved_model = meta["meta"]["model"]
                except Exception:  # noqa: BLE001 - damaged: restore() says so and falls back
                    continue
                check_model_config(manager.directory, saved_model, model_config)

    def save(self, state: TrainState, model_config: Mapping[str, Any]) -> None:
        """Saves the full state at its step (asynchronously when configured)."""
        step = int(jax.device_get(state.step))
        meta = {"model": model_config_dict(model_config), "step": step,
                "checksums": checksums.record(state)}
        self.resume.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

    def save_best(self, step: int, params: PyTree, psnr: float, model_config: Mapping[str, Any]) -> None:
        """Offers `params` validated at `step`; only the one with the highest `psnr` is kept."""
        meta = {"model": model_config_dict(model_config), "step": step, "psnr": psnr,
                "checksums": checksums.record({"params": params})}
        if step in self.best.all_steps():  # validated again after resuming from an earlier step
            self.best.delete(step)
        self.best.save(step, force=True, metrics={"psnr": float(psnr)}, args=ocp.args.Composite(
            state=ocp.args.StandardSave({"params": params}), meta=ocp.args.JsonSave(meta)))

    def best_psnr(self) -> float | None:
        step = self.best.best_step()
        return None if step is None else float(self.best.metrics(step)["psnr"])

    def restore(self, abstract_state: TrainState,
                log: Callable[[str], None] = print) -> tuple[int, TrainState] | None:
        """(step, state) of the newest intact full state, placed as `abstract_state`'s shardings say;
        None when there is no checkpoint.

        A step that fails its checksums or cannot be read is reported through `log`, moved to
        WORKDIR/damaged/<step> (so that training can save that step again) and skipped; when no step
        is intact, raises CheckpointError instead of training from garbage or from scratch.
        """
        steps = sorted(self.resume.all_steps(), reverse=True)
        for step in steps:
            where = self.workdir / RESUME_DIR / str(step)
            try:
                restored = self.resume.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                return step, _verified(restored, where)
            except Exception as e:  # noqa: BLE001 - any failure to read a step means "damaged"
                reason = str(e) if isinstance(e, CheckpointError) else (
                    f"{where}: unreadable ({type(e).__name__}: {first_line(e)})")
            log(f"damaged checkpoint: {reason}; moved to {self.workdir / DAMAGED_DIR / str(step)}, "
                "trying the one before it")
            self._move_damaged(step)
        if steps:
            raise CheckpointError(f"{self.workdir / RESUME_DIR}: no intact checkpoint (steps "
                                  f"{sorted(steps)} were damaged and moved to "
                                  f"{self.workdir / DAMAGED_DIR}); restore them from a good copy or "
                                  "start a new workdir")
        return None

    def _move_damaged(self, step: int) -> None:
        """Moves checkpoints/<step> to damaged/<step> (process 0) and re-reads the step list."""
        if jax.process_index() == 0:
            target = self.workdir / DAMAGED_DIR / str(step)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.rmtree()
            (self.workdir / RESUME_DIR / str(step)).rename(target)
        ocp.multihost.sync_global_processes(f"mspan_jax:damaged_checkpoint_{step}")
        self.resume.reload()

    def wait(self) -> None:
        """Blocks until background saves are on disk."""
        self.resume.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.resume.close()
        self.best.close()


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
        manager = _manager(workdir / sub, keep=1, async_save=False, best=best, create=False)
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


def load_workdir_params(workdir: str | epath.Path, model_config: Mapping[str, Any]) -> PyTree:
    """The params of a training workdir: the best-PSNR ones, else the latest (EMA when kept).

    Raises FileNotFoundError when it has none, params_io.CheckpointError for another model/scale
    or a damaged checkpoint (one line naming the step directory and the array).
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
    manager = _manager(epath.Path(workdir) / RESUME_DIR, keep=1, async_save=False, best=False,
                       create=False)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir} holds no resumable checkpoint in {RESUME_DIR}/")
    return _restore_host_tree(manager, step)
