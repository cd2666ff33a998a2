"""Degradations that make LR / LQ inputs from HR / GT images: BI, BD, DN and Gaussian noise.

The three SR degradation models of the RDN / IMDN paper family:

* **BI**: MATLAB `imresize(hr, 1/s, 'bicubic')`: the project's one bicubic,
  `imresize.bicubic_downscale`.
* **BD**: RDN's blur-downscale: a 7x7 Gaussian blur with sigma 1.6 (MATLAB `fspecial('gaussian', 7, 1.6)`
  applied with `imfilter(..., 'replicate')`, quantized to uint8 as `imfilter` does on uint8), then every
  s-th pixel. Boundary mode: **replicate** (edge pixels repeated), because that is what RDN's MATLAB
  script uses; zero padding would darken the border rows of every LR image. Sampling phase: the pixel at
  offset `s // 2` of each s x s block, which is what MATLAB's `imresize(..., 1/s, 'nearest')` picks (the
  pixel nearest to the LR pixel's centre; for even s the lower-right of the four central ones).
* **DN**: BI, then additive Gaussian noise of sigma 30 (in 0..255 units) from a fixed seed, rounded and
  clipped back to uint8.

All take and return uint8 HxWxC arrays (the papers store LR as 8-bit images); HR is cropped to a multiple
of the scale first (`modcrop`), so LR is exactly `hr.shape // s`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from mspan_jax.data.images import gray_plane
from mspan_jax.data.imresize import bicubic_downscale, modcrop, round_uint8
from mspan_jax.errors import ConfigError

DEGRADATIONS = ("BI", "BD", "DN")
BD_KERNEL_SIZE = 7
BD_SIGMA = 1.6
DN_SIGMA = 30.0
DN_SEED = 0


def _check_uint8_image(img: np.ndarray, what: str) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{what} must be a uint8 HxWxC array, got {got}")


def _check_scale(scale: int) -> None:
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")


def gaussian_kernel_1d(size: int = BD_KERNEL_SIZE, sigma: float = BD_SIGMA) -> np.ndarray:
    """Normalized 1-D Gaussian taps; their outer product is `fspecial('gaussian', size, sigma)`."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(img: np.ndarray, size: int = BD_KERNEL_SIZE, sigma: float = BD_SIGMA) -> np.ndarray:
    """`imfilter(img, fspecial('gaussian', size, sigma), 'replicate')` on uint8: uint8 out."""
    _check_uint8_image(img, "gaussian_blur input")
    k = gaussian_kernel_1d(size, sigma)
    r = size // 2
    x = np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    rows = sum(k[i] * x[i:i + h] for i in range(size))  # vertical pass, keeps the padded width
    out = sum(k[i] * rows[:, i:i + w] for i in range(size))
    return round_uint8(out)


def bicubic(hr: np.ndarray, scale: int) -> np.ndarray:
    """BI: MATLAB bicubic downscaling of the modcropped HR image (uint8 in, uint8 out)."""
    _check_uint8_image(hr, "HR image")
    _check_scale(scale)
    return bicubic_downscale(modcrop(hr, scale), scale)


def blur_downsample(hr: np.ndarray, scale: int, sigma: float = BD_SIGMA,
                    kernel_size: int = BD_KERNEL_SIZE) -> np.ndarray:
    """BD (RDN): 7x7 Gaussian blur (sigma 1.6, replicate border, uint8), then every s-th pixel
    starting at offset s // 2."""
    _check_uint8_image(hr, "HR image")
    _check_scale(scale)
    blurred = gaussian_blur(modcrop(hr, scale), kernel_size, sigma)
    o = scale // 2
    return np.ascontiguousarray(blurred[o::scale, o::scale])


def seed_for_name(name: str, seed: int = DN_SEED) -> int:
    """A stable per-image seed (crc32 of the name mixed with `seed`), so that every image of a set gets
    its own, reproducible noise instead of the same noise field."""
    return (zlib.crc32(name.encode("utf-8")) + 1_000_003 * int(seed)) % (2**32)


def bicubic_noise(hr: np.ndarray, scale: int, sigma: float = DN_SIGMA,
                  seed: int = DN_SEED) -> np.ndarray:
    """DN: BI, then Gaussian noise of std `sigma` (0..255 units) from `seed`, rounded, clipped, uint8."""
    lr = bicubic(hr, scale)
    rng = np.random.default_rng(seed)
    return round_uint8(lr.astype(np.float64) + sigma * rng.standard_normal(lr.shape))


def add_gaussian_noise(img: np.ndarray, sigma: float | Sequence[float], rng: np.random.Generator,
                       gray: bool = False) -> np.ndarray:
    """Additive white Gaussian noise for denoising (MSPAN-IR).

    sigma: a fixed std in 0..255 units, or `(lo, hi)` to draw one std per image uniformly from [lo, hi].
    gray: one noise field shared by all channels (grayscale noise) instead of independent colour noise.
    uint8 in -> uint8 out (rounded, clipped, as a stored noisy test image); float in (values in [0, 1])
    -> float32 out with std sigma / 255, not clipped (as DnCNN-style training adds it).
    """
    if not isinstance(img, np.ndarray) or img.ndim != 3:
        raise ValueError(f"add_gaussian_noise needs an HxWxC array, got {getattr(img, 'shape', img)!r}")
    if isinstance(sigma, (int, float, np.floating, np.integer)):
        std = float(sigma)
    else:
        lo, hi = (float(v) for v in sigma)
        if not 0 <= lo <= hi:
            raise ConfigError(f"noise sigma range must satisfy 0 <= lo <= hi, got {tuple(sigma)}")
        std = float(rng.uniform(lo, hi))
    if std < 0:
        raise ConfigError(f"noise sigma must be >= 0, got {std}")
    shape = (*img.shape[:2], 1) if gray else img.shape
    noise = rng.standard_normal(shape)
    if img.dtype == np.uint8:
        return round_uint8(img.astype(np.float64) + std * noise)
    return img.astype(np.float32) + np.float32(std / 255.0) * noise.astype(np.float32)


def rgb_to_gray(img: np.ndarray) -> np.ndarray:
    """MATLAB `rgb2gray` (ITU-R BT.601 luma) of a uint8 (H, W, 3) image: uint8 (H, W, 1). A gray image
    stored as three equal channels comes back unchanged (the weights sum to 1)."""
    _check_uint8_image(img, "rgb_to_gray input")
    if img.shape[2] == 1:
        return img
    return round_uint8(gray_plane(img))[..., None]


def degrade(hr: np.ndarray, scale: int, name: str, *, sigma: float = DN_SIGMA, seed: int = DN_SEED
            ) -> np.ndarray:
    """Makes the LR image of a uint8 HR image under degradation `name` ("BI" | "BD" | "DN").

    `sigma` and `seed` are the DN noise std and seed (ignored by BI and BD)."""
    key = str(name).upper()
    if key == "BI":
        return bicubic(hr, scale)
    if key == "BD":
        return blur_downsample(hr, scale)
    if key == "DN":
        return bicubic_noise(hr, scale, sigma=sigma, seed=seed)
    raise ConfigError(f"unknown degradation {name!r}; choose one of {list(DEGRADATIONS)}")
