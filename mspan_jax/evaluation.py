"""Evaluate a model (or the bicubic baseline) on LR/HR pairs: PSNR/SSIM per image and their means.

Images of mixed sizes run through `inference.Predictor`: zero-padded to multiples of `bucket`
with a validity mask, so results equal unpadded inference while the number of compiled programs
stays bounded by the number of distinct padded shapes (reported as `num_compiled`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from mspan_jax import metrics
from mspan_jax.data.imresize import bicubic_upscale
from mspan_jax.data.pairs import EvalPair
from mspan_jax.inference import ApplyFn, Predictor
from mspan_jax.progress import ProgressLine


@dataclasses.dataclass(frozen=True)
class ImageScore:
    """One image's scores."""

    name: str
    psnr: float
    ssim: float


@dataclasses.dataclass
class EvalResult:
    """Mean PSNR/SSIM over `images`, the compiled-program count, and SR outputs when kept."""

    psnr: float
    ssim: float
    images: list[ImageScore]
    num_compiled: int
    outputs: dict[str, np.ndarray] | None = None  # name -> uint8 (H, W, 3) SR, if keep_outputs
    program_shapes: frozenset[tuple[int, ...]] = frozenset()  # padded input shapes that ran


def _check_pair(pair: EvalPair, scale: int) -> None:
    lh, lw = pair.lr.shape[:2]
    if pair.hr.shape[:2] != (scale * lh, scale * lw):
        raise ValueError(f"pair {pair.name!r}: HR {pair.hr.shape[:2]} is not x{scale} of LR {(lh, lw)}")


def _score_all(pairs: Sequence[EvalPair], upscale, *, scale: int, crop_border: int, y_channel: bool,
               round_y: bool, keep_outputs: bool, progress: bool, label: str) -> EvalResult:
    """Scores `upscale(pair) -> uint8 SR` on every pair."""
    if not pairs:
        raise ValueError("no pairs to evaluate")
    scores, outputs = [], {} if keep_outputs else None
    bar = ProgressLine(len(pairs), label, enabled=progress)
    for pair in pairs:
        _check_pair(pair, scale)
        sr = upscale(pair)
        opts = dict(crop_border=crop_border, y_channel=y_channel, round_y=round_y)
        score = ImageScore(pair.name, metrics.psnr(sr, pair.hr, **opts),
                           metrics.ssim(sr, pair.hr, **opts))
        scores.append(score)
        if outputs is not None:
            outputs[pair.name] = sr
        bar.update(f"{pair.name} {score.psnr:.2f} dB")
    return EvalResult(psnr=float(np.mean([s.psnr for s in scores])),
                      ssim=float(np.mean([s.ssim for s in scores])),
                      images=scores, num_compiled=0, outputs=outputs)


def evaluate_pairs(apply_fn: ApplyFn, variables: Any, pairs: Sequence[EvalPair], *, scale: int,
                   crop_border: int, y_channel: bool = True, round_y: bool = False,
                   self_ensemble: bool = False, bucket: int = 64, progress: bool = True,
                   keep_outputs: bool = False) -> EvalResult:
    """PSNR/SSIM of `apply_fn(variables, x, mask)` (e.g. `model.apply`) on every pair.

    Each LR goes in as float32 in [0, 1], padded to multiples of `bucket` with its mask; the SR
    output is cropped to (scale h, scale w), quantized with `metrics.to_uint8` and scored against
    the HR. `self_ensemble` averages the x8 flips/rotations.
    """
    predictor = Predictor(apply_fn, variables, scale=scale, bucket=bucket)

    def upscale(pair: EvalPair) -> np.ndarray:
        return metrics.to_uint8(predictor(pair.lr.astype(np.float32) / 255.0, self_ensemble))

    result = _score_all(pairs, upscale, scale=scale, crop_border=crop_border, y_channel=y_channel,
                        round_y=round_y, keep_outputs=keep_outputs, progress=progress, label="eval")
    result.num_compiled = predictor.num_compiled
    result.program_shapes = predictor.program_shapes
    return result


def bicubic_scores(pairs: Sequence[EvalPair], *, scale: int, crop_border: int, y_channel: bool = True,
                   round_y: bool = False, keep_outputs: bool = False) -> EvalResult:
    """The bicubic baseline: MATLAB bicubic upscaling of each LR, scored like a model."""
    return _score_all(pairs, lambda pair: bicubic_upscale(pair.lr, scale), scale=scale,
                      crop_border=crop_border, y_channel=y_channel, round_y=round_y,
                      keep_outputs=keep_outputs, progress=False, label="bicubic")
