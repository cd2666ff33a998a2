"""The training run's console lines (process 0 prints them): progress with ETA, validation scores
beside the baselines, and the last PSNR carried on every progress line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_duration(seconds: float) -> str:
    """'1h05m' or '4m07s'."""
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


def psnr_summary(results: Mapping[str, Any], dataset: str, baseline: str = "bicubic") -> str:
    """'29.99 dB on set5 (bicubic 29.38)' from eval_results.json content; '-' if it lacks `dataset`."""
    if dataset not in results or dataset not in results.get(baseline, {}):
        return "-"
    return (f"{results[dataset]['psnr']:.2f} dB on {dataset} "
            f"({baseline} {results[baseline][dataset]['psnr']:.2f})")


def validation_line(step: int, results: Mapping[str, Any], scores: Mapping[str, Mapping[str, float]],
                    baselines: tuple[str, ...]) -> str:
    """'validation at step n: set5 29.99 dB / 0.8500 (bicubic 29.38 / 0.8300), ...' from
    eval_results.json content; each of `baselines` that `results` holds is shown in brackets."""
    shown = [k for k in baselines if k in results]
    return f"validation at step {step}: " + ", ".join(
        f"{n} {s['psnr']:.2f} dB / {s['ssim']:.4f} (" + ", ".join(
            f"{k} {results[k][n]['psnr']:.2f} / {results[k][n]['ssim']:.4f}" for k in shown) + ")"
        for n, s in scores.items())


def best_checkpoint(workdir: Any) -> tuple[int, float] | None:
    """(step, PSNR) of a workdir's best-PSNR checkpoint (best/), or None when it has none."""
    from etils import epath

    from mspan_jax.checkpoints.workdir import BEST_DIR, open_manager

    best_dir = epath.Path(workdir) / BEST_DIR
    if not best_dir.is_dir():
        return None
    manager = open_manager(best_dir, keep=1, async_save=False, best=True, create=False)
    try:
        step = manager.best_step()
        metrics = manager.metrics(step) if step is not None else None
        return None if step is None or not metrics else (int(step), float(metrics["psnr"]))
    finally:
        manager.close()


def final_summary(workdir: Any, config: Any, results: Mapping[str, Any] | None,
                  best: tuple[int, float] | None) -> str:
    """What a finished run leaves and what to run next: best and last PSNR against the baseline, where
    the best weights, samples, eval_results.json and TensorBoard events are, and the next commands."""
    from mspan_jax.train.state import total_steps

    scale = int(config.model.scale)
    baseline = "input" if scale == 1 else "bicubic"
    dataset = config.eval.datasets[0] if config.eval.datasets else None
    lines = [f"done: {config.model.name} x{scale} trained to step {total_steps(config.train)}"]
    if results is not None and dataset is not None and dataset in results:
        base = results.get(baseline, {}).get(dataset)
        against = f" ({baseline} {base['psnr']:.2f} dB)" if base else ""
        last = f"last {results[dataset]['psnr']:.2f} dB at step {results.get('step', '?')}"
        best_text = f"best {best[1]:.2f} dB at step {best[0]}, " if best else ""
        lines.append(f"  {dataset}: {best_text}{last}{against}")
    lines += [
        f"  best weights:      {workdir}/best (what --checkpoint {workdir} loads)",
        f"  samples:           {workdir}/samples/*.png (bicubic | SR | HR crops)",
        f"  scores:            {workdir}/eval_results.json",
        f"  TensorBoard:       tensorboard --logdir {workdir}/tensorboard",
        "next:",
        f"  python scripts/evaluate.py --checkpoint {workdir}"
        + (" --config <this config>" if scale == 1 else f" --datasets {dataset or 'set5'}"),
        f"  python scripts/upscale.py --checkpoint {workdir} --input photos/ --output sr/",
    ]
    return "\n".join(lines)


def print_final_summary(workdir: Any, config: Any, results: Mapping[str, Any] | None) -> None:
    """Process 0 prints `final_summary` at the end of a run (train/loop.py). Every process reads the
    best checkpoint: opening an orbax manager syncs all processes, so process 0 alone would hang."""
    import jax

    best = best_checkpoint(workdir)
    if jax.process_index() == 0:
        print(final_summary(workdir, config, results, best), flush=True)
