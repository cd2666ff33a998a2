"""The training loop: data-parallel steps over a device mesh, periodic checkpoints and validation,
TensorBoard and a console progress line. `train_and_evaluate(config, workdir)` is the whole run.

Every process runs the same code (multi-host: after `jax.distributed.initialize()`); each reads
only its own data shard, and only process 0 prints and writes logs, summaries and eval_results.json.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from mspan_jax.data.datasets import load_benchmark, load_restoration_set
from mspan_jax.data.images import write_image
from mspan_jax.data.pairs import EvalPair, is_folder_set, load_set_folder
from mspan_jax.data.pipeline import create_train_iterator
from mspan_jax.drawing import Panel, panel_grid
from mspan_jax.evaluation import (
    EvalResult,
    bicubic_scores,
    evaluate_pairs,
    input_scores,
    nl_means_scores,
)
from mspan_jax.files import write_json_atomic
from mspan_jax.metrics import to_uint8
from mspan_jax.models.registry import get_model
from mspan_jax.params_io import CheckpointError, tree_mismatch
from mspan_jax.train import sharding
from mspan_jax.train.checkpoint import TrainCheckpoints
from mspan_jax.train.state import PyTree, create_optimizer, create_train_state, total_steps
from mspan_jax.train.step import LOSSES, make_train_step
from mspan_jax.train.summary import SummaryWriter
from mspan_jax.train.workdir_lock import WorkdirLock
from mspan_jax.weights import load_weights, recorded_model_config

EVAL_RESULTS_FILE = "eval_results.json"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"  # labelled bicubic | SR | HR crops of each validation, as PNG


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
    """Validates the keys the loop relies on; raises ValueError naming the key."""
    t = config.train
    if t.loss not in LOSSES:
        raise ValueError(f"config.train.loss={t.loss!r}; choose one of {sorted(LOSSES)}")
    for key in ("batch_size", "steps_per_epoch", "num_epochs", "lr_decay_epochs", "log_every_steps",
                "checkpoint_every_steps", "eval_every_steps", "keep_checkpoints"):
        if int(t[key]) <= 0:
            raise ValueError(f"config.train.{key}={t[key]} must be positive")
    if not config.eval.datasets:
        raise ValueError("config.eval.datasets is empty; name at least one validation set")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ValueError(f"config.train.ema_decay={t.ema_decay} must be in [0, 1)")
    if t.get("warm_start_reinit", ()) and not t.warm_start:
        raise ValueError("config.train.warm_start_reinit is set but config.train.warm_start is empty; "
                         "set both or neither")
    if config.data.hr_patch_size % config.model.scale:
        raise ValueError(f"config.data.hr_patch_size={config.data.hr_patch_size} must be a multiple of "
                         f"config.model.scale={config.model.scale}")


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(step: int, num_steps: int, loss: float, lr: float, steps_per_sec: float,
                  last_psnr: str) -> str:
    """The compact console line: step, loss, speed, ETA and the last validation PSNR."""
    eta = format_duration((num_steps - step) / steps_per_sec) if steps_per_sec > 0 else "?"
    return (f"step {step}/{num_steps} | loss {loss:.5f} | lr {lr:.2e} | {steps_per_sec:.2f} steps/s | "
            f"ETA {eta} | last PSNR {last_psnr}")


def _is_local(path: epath.Path) -> bool:
    """Whether `path` is on the local file system (not gs:// or another remote store)."""
    return "://" not in str(path)


def summary_figure(pairs: Sequence[EvalPair], baseline: EvalResult, result: EvalResult, size: int,
                   model_label: str, scale: int) -> np.ndarray:
    """One row per pair: centred `size` crops of baseline | model | HR, each labelled with its
    whole-image PSNR / SSIM (drawing.panel_grid), as a uint8 (H, W, 3) picture (a gray model's
    crops repeated to three channels; a float noisy input rounded)."""
    base_label, ref_label = ("noisy input", "ground truth") if scale == 1 else ("bicubic", "HR")
    base_scores = {s.name: s for s in baseline.images}
    model_scores = {s.name: s for s in result.images}
    panels = []
    for pair in pairs:
        h, w = pair.hr.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2

        def crop(img: np.ndarray, top=top, left=left) -> np.ndarray:
            img = img[top:top + size, left:left + size]
            if img.dtype != np.uint8:  # a float noisy input (0..255, unclipped), shown rounded
                img = to_uint8(img / 255.0)
            return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img

        b, m = base_scores[pair.name], model_scores[pair.name]
        panels += [Panel(crop(baseline.outputs[pair.name]), base_label,
                         f"{b.psnr:.2f} dB / {b.ssim:.4f}"),
                   Panel(crop(result.outputs[pair.name]), model_label,
                         f"{m.psnr:.2f} dB / {m.ssim:.4f}"),
                   Panel(crop(pair.hr), f"{ref_label}: {pair.name}", "PSNR / SSIM")]
    return panel_grid(panels, columns=3)


def baseline_key(scale: int) -> str:
    """The eval_results.json key of the baseline every model is compared with: "bicubic" for SR,
    "input" (the noisy / rainy LQ itself) for restoration (scale 1)."""
    return "input" if scale == 1 else "bicubic"


class Validator:
    """Validation sets loaded once, their baseline scores, and PSNR/SSIM of a model on them.

    The baseline (`self.bicubic`) is bicubic for SR and the LQ input itself for restoration (scale 1,
    `input_scores`); with `config.eval.classical_baseline` restoration also scores scikit-image's
    non-local means once (`self.nl_means`)."""

    def __init__(self, config: ml_collections.ConfigDict, model: Any):
        self.config, self.model = config, model
        scale, ev = config.model.scale, config.eval
        dirs = dict(data_dir=config.data.get("data_dir") or None,
                    manual_dir=config.data.get("manual_dir") or None)
        if scale == 1:  # restoration (MSPAN-IR): LQ is noisy GT or a paired set
            self.pairs = {name: load_restoration_set(name, config.data.noise_sigma,
                                                     gray_noise=config.data.noise_gray,
                                                     channels=config.model.in_channels, **dirs)
                          for name in ev.datasets}
        else:
            if any(is_folder_set(n) for n in ev.datasets) and config.data.degradation != "BI":
                raise ValueError("config.eval.datasets: an image folder validates bicubic (BI) SR "
                                 f"only, not degradation {config.data.degradation!r}")
            self.pairs = {name: load_set_folder(name, scale) if is_folder_set(name)
                          else load_benchmark(name, scale, config.data.degradation, **dirs)
                          for name in ev.datasets}
        opts = dict(crop_border=ev.crop_border, y_channel=ev.y_channel, round_y=ev.round_y,
                    keep_outputs=True)
        self.bicubic = {name: input_scores(pairs, **opts) if scale == 1 else
                        bicubic_scores(pairs, scale=scale, **opts)
                        for name, pairs in self.pairs.items()}
        self.nl_means = {}
        if scale == 1 and ev.get("classical_baseline", False):
            self.nl_means = {name: nl_means_scores(pairs, crop_border=ev.crop_border,
                                                   y_channel=ev.y_channel)
                             for name, pairs in self.pairs.items()}

    def __call__(self, params: PyTree) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
        """Scores per dataset and, per dataset, a labelled picture of baseline | model | HR crops."""
        ev, scores, images = self.config.eval, {}, {}
        for name, pairs in self.pairs.items():
            result = evaluate_pairs(self.model.apply, {"params": params}, pairs,
                                    scale=self.config.model.scale, crop_border=ev.crop_border,
                                    y_channel=ev.y_channel, round_y=ev.round_y, progress=False,
                                    keep_outputs=True)
            scores[name] = {"psnr": float(result.psnr), "ssim": float(result.ssim)}
            shown = pairs[:ev.num_summary_images]
            if shown:
                size = min([ev.summary_crop_size] + [min(p.hr.shape[:2]) for p in shown])
                images[name] = summary_figure(shown, self.bicubic[name], result, size,
                                              f"{self.config.model.name} x{self.config.model.scale}",
                                              self.config.model.scale)
        return scores, images

    def results_json(self, step: int, scores: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
        """`{"step": n, "<dataset>": {"psnr", "ssim"}, "<baseline>": {"<dataset>": {...}}}`; baseline
        "bicubic" (SR), or "input" and, when scored, "nl_means" (restoration)."""
        results: dict[str, Any] = {"step": step, **scores}
        baselines = {baseline_key(self.config.model.scale): self.bicubic, "nl_means": self.nl_means}
        for key, baseline in baselines.items():
            if baseline:
                results[key] = {name: {"psnr": float(r.psnr), "ssim": float(r.ssim)}
                                for name, r in baseline.items()}
        return results


def _host_params(params: PyTree) -> PyTree:
    """Replicated global params as host numpy (works on every process of a multi-host run)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), params)


def _psnr_summary(results: Mapping[str, Any], dataset: str, baseline: str = "bicubic") -> str:
    """'29.99 dB on set5 (bicubic 29.38)' from eval_results.json content; '-' if it lacks `dataset`."""
    if dataset not in results or dataset not in results.get(baseline, {}):
        return "-"
    return (f"{results[dataset]['psnr']:.2f} dB on {dataset} "
            f"({baseline} {results[baseline][dataset]['psnr']:.2f})")


def _initial_params(config: ml_collections.ConfigDict, model: Any) -> PyTree:
    """Warm start from a converted checkpoint or a training workdir (config.train.warm_start), else a
    seeded init. `config.train.warm_start_reinit` names top-level params (e.g. 'upsampler') that
    keep the seeded init instead; the warm start may then be of another scale (x2 from x4)."""
    reinit = tuple(config.train.get("warm_start_reinit", ()))
    if not config.train.warm_start:
        return jax.jit(lambda: _seeded_params(config, model))()
    source_scale = recorded_model_config(config.train.warm_start).get("scale")
    if not reinit:
        if source_scale != config.model.scale:
            raise CheckpointError(f"{config.train.warm_start}: warm start is x{source_scale}, "
                                  f"config.model is x{config.model.scale}; to keep its body, set "
                                  "config.train.warm_start_reinit=('upsampler',)")
        return load_weights(config.train.warm_start, config.model)["params"]
    seeded = jax.jit(lambda: _seeded_params(config, model))()
    unknown = sorted(set(reinit) - set(seeded))
    if unknown:
        raise ValueError(f"config.train.warm_start_reinit: no top-level params {unknown} in "
                         f"{config.model.name} (it has {sorted(seeded)})")
    # Every architecture key but the scale must match; load_weights checks them.
    source = dict(config.model.to_dict(), scale=source_scale)
    loaded = load_weights(config.train.warm_start, source)["params"]
    params = {k: seeded[k] if k in reinit else loaded[k] for k in seeded}
    mismatch = tree_mismatch(seeded, params)
    if mismatch:
        raise CheckpointError(f"{config.train.warm_start}: does not fit config.model outside "
                              f"warm_start_reinit {list(reinit)}: {mismatch}")
    return params


def _seeded_params(config: ml_collections.ConfigDict, model: Any) -> PyTree:
    """`model.init` with `config.seed`, on one LR patch.

    The key uses XLA's RngBitGenerator ('rbg'): its init program compiles several times faster on
    CPU than threefry's (seconds instead of tens of seconds for MSPAN) and is as deterministic."""
    p = config.data.hr_patch_size // config.model.scale
    x = jnp.zeros((1, p, p, config.model.in_channels), jnp.float32)
    return model.init(jax.random.key(config.seed, impl="rbg"), x)["params"]


def _check_batch(batch: Mapping[str, np.ndarray], local_batch: int, config: ml_collections.ConfigDict):
    p, s = config.data.hr_patch_size // config.model.scale, config.model.scale
    want = {"lr": (local_batch, p, p), "hr": (local_batch, p * s, p * s)}
    for key, shape in want.items():
        got = tuple(np.shape(batch.get(key)))[:3]
        if got != shape:
            raise ValueError(f"the training pipeline gave {key} batches of shape {got}, expected "
                             f"{shape} (per-process batch, patch); check config.data and config.train")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       devices: Sequence[jax.Device] | None = None) -> dict[str, Any] | None:
    """Trains `config.model` as `config` says, resuming from `workdir` when it holds checkpoints.

    `devices`: the mesh's devices (default: all devices of all processes).

    Returns the last validation results (the content of WORKDIR/eval_results.json), or None
    when the run validated nothing.
    """
    check_config(config)
    fresh = not epath.Path(workdir).exists()
    workdir_path = prepare_workdir(workdir)
    is_chief = jax.process_index() == 0
    log = print if is_chief else (lambda *a, **k: None)
    # One run per workdir: process 0 holds its lock until the run ends (a second run is refused).
    lock = WorkdirLock(workdir_path) if is_chief and _is_local(workdir_path) else None
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
            abstract = jax.eval_shape(make_state, jax.eval_shape(lambda: _seeded_params(config, model)))
            abstract = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), abstract)
            resumed = checkpoints.restore(abstract, log=log)
        start_step = resumed[0] if resumed else 0
        batches = create_train_iterator(
            config, start_step=start_step, process_index=jax.process_index(),
            process_count=jax.process_count())
        first_batch = next(batches)
        _check_batch(first_batch, local_batch, config)
        validator = Validator(config, model)

        if resumed:
            state = resumed[1]
            log(f"resumed from {workdir_path / 'checkpoints'} at step {start_step}")
        else:
            state = make_state(_initial_params(config, model))
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
        last_psnr = _psnr_summary(last_results, config.eval.datasets[0],
                                  baseline_key(config.model.scale))
    if start_step >= num_steps:
        log(f"{workdir_path} is already trained to step {start_step} (>= {num_steps}); nothing to do")
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

    try:
        while step < num_steps:
            local = first_batch if step == start_step else next(batches)
            state, metrics = step_fn(state, sharding.make_global_batch(local, mesh))
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
            if step % config.train.checkpoint_every_steps == 0 or is_last:
                check_finite()
                checkpoints.save(state, config.model)
                last_saved = step
            if step % config.train.eval_every_steps == 0 or is_last:
                check_finite()
                params = _host_params(state.eval_params())
                scores, images = validator(params)
                first = next(iter(scores))
                checkpoints.save_best(step, state.eval_params(), scores[first]["psnr"], config.model)
                last_results = validator.results_json(step, scores)
                base = baseline_key(config.model.scale)
                last_psnr = _psnr_summary(last_results, first, base)
                if is_chief:
                    write_json_atomic(results_path, last_results)
                    others = [k for k in (base, "nl_means") if k in last_results]
                    log(f"validation at step {step}: " + ", ".join(
                        f"{n} {s['psnr']:.2f} dB / {s['ssim']:.4f} (" + ", ".join(
                            f"{k} {last_results[k][n]['psnr']:.2f} / {last_results[k][n]['ssim']:.4f}"
                            for k in others) + ")" for n, s in scores.items()), flush=True)
                if writer is not None:
                    for name, s in scores.items():
                        writer.scalar(f"eval/{name}/psnr", s["psnr"], step)
                        writer.scalar(f"eval/{name}/ssim", s["ssim"], step)
                    for name, picture in images.items():
                        writer.image(f"eval/{name}/bicubic_sr_hr", picture[None], step)
                    writer.flush()
                if is_chief and _is_local(workdir_path):  # a picture to open without TensorBoard
                    for name, picture in images.items():
                        write_image(workdir_path / SAMPLES_DIR / f"{name}_step{step:07d}.png", picture)
            timer_start += time.perf_counter() - paused  # steps/s counts training time only
    finally:
        if hasattr(batches, "close"):
            batches.close()
        checkpoints.wait()
        checkpoints.close()
        if writer is not None:
            writer.close()
        if lock is not None:
            lock.release()
    return last_results
