"""Layers shared by the SR models, all NHWC.

Each layer reproduces its PyTorch counterpart exactly, because converted
PyTorch weights must give the same outputs here.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

LRELU_SLOPE = 0.05  # IMDN's activation('lrelu', neg_slope=0.05)


def lrelu(x: Array) -> Array:
    """LeakyReLU with IMDN's negative slope 0.05."""
    return nn.leaky_relu(x, negative_slope=LRELU_SLOPE)


def apply_mask(x: Array, mask: Array | None) -> Array:
    """Zeroes `x` outside the valid region (mask is N,H,W,1 of 0/1); identity when mask is None.

    Padded batches stay equal to unpadded inference when every conv output is masked:
    the next conv then sees zeros beyond the image border, exactly like zero padding.
    """
    return x if mask is None else x * mask.astype(x.dtype)


def torch_conv(
    features: int,
    kernel_size: int = 3,
    *,
    dilation: int = 1,
    groups: int = 1,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """nn.Conv equal to PyTorch's Conv2d(k, padding=(k - 1) // 2 * dilation, stride 1, bias).

    Params stay float32 whatever the compute `dtype`.
    """
    pad = (kernel_size - 1) // 2 * dilation
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
        feature_group_count=groups,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def pixel_shuffle(x: Array, scale: int) -> Array:
    """NHWC pixel shuffle with torch.nn.PixelShuffle's channel order.

    torch: out[n, c, h*s + i, w*s + j] = in[n, c*s*s + i*s + j, h, w].
    """
    n, h, w, c = x.shape
    if c % (scale * scale):
        raise ValueError(f"pixel_shuffle: {c} channels are not divisible by scale^2={scale * scale}")
    out_c = c // (scale * scale)
    x = x.reshape(n, h, w, out_c, scale, scale)
    x = x.transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, h * scale, w * scale, out_c)


def masked_conv(
    x: Array,
    mask: Array | None,
    features: int,
    kernel_size: int = 3,
    *,
    dilation: int = 1,
    groups: int = 1,
    dtype: Dtype = jnp.float32,
    name: str,
) -> Array:
    """`torch_conv` applied to x, its output zeroed outside `mask`; call inside a compact method."""
    conv = torch_conv(features, kernel_size, dilation=dilation, groups=groups, dtype=dtype, name=name)
    return apply_mask(conv(x), mask)
