"""Layers shared by the SR models, all NHWC.

Each layer reproduces its PyTorch counterpart exactly, because converted
PyTorch weights must give the same outputs here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

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


def _shift_add(x: Array, kernel: Array, dilation: int) -> Array:
    """sum_ij shift_ij(x) * kernel[i, j, 0]: the depthwise 'same' conv as k*k fused taps."""
    k = kernel.shape[0]
    _, h, w, _ = x.shape
    pad = (k - 1) // 2 * dilation
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = None
    for i in range(k):
        for j in range(k):
            window = xp[:, i * dilation:i * dilation + h, j * dilation:j * dilation + w, :]
            out = window * kernel[i, j, 0] if out is None else out + window * kernel[i, j, 0]
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv(x: Array, kernel: Array, dilation: int = 1) -> Array:
    """Depthwise k x k conv without bias ('same' zero padding, stride 1, odd k); kernel is
    (k, k, 1, C), nn.Conv's grouped layout.

    A sum of k*k shifted, per-channel scaled copies of x, with a hand-written VJP: the input
    gradient is the same sum over the output gradient with the flipped kernel, the kernel gradient
    one float32-accumulated variadic reduction of the k*k tap products. Equals lax's grouped
    convolution (feature_group_count=C) to float32 rounding, outputs and gradients, but XLA fuses
    it into a few elementwise loops where its grouped convolution is slow: forward + backward
    ~2-3x faster on CPU, up to ~80x on GPU at dilation 2 (docs/performance.md).
    """
    return _shift_add(x, kernel, dilation)


def _depthwise_fwd(x: Array, kernel: Array, dilation: int) -> tuple[Array, tuple[Array, Array]]:
    return _shift_add(x, kernel, dilation), (x, kernel)


def _depthwise_bwd(dilation: int, res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    x, kernel = res
    k = kernel.shape[0]
    _, h, w, _ = x.shape
    dx = _shift_add(g, kernel[::-1, ::-1], dilation)
    pad = (k - 1) // 2 * dilation
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    prods = [(xp[:, i * dilation:i * dilation + h, j * dilation:j * dilation + w, :] * g)
             .astype(jnp.float32) for i in range(k) for j in range(k)]
    # One variadic reduction for all k*k taps: XLA fuses the shifted windows into a single pass.
    # k*k separate sums would each go to a library reduce that needs its window materialized
    # (k*k copies of x per conv; ~10% of MSPAN's CPU step, docs/performance.md). It sums each
    # image's H and W first, leaving (N, C) per tap to a second, small sum: XLA:CPU splits that
    # reduction across images and threads, ~2x faster than reducing (N, H, W) at once.
    taps = lax.reduce(prods, [jnp.float32(0)] * len(prods),
                      lambda a, b: [u + v for u, v in zip(a, b, strict=True)], (1, 2))
    return dx, jnp.stack(taps).sum(1).reshape(kernel.shape).astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


def _conv_params(module: nn.Module, k: int, cin_per_group: int, features: int) -> tuple[Array, Array]:
    """nn.Conv's float32 `kernel` (k, k, in/groups, features) and `bias` (features,) of `module`."""
    kernel = module.param("kernel", nn.initializers.lecun_normal(), (k, k, cin_per_group, features),
                          jnp.float32)
    bias = module.param("bias", nn.initializers.zeros_init(), (features,), jnp.float32)
    return kernel, bias


# How a model's parameters start (`config.model.init`): "flax" is Flax's defaults (LeCun normal
# kernels, zero biases), "torch" PyTorch's Conv2d.reset_parameters (kernels kaiming_uniform with
# a=sqrt(5), i.e. U(+-1/sqrt(fan_in)), biases U(+-1/sqrt(fan_in))), which the models ported from
# PyTorch code (IMDN, RFDN, MSPAN built on IMDN's code) were trained from. LayerNorm starts at
# scale 1, bias 0 in both frameworks.
INIT_SCHEMES = ("torch", "flax")


def torch_conv_bound(kernel_shape: tuple[int, ...]) -> float:
    """PyTorch's Conv2d init bound 1/sqrt(fan_in) for a (k, k, in/groups, out) kernel: fan_in is
    in/groups * k * k, as torch's `_calculate_fan_in_and_fan_out` counts it."""
    fan_in = 1
    for d in kernel_shape[:-1]:
        fan_in *= int(d)
    return 1.0 / fan_in**0.5


def torch_init(params: Any, key: Array) -> Any:
    """`params` with every conv's `kernel` (4-D) and its sibling `bias` redrawn as PyTorch's Conv2d
    initializes them: U(+-1/sqrt(fan_in)) both (`torch_conv_bound`); other leaves (LayerNorm's
    scale and bias) are kept, being equal in both frameworks. Shapes and names do not change.

    Leaves of one shape and bound are drawn by one `uniform` call: a model has a few such groups
    but hundreds of leaves, and XLA:CPU compiles an RNG op per draw (27 s for MSPAN x4 drawn leaf
    by leaf, on a 2-core CPU)."""
    groups: dict[tuple[Any, ...], list[tuple[tuple[str, ...], str]]] = {}

    def find(tree: Any, path: tuple[str, ...]) -> None:
        if not hasattr(tree, "items"):
            return
        if "kernel" in tree and getattr(tree["kernel"], "ndim", 0) == 4:
            bound = torch_conv_bound(tree["kernel"].shape)
            for name in ("kernel", "bias"):
                if name in tree:
                    leaf = tree[name]
                    group = (tuple(leaf.shape), jnp.dtype(leaf.dtype).name, bound)
                    groups.setdefault(group, []).append((path, name))
        for k, v in tree.items():
            find(v, (*path, k))

    find(params, ())
    drawn: dict[tuple[tuple[str, ...], str], Array] = {}
    for i, ((shape, dtype, bound), members) in enumerate(groups.items()):
        values = jax.random.uniform(jax.random.fold_in(key, i), (len(members), *shape), dtype,
                                    -bound, bound)
        drawn.update({member: values[j] for j, member in enumerate(members)})

    def redraw(tree: Any, path: tuple[str, ...]) -> Any:
        if not hasattr(tree, "items"):
            return tree
        return {k: drawn[(path, k)] if (path, k) in drawn else redraw(v, (*path, k))
                for k, v in tree.items()}

    return redraw(params, ())


def init_scheme_params(params: Any, scheme: str, key: Array) -> Any:
    """Flax-initialized `params` under `scheme` (one of INIT_SCHEMES): unchanged for "flax",
    `torch_init` for "torch"."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme {scheme!r}; choose one of {list(INIT_SCHEMES)}")
    return params if scheme == "flax" else torch_init(params, key)


def matmul_1x1(x: Array, kernel: Array) -> Array:
    """A 1x1 conv's multiply: x (..., in) times kernel (1, 1, in, out) or (in, out).

    One 2-D matmul over the flattened pixels: ~10% less process-CPU time per MSPAN x4 train step
    than `dot_general` contracting x's last axis in place (its gradients lower worse on XLA:CPU;
    docs/performance.md). Outputs are identical; the kernel gradient differs by summation order.
    """
    kernel = kernel.reshape(kernel.shape[-2:])
    return jnp.dot(x.reshape(-1, x.shape[-1]), kernel).reshape(*x.shape[:-1], kernel.shape[-1])


# Whether a 1x1 conv over a concatenation (the IDDB's AUs and fuse) runs as one matmul per part,
# summed, with the kernel sliced to each part, instead of concatenating first: the same function
# and params (docs/performance.md has the speed of each).
SPLIT_CONCAT_1X1 = False


def matmul_1x1_parts(parts: Sequence[Array], kernel: Array) -> Array:
    """`matmul_1x1(concatenate(parts, -1), kernel)` as a sum of one matmul per part, each with its
    rows of the (1, 1, in, out) kernel: the concatenated input is never built."""
    out, start = None, 0
    for part in parts:
        c = part.shape[-1]
        y = matmul_1x1(part, kernel[:, :, start:start + c])
        out, start = (y if out is None else out + y), start + c
    return out


class TorchConv(nn.Module):
    """PyTorch's Conv2d(in, features, k, stride, padding, dilation, groups, bias) on NHWC input;
    `padding` None is 'same' for stride 1, (k - 1) // 2 * dilation.

    Parameters are nn.Conv's: `kernel` (k, k, in/groups, features) and `bias` (features,), float32
    whatever the compute `dtype`, same initializers, so checkpoints and converted weights load
    unchanged. The computation is the fastest form XLA has for the case (docs/performance.md):
    a 1x1 conv is a matmul (its weight gradient as a conv is ~6x slower on CPU), a depthwise
    conv is `depthwise_conv`, anything else is lax's convolution.
    """

    features: int
    kernel_size: int = 3
    dilation: int = 1
    groups: int = 1
    dtype: Dtype = jnp.float32
    stride: int = 1
    padding: int | None = None

    @nn.compact
    def __call__(self, x: Array | Sequence[Array]) -> Array:
        """`x` one array, or a sequence of arrays that is the conv's input concatenated on channels
        (a 1x1 conv then sums one matmul per part, `SPLIT_CONCAT_1X1`)."""
        parts = [x] if isinstance(x, jax.Array | np.ndarray) else list(x)
        k, cin, groups = self.kernel_size, sum(p.shape[-1] for p in parts), self.groups
        if cin % groups or self.features % groups:
            raise ValueError(f"TorchConv: {cin} -> {self.features} channels are not divisible by "
                             f"groups={groups}")
        kernel, bias = _conv_params(self, k, cin // groups, self.features)
        parts = [p.astype(self.dtype) for p in parts]
        kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
        pad = (k - 1) // 2 * self.dilation if self.padding is None else self.padding
        same = self.stride == 1 and pad == (k - 1) // 2 * self.dilation
        if k == 1 and groups == 1 and same and len(parts) > 1 and SPLIT_CONCAT_1X1:
            return matmul_1x1_parts(parts, kernel) + bias
        x = parts[0] if len(parts) == 1 else jnp.concatenate(parts, -1)
        if k == 1 and groups == 1 and same:
            y = matmul_1x1(x, kernel)
        elif groups == cin == self.features and same:
            y = depthwise_conv(x, kernel, self.dilation)
        else:
            s = self.stride
            y = lax.conv_general_dilated(x, kernel, (s, s), ((pad, pad), (pad, pad)),
                                         rhs_dilation=(self.dilation, self.dilation),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=groups)
        return y + bias


def torch_conv(
    features: int,
    kernel_size: int = 3,
    *,
    dilation: int = 1,
    groups: int = 1,
    dtype: Dtype = jnp.float32,
    stride: int = 1,
    padding: int | None = None,
    name: str | None = None,
) -> TorchConv:
    """A `TorchConv`, PyTorch's Conv2d(k, stride, padding (None: 'same'), dilation, groups, bias).

    Params stay float32 whatever the compute `dtype`.
    """
    return TorchConv(features, kernel_size, dilation, groups, dtype, stride, padding, name=name)


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
    x: Array | Sequence[Array],
    mask: Array | None,
    features: int,
    kernel_size: int = 3,
    *,
    dilation: int = 1,
    groups: int = 1,
    dtype: Dtype = jnp.float32,
    name: str,
) -> Array:
    """`torch_conv` applied to x (an array, or the parts of its channel concatenation), its output
    zeroed outside `mask`; call inside a compact method."""
    conv = torch_conv(features, kernel_size, dilation=dilation, groups=groups, dtype=dtype, name=name)
    return apply_mask(conv(x), mask)


class Pool(nn.Module):
    """PyTorch's AvgPool2d / MaxPool2d(window, stride) without padding (floor mode), NHWC; a
    module so that `complexity.count_ops` sees it."""

    kind: str  # "avg" | "max"
    window: int
    stride: int | None = None  # None: the window

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k, s = self.window, self.stride or self.window
        _, h, w, _ = x.shape
        if isinstance(h, int) and isinstance(w, int) and (h < k or w < k):  # else symbolic (export)
            raise ValueError(f"{self.kind} pooling by {k}: the feature map is {h}x{w}, smaller than "
                             "the window; give the model a larger input")
        if s == k:  # non-overlapping windows: a reshape, exact and fast
            oh, ow = h // k, w // k
            x = x[:, :oh * k, :ow * k].reshape(x.shape[0], oh, k, ow, k, x.shape[-1])
            return x.mean((2, 4)) if self.kind == "avg" else x.max((2, 4))
        # The init value must be a Python scalar: JAX then lowers this to its differentiable
        # window sum / max. A jnp array here made ESA's max pooling fail to differentiate under jit.
        init, op = (0.0, lax.add) if self.kind == "avg" else (-float("inf"), lax.max)
        y = lax.reduce_window(x, init, op, (1, k, k, 1), (1, s, s, 1), "VALID")
        return y / (k * k) if self.kind == "avg" else y


class GlobalAvgPool(nn.Module):
    """Per-channel mean over the valid region (mask N,H,W,1 of 0/1, or None), shape N,1,1,C:
    PyTorch's AdaptiveAvgPool2d(1) on the unpadded image."""

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        if mask is None:
            return jnp.mean(x, axis=(1, 2), keepdims=True)
        m = mask.astype(x.dtype)
        return jnp.sum(x * m, axis=(1, 2), keepdims=True) / jnp.sum(m, axis=(1, 2), keepdims=True)


def _bilinear_taps(out_size: int, in_size: int) -> tuple[Array, Array, Array]:
    """PyTorch's bilinear source taps for align_corners=False and an explicit output size, in
    float32 as PyTorch computes them: src = (dst + 0.5) * in / out - 0.5, clamped at 0; returns
    (i0, i1, weight of i1). Sizes may be symbolic (`jax.export`)."""
    ratio = jnp.asarray(in_size, jnp.float32) / jnp.asarray(out_size, jnp.float32)
    src = jnp.maximum((jnp.arange(out_size, dtype=jnp.float32) + 0.5) * ratio - 0.5, 0.0)
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), in_size - 1)
    i1 = jnp.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0


def _slice(x: Array, axis: int, start: int, stop: int) -> Array:
    return lax.slice_in_dim(x, start, stop, axis=axis)


def _upsample2_axis(x: Array, axis: int) -> Array:
    """`resize_bilinear` doubling one axis: PyTorch's taps are then fixed, out[2i] = x[i-1] / 4 +
    3 x[i] / 4 (x[0] at i = 0) and out[2i+1] = 3 x[i] / 4 + x[i+1] / 4 (x[i+1] clamped to the
    last), so two blends of shifted slices interleaved; the same products and sums as the gathers.
    """
    n = x.shape[axis]
    even = jnp.concatenate([_slice(x, axis, 0, 1),
                            _slice(x, axis, 0, n - 1) * 0.25 + _slice(x, axis, 1, n) * 0.75], axis)
    after = jnp.concatenate([_slice(x, axis, 1, n), _slice(x, axis, n - 1, n)], axis)
    odd = x * 0.75 + after * 0.25
    shape = list(x.shape)
    shape[axis] = 2 * n
    return jnp.stack([even, odd], axis + 1).reshape(shape)


def resize_bilinear(x: Array, size: tuple[int, int]) -> Array:
    """NHWC `F.interpolate(x, size, mode='bilinear', align_corners=False)`, per axis: doubling
    (MSPA's upsampling of its pooled maps wherever the sizes divide evenly) blends shifted slices
    (`_upsample2_axis`; forward ~0.5x, forward + gradient ~0.35-0.4x the gathers' time on CPU,
    docs/performance.md); any other size takes two gathers and a linear blend."""
    for axis, out_size in ((1, size[0]), (2, size[1])):
        in_size = x.shape[axis]
        if in_size == out_size:
            continue
        if isinstance(in_size, int) and isinstance(out_size, int) and out_size == 2 * in_size:
            x = _upsample2_axis(x, axis)
            continue
        i0, i1, w = _bilinear_taps(out_size, in_size)
        shape = [1] * x.ndim
        shape[axis] = out_size
        w = w.astype(x.dtype).reshape(shape)
        x = jnp.take(x, i0, axis=axis) * (1 - w) + jnp.take(x, i1, axis=axis) * w
    return x
