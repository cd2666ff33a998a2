"""PSNR and SSIM as the SR papers report them (MATLAB convention, as RCAN's Evaluate_PSNR_SSIM.m
and BasicSR): on the Y channel of MATLAB's rgb2ycbcr, kept in float, with `crop_border` pixels
shaved on every side; SSIM is Wang's ssim_index.m (11x11 Gaussian window, sigma 1.5, 'valid').

Inputs are uint8 (H, W, 3) RGB, or (H, W, 1) gray (scored on that plane). A float SR output is
quantized with `data.images.to_uint8` first, the one quantizer of the package, exactly as saving the
output to a PNG does.
"""

from __future__ import annotations

import math

import numpy as np

Y_WEIGHTS = np.array([65.481, 128.553, 24.966])  # MATLAB rgb2ycbcr, for RGB in [0, 1]
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PIXEL_MAX = 255.0


def rgb_to_y(img: np.ndarray, round_y: bool = False) -> np.ndarray:
    """Y of MATLAB's rgb2ycbcr(im2double(img)) on the 0..255 scale, float64 (H, W).

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in 0..255. `round_y` rounds
    it to integers, as the official IMDN test script (and rgb2ycbcr on uint8 input) does.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y needs an (H, W, 3) RGB image, got shape {img.shape}")
    y = 16.0 + img.astype(np.float64) @ Y_WEIGHTS / 255.0
    return np.round(y) if round_y else y


def _prepare(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool,
             round_y: bool, unquantized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Checks the pair, shaves `crop_border` pixels and returns float64 (H, W, C) planes."""
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {sr.shape} differs from HR shape {hr.shape}")
    float_ok = unquantized and sr.dtype.kind == "f"
    if (sr.dtype != np.uint8 and not float_ok) or hr.dtype != np.uint8:
        raise ValueError(f"metrics need uint8 images (quantize with data.images.to_uint8), "
                         f"got {sr.dtype}/{hr.dtype}")
    if sr.ndim != 3 or sr.shape[2] not in (1, 3):
        raise ValueError(f"metrics need (H, W, 3) RGB or (H, W, 1) gray images, got shape {sr.shape}")
    if crop_border < 0 or 2 * crop_border >= min(sr.shape[:2]):
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {sr.shape[:2]} image")
    if y_channel and sr.shape[2] == 3:  # a gray image is scored on its one plane
        sr, hr = rgb_to_y(sr, round_y)[..., None], rgb_to_y(hr, round_y)[..., None]
    else:
        sr, hr = sr.astype(np.float64), hr.astype(np.float64)
    if crop_border:
        c = crop_border
        sr, hr = sr[c:-c, c:-c], hr[c:-c, c:-c]
    return sr, hr


def psnr(sr: np.ndarray, hr: np.ndarray, *, crop_border: int, y_channel: bool = True,
         round_y: bool = False, unquantized: bool = False) -> float:
    """PSNR in dB of uint8 RGB images (Y channel by default) or gray ones; inf when they are equal.

    `unquantized`: `sr` may be float in 0..255, scored as it is (not rounded or clipped): the
    synthetic noisy input of a denoising test, whose own PSNR the literature reports that way."""
    a, b = _prepare(sr, hr, crop_border, y_channel, round_y, unquantized)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PIXEL_MAX**2 / mse)


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB's fspecial('gaussian', size, sigma)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W) with the outer product of g with itself."""
    k = len(g)
    h, w = x.shape
    rows = sum(g[i] * x[i:h - k + 1 + i] for i in range(k))
    return sum(g[j] * rows[:, j:w - k + 1 + j] for j in range(k))


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """Wang's ssim_index.m on one float64 plane in 0..255: mean of the SSIM map."""
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after the crop, "
                         f"got {a.shape[0]}x{a.shape[1]}")
    g = gaussian_window_1d()
    c1, c2 = (SSIM_K1 * PIXEL_MAX) ** 2, (SSIM_K2 * PIXEL_MAX) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    ssim_map = numerator / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(np.mean(ssim_map))


def ssim(sr: np.ndarray, hr: np.ndarray, *, crop_border: int, y_channel: bool = True,
         round_y: bool = False, unquantized: bool = False) -> float:
    """SSIM of uint8 RGB images (Y channel by default; RGB = mean over the three channels) or gray
    ones. `unquantized`: as in `psnr`."""
    a, b = _prepare(sr, hr, crop_border, y_channel, round_y, unquantized)
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))
