"""The training loop: data-parallel steps over a device mesh, periodic checkpoints and validation,
TensorBoard and a console progress line. `train_and_evaluate(config, workdir)` is the whole run;
its pieces: `step.make_train_step`, `warm_start.initial_params`, `validation.Validator`,
`console` (the printed lines), `checkpoint`, `summary` (TensorBoard).

Every process runs the same code (multi-host: after `jax.distributed.initialize()`); each reads
only its own data shard, and only process 0 prints and writes logs, summaries and eval_results.json.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from mspan_jax.config_base import task_of
from mspan_jax.data.images import write_image
from mspan_jax.data.input_pipeline import BatchesInFlight, create_train_iterator
from mspan_jax.errors import ConfigError, first_line
from mspan_jax.eval_suite import baseline_key
from mspan_jax.files import write_json_atomic
from mspan_jax.models.registry import get_model
from mspan_jax.storage import check_bucket
from mspan_jax.train import sharding
from mspan_jax.train.bucket_lease import lock_for
from mspan_jax.train.checkpoint import TrainCheckpoints
from mspan_jax.train.console import (
    print_final_summary,
    progress_line,
    psnr_summary,
    validation_line,
)
from mspan_jax.train.preemption import InterruptWatch, Preempted, PreemptionWatch
from mspan_jax.train.state import create_optimizer, create_train_state, total_steps
from mspan_jax.train.step import LOSSES, make_train_step
from mspan_jax.train.summary import SummaryWriter
from mspan_jax.train.validation import Validator, host_params, picture_tag
from mspan_jax.train.warm_start import initial_params, seeded_params

EVAL_RESULTS_FILE = "eval_results.json"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"  # labelled baseline | model | target crops of each validation, as PNG


class TrainingDivergedError(RuntimeError):
    """The loss or the gradients became NaN/Inf; the run stopped without saving."""


def prepare_workdir(workdir: str | epath.Path) -> epath.Path:
    """Creates `workdir` and checks that it is writable; raises PermissionError in one line."""
    path = epath.Path(workdir)
    probe = path / f".write-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except (OSError, PermissionError) as e:
        raise PermissionError(f"--workdir {workdir} is not writable ({e.__class__.__name__}: "
                              f"{e.strerror or e}); choose a directory you can write to") from None
    return path


def check_config(config: ml_collections.ConfigDict) -> None:
    """Validates the keys the loop relies on; raises ConfigError naming the key."""
    task_of(config)  # an unknown task, or one that does not fit the scale
    t = config.train
    if t.loss not in LOSSES:
        raise ConfigError(f"config.train.loss={t.loss!r}; choose one of {sorted(LOSSES)}")
    for key in ("steps_per_epoch", "num_epochs", "lr_decay_epochs", "log_every_steps",
                "checkpoint_every_steps", "eval_every_steps", "keep_checkpoints"):
        if int(t[key]) <= 0:
            raise ConfigError(f"config.train.{key}={t[key]} must be positive")
    if not config.eval.datasets:
        raise ConfigError("config.eval.datasets is empty; name at least one validation set")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"config.train.ema_decay={t.ema_decay} must be in [0, 1)")
    if t.get("warm_start_reinit", ()) and not t.warm_start:
        raise ConfigError("config.train.warm_start_reinit is set but config.train.warm_start is empty; "
                         "set both or neither")


def _check_batch(batch: Mapping[str, np.ndarray], local_batch: int, config: ml_collections.ConfigDict):
    """Raises ValueError unless `batch` holds this process's share of LR / HR patches of `config`."""
    p, s = config.data.hr_patch_size // config.model.scale, config.model.scale
    want = {"lr": (local_batch, p, p), "hr": (local_batch, p * s, p * s)}
    for key, shape in want.items():
        got = tuple(np.shape(batch.get(key)))[:3]
        if got != shape:
            raise ValueError(f"the training pipeline gave {key} batches of shape {got}, expected "
                             f"{shape} (per-process batch, patch); check config.data and config.train")


def _run_all(steps: Sequence[Callable[[], Any]], stopping: BaseException | None) -> None:
    """Runs every cleanup step even when one fails (the workdir lock is released, the checkpoints
    closed), then raises the first failure, unless the run is already ending with `stopping`:
    that error stays the one raised, with the failures noted on it."""
    failed: list[BaseException] = []
    for step in steps:
        try:
            step()
        except BaseException as e:  # noqa: BLE001 - every step runs; the first failure is raised
            failed.append(e)
    if stopping is not None:
        for e in failed:
            stopping.add_note(f"then, while stopping: {first_line(e, typed=True)}")
    elif failed:
        raise failed[0]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       devices: Sequence[jax.Device] | None = None) -> dict[str, Any] | None:
    """Trains `config.model` as `config` says, resuming from `workdir` when it holds checkpoints.

    `devices`: the mesh's devices (default: all devices of all processes).

    Returns the last validation results (the content of WORKDIR/eval_results.json), or None
    when the run validated nothing.
    """
    check_config(config)
    task = task_of(config)
    check_bucket(workdir, "--workdir")  # gs://: the client installed, the bucket there (one line)
    fresh = not epath.Path(workdir).exists()
    workdir_path = prepare_workdir(workdir)
    is_chief = jax.process_index() == 0
    log = print if is_chief else (lambda *a, **k: None)
    # One run per workdir: process 0 holds its lock (a lease on a bucket) until the run ends.
    lock = lock_for(workdir_path) if is_chief else None
    took_over = lock.acquire() if lock is not None else None
    if took_over:
        log(took_over)

    # Until the loop starts, a failure removes a workdir this call created (no partial output).
    batches: Iterator[Mapping[str, np.ndarray]] | None = None
    try:
        mesh = sharding.create_mesh(None if devices is None else list(devices))
        local_batch = sharding.local_batch_size(config.train.batch_size, mesh)
        num_steps = total_steps(config.train)
        model = get_model(config.model)

        # Fail fast on anything missing before compiling: checkpoints of another model, data, eval sets.
        checkpoints = TrainCheckpoints(workdir_path, config.train)
        checkpoints.check_model(config.model)
        optimizer = create_optimizer(config.train)
        replicated = sharding.replicated(mesh)
        make_state = jax.jit(
            functools.partial(create_train_state, tx=optimizer.tx, ema_decay=config.train.ema_decay),
            out_shardings=replicated)
        resumed = None
        if checkpoints.latest_step() is not None:  # the newest checkpoint that passes its checksums
            abstract = jax.eval_shape(make_state, jax.eval_shape(lambda: seeded_params(config, model)))
            abstract = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), abstract)
            resumed = checkpoints.restore(abstract, log=log)
        start_step = resumed[0] if resumed else 0
        batches = create_train_iterator(  # batches in the workers' slots: held in `in_flight`
            config, start_step=start_step, process_index=jax.process_index(),
            process_count=jax.process_count(), copy=False)
        first_batch = next(batches)
        _check_batch(first_batch, local_batch, config)
        validator = Validator(config, model)

        if resumed:
            state = resumed[1]
            log(f"resumed from {workdir_path / 'checkpoints'} at step {start_step}")
        else:
            state = make_state(initial_params(config, model))
            if config.train.warm_start:
                log(f"warm start from {config.train.warm_start}")

        step_fn = make_train_step(config.train, model.apply, optimizer, mesh)

        writer = None
        if is_chief:
            writer = SummaryWriter(str(workdir_path / TENSORBOARD_DIR))
            writer.text("config", "```\n" + str(config) + "\n```", start_step)
        log(f"training {config.model.name} x{config.model.scale} for {num_steps} steps "
            f"(from step {start_step}), global batch {config.train.batch_size} on {mesh.size} "
            f"device(s), {jax.process_count()} process(es); workdir {workdir_path}")
    except BaseException:
        if hasattr(batches, "close"):
            batches.close()
        if lock is not None:
            lock.release()
        if fresh and jax.process_index() == 0:
            workdir_path.rmtree(missing_ok=True)
        raise

    last_results: dict[str, Any] | None = None
    last_psnr = "-"
    results_path = workdir_path / EVAL_RESULTS_FILE
    if start_step and results_path.exists():
        last_results = json.loads(results_path.read_text())
        last_psnr = psnr_summary(last_results, config.eval.datasets[0],
                                  baseline_key(task))
    def validate(step: int, state: Any) -> tuple[dict[str, Any], str]:
        """Validates `state`'s eval params at `step`: best/, eval_results.json, TensorBoard, samples."""
        params = host_params(state.eval_params())
        scores, images = validator(params)
        first = next(iter(scores))
        checkpoints.save_best(step, state.eval_params(), scores[first]["psnr"], config.model)
        results = validator.results_json(step, scores)
        if is_chief:
            write_json_atomic(results_path, results)
            log(validation_line(step, results, scores, validator.suite.scoring.baselines), flush=True)
        if writer is not None:
            for name, s in scores.items():
                writer.scalar(f"eval/{name}/psnr", s["psnr"], step)
                writer.scalar(f"eval/{name}/ssim", s["ssim"], step)
            for name, picture in images.items():
                writer.image(f"eval/{name}/{picture_tag(task)}", picture[None], step)
            writer.flush()
        if is_chief:  # a picture to open without TensorBoard
            for name, picture in images.items():
                write_image(workdir_path / SAMPLES_DIR / f"{name}_step{step:07d}.png", picture)
        return results, psnr_summary(results, first, baseline_key(task))

    pending: list[dict[str, jax.Array]] = []
    last_saved = start_step
    timer_step, timer_start = start_step, time.perf_counter()
    step = start_step

    def check_finite() -> None:
        """Raises TrainingDivergedError if any step since the last check was not finite."""
        if not pending:
            return
        bad = np.asarray(jax.device_get([m["nonfinite"] for m in pending]))
        if bad.any():
            first_bad = step - len(pending) + int(np.argmax(bad)) + 1
            checkpoints.wait()
            kept = (f"the last good checkpoint (step {last_saved}) stays in "
                    f"{workdir_path / 'checkpoints'}" if checkpoints.latest_step() is not None
                    else "no checkpoint had been saved yet")
            raise TrainingDivergedError(
                f"loss or gradients became NaN/Inf at step {first_bad}; stopped without saving, {kept}; "
                "lower --config.train.learning_rate or set --config.train.grad_clip_norm")

    # SIGTERM (preemption): every process saves at the same step and raises Preempted.
    watch = PreemptionWatch(every=config.train.log_every_steps).start()
    interrupts = InterruptWatch().start()  # Ctrl-C stops the run even if a finalizer dropped it
    in_flight = BatchesInFlight()  # each batch until its step has finished (its slot is then free)
    try:
        # A step is saved before it is validated: one whose validation a stopped run did not
        # finish (eval_results.json is of an earlier step) is validated now.
        due = start_step % config.train.eval_every_steps == 0 or start_step >= num_steps
        if resumed and due and (last_results or {}).get("step") != start_step:
            log(f"validating step {start_step} (saved, but the run stopped before its validation)")
            last_results, last_psnr = validate(start_step, state)
        if start_step >= num_steps:
            log(f"{workdir_path} is already trained to step {start_step} (>= {num_steps}); "
                "nothing to do")
        while step < num_steps:
            local, first_batch = first_batch if first_batch is not None else next(batches), None
            state, metrics = step_fn(state, sharding.make_global_batch(local, mesh))
            in_flight.hold(local, metrics)
            del local
            interrupts.check()
            step += 1
            pending.append(metrics)
            if step == start_step + 1:  # the first step compiles: time the rest
                jax.block_until_ready(metrics)
                log(f"compiled and ran the first step in {time.perf_counter() - timer_start:.1f}s",
                    flush=True)
                timer_step, timer_start = step, time.perf_counter()
            is_last = step == num_steps

            if step % config.train.log_every_steps == 0 or is_last:
                check_finite()
                host = jax.device_get(pending)
                loss = float(np.mean([m["loss"] for m in host]))
                elapsed = time.perf_counter() - timer_start
                steps_per_sec = (step - timer_step) / elapsed if elapsed > 0 else 0.0
                lr = float(host[-1]["learning_rate"])
                log(progress_line(step, num_steps, loss, lr, steps_per_sec, last_psnr), flush=True)
                if writer is not None:
                    writer.scalar("train/loss", loss, step)
                    writer.scalar("train/learning_rate", lr, step)
                    writer.scalar("train/grad_norm", float(host[-1]["grad_norm"]), step)
                    writer.scalar("train/steps_per_sec", steps_per_sec, step)
                pending.clear()
                timer_step, timer_start = step, time.perf_counter()

            paused = time.perf_counter()
            preempted = watch.agreed(step) and not is_last
            if step % config.train.checkpoint_every_steps == 0 or is_last or preempted:
                check_finite()
                checkpoints.save(state, config.model)
                last_saved = step
            if preempted:
                checkpoints.wait()
                raise Preempted(step, f"SIGTERM: saved the checkpoint of step {step} in "
                                f"{workdir_path / 'checkpoints'}; run the same command again to resume")
            if step % config.train.eval_every_steps == 0 or is_last:
                check_finite()
                last_results, last_psnr = validate(step, state)
            timer_start += time.perf_counter() - paused  # steps/s counts training time only
    finally:
        stopping = sys.exc_info()[1]  # what ends the run early, if anything
        _run_all([watch.stop, interrupts.stop, in_flight.release_all,
                  getattr(batches, "close", lambda: None), checkpoints.wait, checkpoints.close,
                  writer.close if writer is not None else (lambda: None),
                  lock.release if lock is not None else (lambda: None)], stopping)
    print_final_summary(workdir_path, config, last_results)
    return last_results
