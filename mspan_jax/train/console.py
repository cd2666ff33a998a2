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
