"""MATLAB-compatible bicubic `imresize`: the degradation every SR benchmark's LR images come from.

It follows MATLAB's imresize.m exactly: the cubic kernel with a = -0.5, antialiasing when
downscaling (kernel stretched by 1/scale), MATLAB's `contributions` indices with symmetric
boundary handling, one dimension at a time (the one with the smaller scale first), and for
uint8 input rounding (half away from zero) and clipping back to uint8 after each pass.
Bit-identical to MATLAB on Set5's published LR images (tests/test_imresize.py).
"""

from __future__ import annotations

import math

import numpy as np

from mspan_jax.errors import DataError

KERNEL_WIDTH = 4.0  # the cubic kernel's support


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def contributions(in_length: int, out_length: int, scale: float,
                  antialiasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's `contributions`: weights (out, P) float64 and 0-based input indices (out, P)."""
    if scale < 1 and antialiasing:
        def kernel(x):
            return scale * cubic(scale * x)
        width = KERNEL_WIDTH / scale
    else:
        kernel, width = cubic, KERNEL_WIDTH
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])  # symmetric
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def round_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's double -> uint8: round half away from zero, saturate."""
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def _resize_axis(img: np.ndarray, axis: int, out_length: int, scale: float) -> np.ndarray:
    """Resizes one axis of a float64 array: out[i] = sum_p w[i, p] * img[idx[i, p]], summed in tap
    order like MATLAB's imresizemex."""
    weights, indices = contributions(img.shape[axis], out_length, scale)
    moved = np.moveaxis(img, axis, 0)
    extra = (None,) * (moved.ndim - 1)
    out = np.zeros((out_length, *moved.shape[1:]), dtype=np.float64)
    for p in range(weights.shape[1]):
        out += weights[(slice(None), p, *extra)] * moved[indices[:, p]]
    return np.moveaxis(out, 0, axis)


def _output_length(scale: float, length: int) -> int:
    """ceil(scale * length), robust to 1/3 * 3 landing a hair above an integer."""
    value = scale * length
    nearest = round(value)
    return int(nearest) if abs(value - nearest) < 1e-9 else int(math.ceil(value))


def imresize(img: np.ndarray, scale: float | None = None,
             output_shape: tuple[int, int] | None = None) -> np.ndarray:
    """MATLAB `imresize(img, scale)` or `imresize(img, output_shape)` with bicubic interpolation.

    img is (H, W) or (H, W, C). uint8 in -> uint8 out (rounded after each pass, as MATLAB);
    float in -> float64 out, unrounded. With `scale`, both axes use it (output = ceil(scale * size));
    with `output_shape`, each axis uses out / in. Giving both uses `scale` for the kernel and
    `output_shape` for the size.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize needs an (H, W) or (H, W, C) image, got shape {img.shape}")
    if img.dtype != np.uint8 and img.dtype.kind != "f":
        raise ValueError(f"imresize supports uint8 and float images, got {img.dtype}")
    in_shape = img.shape[:2]
    if scale is None and output_shape is None:
        raise ValueError("imresize needs a scale or an output_shape")
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = tuple(output_shape) if output_shape is not None else tuple(
            _output_length(scale, n) for n in in_shape)
    else:
        out_shape = tuple(int(n) for n in output_shape)
        if min(out_shape) < 1:
            raise ValueError(f"imresize output_shape must be positive, got {output_shape}")
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    order = sorted(range(2), key=lambda axis: scales[axis])  # stable: rows first on a tie
    for axis in order:
        out = _resize_axis(out, axis, out_shape[axis], scales[axis])
        if is_uint8:
            out = round_uint8(out).astype(np.float64)
    return out.astype(np.uint8) if is_uint8 else out


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crops H and W down to multiples of `scale`, keeping the top-left (MATLAB img(1:end-mod, ...))."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _check_scale(scale: int) -> int:
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return int(scale)


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The benchmarks' BI degradation: imresize(modcrop(hr, s), 1/s, 'bicubic'), uint8."""
    scale = _check_scale(scale)
    hr = np.asarray(hr)
    if hr.dtype != np.uint8:
        raise ValueError(f"bicubic_downscale needs a uint8 image, got {hr.dtype}")
    if min(hr.shape[:2]) < scale:
        raise DataError(f"a {hr.shape[1]}x{hr.shape[0]} image is smaller than the scale {scale}")
    hr = modcrop(hr, scale)
    return imresize(hr, 1.0 / scale, output_shape=(hr.shape[0] // scale, hr.shape[1] // scale))


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: imresize(lr, s, 'bicubic'), uint8 of shape (s * H, s * W, ...)."""
    scale = _check_scale(scale)
    lr = np.asarray(lr)
    if lr.dtype != np.uint8:
        raise ValueError(f"bicubic_upscale needs a uint8 image, got {lr.dtype}")
    return imresize(lr, float(scale))
