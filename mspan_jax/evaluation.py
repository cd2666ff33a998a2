"""Evaluate a model (or a baseline: bicubic, the restoration input itself, non-local means) on LR/HR
pairs: PSNR/SSIM per image and their means.

Images of mixed sizes run through `inference.Predictor`, whose results equal unpadded inference:
models whose masked padding is exact (IMDN; MSPAN with attention "none" or "ca") are zero-padded
to multiples of `bucket` with a validity mask, so the number of compiled programs stays bounded by
the number of distinct padded shapes; MSPAN with MSPA (the default) or ESA, whose pooled branches
would see the padding, runs each image at its own size, one program per distinct size, least
recently used dropped beyond `inference.MAX_PROGRAMS` (`models.registry.pads_exactly` decides).
Either way the count is reported as `num_compiled`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from mspan_jax import metrics
from mspan_jax.data.images import to_uint8
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
    program_shapes: frozenset[tuple[int, ...]] = frozenset()  # input shapes as run (padded or exact)


def _check_pair(pair: EvalPair, scale: int) -> None:
    lh, lw = pair.lr.shape[:2]
    if pair.hr.shape[:2] != (scale * lh, scale * lw):
        raise ValueError(f"pair {pair.name!r}: HR {pair.hr.shape[:2]} is not x{scale} of LR {(lh, lw)}")


def _score_all(pairs: Sequence[EvalPair], upscale, *, scale: int, crop_border: int, y_channel: bool,
               round_y: bool, keep_outputs: bool, progress: bool, label: str,
               unquantized: bool = False) -> EvalResult:
    """Scores `upscale(pair) -> uint8 SR` on every pair (`unquantized`: float SR in 0..255 scored as
    it is; kept outputs are quantized)."""
    if not pairs:
        raise ValueError("no pairs to evaluate")
    scores, outputs = [], {} if keep_outputs else None
    bar = ProgressLine(len(pairs), label, enabled=progress)
    for pair in pairs:
        _check_pair(pair, scale)
        sr = upscale(pair)
        opts = dict(crop_border=crop_border, y_channel=y_channel, round_y=round_y,
                    unquantized=unquantized)
        score = ImageScore(pair.name, metrics.psnr(sr, pair.hr, **opts),
                           metrics.ssim(sr, pair.hr, **opts))
        scores.append(score)
        if outputs is not None:
            outputs[pair.name] = sr if sr.dtype == np.uint8 else to_uint8(sr / 255.0)
        bar.update(f"{pair.name} {score.psnr:.2f} dB")
    return EvalResult(psnr=float(np.mean([s.psnr for s in scores])),
                      ssim=float(np.mean([s.ssim for s in scores])),
                      images=scores, num_compiled=0, outputs=outputs)


def model_input(lr: np.ndarray) -> np.ndarray:
    """A pair's LR / LQ as the float32 model input in [0, 1] (a float LQ, e.g. unclipped synthetic
    noise, is already in that scale and goes in as it is)."""
    return lr.astype(np.float32) / 255.0 if lr.dtype == np.uint8 else lr.astype(np.float32)


def input_scores(pairs: Sequence[EvalPair], *, crop_border: int, y_channel: bool = False,
                 round_y: bool = False, keep_outputs: bool = False) -> EvalResult:
    """The restoration baseline (scale 1): the LQ input itself scored against the GT; a float LQ
    (synthetic noise, not clipped) unquantized, as the denoising papers report the noisy PSNR."""
    def as_is(pair: EvalPair) -> np.ndarray:
        return pair.lr if pair.lr.dtype == np.uint8 else pair.lr.astype(np.float64) * 255.0
    return _score_all(pairs, as_is, scale=1, crop_border=crop_border, y_channel=y_channel,
                      round_y=round_y, keep_outputs=keep_outputs, progress=False, label="input",
                      unquantized=True)


def evaluate_pairs(apply_fn: ApplyFn, variables: Any, pairs: Sequence[EvalPair], *, scale: int,
                   crop_border: int, y_channel: bool = True, round_y: bool = False,
                   self_ensemble: bool = False, bucket: int = 64, progress: bool = True,
                   keep_outputs: bool = False) -> EvalResult:
    """PSNR/SSIM of `apply_fn(variables, x, mask)` (e.g. `model.apply`) on every pair.

    Each LR goes in as float32 in [0, 1], padded to multiples of `bucket` with its mask, or at its
    own size for a model that masked padding would change (see the module docstring); the SR
    output is cropped to (scale h, scale w), quantized with `to_uint8` and scored against
    the HR. `self_ensemble` averages the x8 flips/rotations.
    """
    predictor = Predictor(apply_fn, variables, scale=scale, bucket=bucket)

    def upscale(pair: EvalPair) -> np.ndarray:
        return to_uint8(predictor(model_input(pair.lr), self_ensemble))

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


# scikit-image's non-local means as its gallery runs it with an estimated sigma ("Non-local means
# denoising for preserving textures", the best of its fast-mode settings): 5x5 patches searched
# within 6 pixels, h = 0.6 sigma_est.
NL_MEANS_SETTINGS = dict(patch_size=5, patch_distance=6, fast_mode=True)
NL_MEANS_H = 0.6


def nl_means_denoise(noisy: np.ndarray) -> np.ndarray:
    """Classical baseline: skimage `denoise_nl_means` of an (H, W, C) image (uint8, or float in [0, 1]
    as `model_input` takes it) with the noise sigma it estimates itself (`estimate_sigma`, wavelet MAD;
    needs PyWavelets); uint8 out."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    x = model_input(noisy).astype(np.float64)
    sigma = float(np.mean(estimate_sigma(x, channel_axis=-1)))
    out = denoise_nl_means(x, h=NL_MEANS_H * sigma, sigma=sigma, channel_axis=-1, **NL_MEANS_SETTINGS)
    return to_uint8(out.reshape(noisy.shape))


def nl_means_scores(pairs: Sequence[EvalPair], *, crop_border: int, y_channel: bool = False,
                    keep_outputs: bool = False, progress: bool = False) -> EvalResult:
    """The classical denoising baseline (`nl_means_denoise` of each LQ), scored like a model."""
    return _score_all(pairs, lambda pair: nl_means_denoise(pair.lr), scale=1, crop_border=crop_border,
                      y_channel=y_channel, round_y=False, keep_outputs=keep_outputs,
                      progress=progress, label="non-local means")
