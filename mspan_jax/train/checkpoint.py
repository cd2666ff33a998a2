"""The resumable TrainState checkpoints of a training WORKDIR (layout: `checkpoints.workdir`).

`TrainCheckpoints` saves the full TrainState every `checkpoint_every_steps` and the best-PSNR params,
each step with its `meta` (the model config, so a workdir cannot be resumed with another model or
scale, the `config.train` keys that shape the state, and the checksums of every array), and resumes
from the newest intact step: a damaged one (a failed checksum, an unreadable file) is moved to
WORKDIR/damaged/ and skipped; a step whose state has another structure than this run's config makes
(e.g. the EMA turned on) is a config change, not damage: it stops the run in one line, moving
nothing. Reading a workdir's weights without the optimizer (evaluation, export, warm starts) is
`checkpoints.workdir`'s, which this builds on.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from mspan_jax.checkpoints import checksums
from mspan_jax.checkpoints.params import CheckpointError, check_model_config, model_config_dict
from mspan_jax.checkpoints.workdir import (
    BEST_DIR,
    DAMAGED_DIR,
    RESUME_DIR,
    open_manager,
    verified_state,
)
from mspan_jax.errors import DiskFullError, first_line, is_disk_full
from mspan_jax.storage import StorageError, is_remote
from mspan_jax.train.state import PyTree, TrainState

COMMIT_FILE = "commit_success.txt"  # orbax's mark of a finished step on a bucket

# The config.train keys that decide the TrainState's tree structure (not only its values): the EMA
# copy exists when ema_decay > 0, the optax state has a clipping entry when grad_clip_norm > 0.
STATE_KEYS = {"ema_decay": "ema_params", "grad_clip_norm": "opt_state"}


class StateMismatchError(CheckpointError):
    """A saved step holds a state of another structure than this run's config makes."""


def _paths(tree: Any) -> set[str]:
    """The leaf paths of a state (a TrainState or orbax's saved metadata of one, as dicts), in one
    spelling: 'opt_state/1/0/mu/conv/kernel'."""
    def name(key: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    return {"/".join(name(k) for k in path) for path, leaf in leaves if leaf is not None}


def _committed(step_dir: epath.Path) -> bool:
    """Whether orbax finished `step_dir`: locally it renames a temporary folder to the step's name
    when done; on a bucket it writes into the step's folder and adds `commit_success.txt` last."""
    return not is_remote(step_dir) or (step_dir / COMMIT_FILE).exists()


def saved_steps(workdir: str | epath.Path) -> list[int]:
    """The committed resumable steps in `workdir` (not orbax's unfinished ones), sorted."""
    resume = epath.Path(workdir) / RESUME_DIR
    if not resume.is_dir():
        return []
    return sorted(int(p.name) for p in resume.iterdir() if p.name.isdigit() and _committed(p))


class _OrbaxBackgroundErrors(logging.Filter):
    """Drops orbax's ERROR records that carry an exception (a background save that failed logs its
    traceback from each of its threads); the same failure is raised in the main thread by the next
    save or wait, where `TrainCheckpoints` reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.exc_info
                    and f"{os.sep}orbax{os.sep}" in record.pathname)


def _closed_loop_callback(unraisable: Any) -> bool:
    """Whether an unraisable exception is tensorstore's callback (from C, no Python caller) into
    an asyncio loop that is closed already."""
    tb = unraisable.exc_traceback
    return (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
            and tb is not None and tb.tb_frame.f_code.co_name == "call_soon_threadsafe")


def _quiet_closed_loop() -> None:
    """When a save to a bucket fails, orbax closes its asyncio loop and tensorstore then completes
    the save's abandoned writes, calling back into that loop: each callback reports a 'RuntimeError:
    Event loop is closed' traceback as unraisable. Only those are dropped (installed once)."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_callbacks", False):
        return

    def hook(unraisable: Any) -> None:
        if not _closed_loop_callback(unraisable):
            previous(unraisable)

    hook.drops_closed_loop_callbacks = True
    sys.unraisablehook = hook


class TrainCheckpoints:
    """The resumable and best checkpoints of one training workdir (call on every process)."""

    def __init__(self, workdir: str | epath.Path, train_config: ml_collections.ConfigDict):
        self.workdir = epath.Path(workdir)
        self._state_config = {key: float(train_config[key]) for key in STATE_KEYS}
        self.resume = open_manager(self.workdir / RESUME_DIR, keep=train_config.keep_checkpoints,
                                   async_save=train_config.async_checkpointing, best=False)
        self.best = open_manager(self.workdir / BEST_DIR, keep=1,
                                 async_save=train_config.async_checkpointing, best=True)
        self._full = False  # a save ran out of space or storage failed (reported once)
        if is_remote(self.workdir):  # a failed save is reported in one line (_storage_failed)
            logging.getLogger("absl").addFilter(_OrbaxBackgroundErrors())
            _quiet_closed_loop()

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

    def _disk_full(self, error: BaseException) -> DiskFullError:
        """The one-line error for a save that ran out of space (orbax writes a step to a temporary
        directory and renames it when complete, so the earlier steps are intact)."""
        self._full = True
        return DiskFullError(f"no space left on device while saving a checkpoint under {self.workdir}; "
                             f"{self._kept()}; free space and run the same command again to resume")

    def _kept(self) -> str:
        """What stays of the run's checkpoints: the newest committed step, if any can be listed."""
        try:
            steps = saved_steps(self.workdir)
        except Exception:  # noqa: BLE001 - the storage that just failed may fail the listing too
            return "the checkpoints saved before are left as they were"
        return (f"the checkpoint of step {steps[-1]} is intact" if steps else
                "no checkpoint had been saved yet")

    def _storage_failed(self, error: BaseException) -> StorageError:
        """The one-line error for a save to a bucket that failed after the storage clients' own
        retries (orbax commits a step last, so an unfinished one is never resumed from)."""
        self._full = True
        return StorageError(f"--workdir {self.workdir}: storage failed while saving a checkpoint "
                            f"({first_line(error, typed=True, limit=200)}); {self._kept()}; check the "
                            "bucket's permissions and quota, then run the same command again to resume")

    def _guarded(self, call: Callable[[], Any]) -> Any:
        """Runs an orbax call, turning a disk-full failure (raised here or by an earlier background
        save), or any failure of a save to a bucket, into one line (DiskFullError, StorageError);
        after one, later failures of the same writes are dropped."""
        try:
            return call()
        except Exception as e:
            if self._full:
                return None
            if is_disk_full(e):
                raise self._disk_full(e) from None
            if is_remote(self.workdir) and not isinstance(e, CheckpointError):
                raise self._storage_failed(e) from None
            raise

    def save(self, state: TrainState, model_config: Mapping[str, Any]) -> None:
        """Saves the full state at its step (asynchronously when configured)."""
        step = int(jax.device_get(state.step))
        meta = {"model": model_config_dict(model_config), "step": step,
                "train": self._state_config, "checksums": checksums.record(state)}
        self._guarded(lambda: self.resume.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))))

    def save_best(self, step: int, params: PyTree, psnr: float, model_config: Mapping[str, Any]) -> None:
        """Offers `params` validated at `step`; only the one with the highest `psnr` is kept."""
        meta = {"model": model_config_dict(model_config), "step": step, "psnr": psnr,
                "checksums": checksums.record({"params": params})}
        if step in self.best.all_steps():  # validated again after resuming from an earlier step
            self.best.delete(step)
        self._guarded(lambda: self.best.save(
            step, force=True, metrics={"psnr": float(psnr)}, args=ocp.args.Composite(
                state=ocp.args.StandardSave({"params": params}), meta=ocp.args.JsonSave(meta))))

    def best_psnr(self) -> float | None:
        step = self.best.best_step()
        return None if step is None else float(self.best.metrics(step)["psnr"])

    def restore(self, abstract_state: TrainState,
                log: Callable[[str], None] = print) -> tuple[int, TrainState] | None:
        """(step, state) of the newest intact full state, placed as `abstract_state`'s shardings say;
        None when there is no checkpoint.

        A step that fails its checksums or cannot be read is reported through `log`, moved to
        WORKDIR/damaged/<step> (so that training can save that step again) and skipped; when no step
        is intact, raises CheckpointError instead of training from garbage or from scratch. A step
        saved with another state structure raises StateMismatchError and moves nothing.
        """
        steps = sorted(self.resume.all_steps(), reverse=True)
        for step in steps:
            where = self.workdir / RESUME_DIR / str(step)
            self._check_structure(step, abstract_state)
            try:
                restored = self.resume.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                return step, verified_state(restored, where)
            except Exception as e:  # noqa: BLE001 - any failure to read a step means "damaged"
                reason = str(e) if isinstance(e, CheckpointError) else (
                    f"{where}: unreadable ({first_line(e, typed=True)})")
            log(f"damaged checkpoint: {reason}; moved to {self.workdir / DAMAGED_DIR / str(step)}, "
                "trying the one before it")
            self._move_damaged(step)
        if steps:
            raise CheckpointError(f"{self.workdir / RESUME_DIR}: no intact checkpoint (steps "
                                  f"{sorted(steps)} were damaged and moved to "
                                  f"{self.workdir / DAMAGED_DIR}); restore them from a good copy or "
                                  "start a new workdir")
        return None

    def _check_structure(self, step: int, abstract_state: TrainState) -> None:
        """Raises StateMismatchError when `step`'s saved tree (its readable metadata) has other leaves
        than `abstract_state`, naming the config keys that made the difference; a step whose
        metadata cannot be read is left to `restore` (damage)."""
        try:
            saved = _paths(self.resume.item_metadata(step)["state"])
            meta = self.resume.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
        except Exception:  # noqa: BLE001 - unreadable: restore() reports it as damage
            return
        wanted = _paths(abstract_state)
        if not saved or saved == wanted:
            return
        differ = {p.split("/")[0] for p in saved ^ wanted}
        was = meta.get("train", {}) if isinstance(meta, Mapping) else {}
        keys = [key for key, part in STATE_KEYS.items() if part in differ]
        if not keys:
            raise StateMismatchError(
                f"{self.workdir / RESUME_DIR / str(step)}: the saved state differs from this run's in "
                f"{sorted(differ)}; resume with the config it was trained with, or start a new workdir "
                f"from its params with --config.train.warm_start={self.workdir}")
        said = []
        for key in keys:
            now = self._state_config[key]
            old = was.get(key)
            if old is None:  # saved before the keys were recorded: what the structure says
                old = "0" if now > 0 else "> 0"
            said.append(f"train.{key}={old} when saved, {now:g} now")
        back = " ".join(f"--config.train.{key}={was[key]:g}" for key in keys if key in was)
        how = f"resume with {back}" if back else "resume with the values it was saved with"
        raise StateMismatchError(
            f"{self.workdir / RESUME_DIR / str(step)}: saved with another training state "
            f"({'; '.join(said)}); {how}, or start a new workdir from its params with "
            f"--config.train.warm_start={self.workdir} (nothing was moved)")

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
        self._guarded(self.resume.wait_until_finished)
        self._guarded(self.best.wait_until_finished)

    def close(self) -> None:
        self._guarded(self.resume.close)
        self._guarded(self.best.close)
