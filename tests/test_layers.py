"""Layers equal their references: TorchConv's fast forms (the depthwise shift-and-add with its own
VJP at dilations 1 and 2, masked; the 1x1 conv as a matmul) equal lax's convolution in outputs and
gradients; its stride-2 unpadded form, Pool, GlobalAvgPool and resize_bilinear equal PyTorch's."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_torch
from jax import lax

from mspan_jax.models.layers import (
    GlobalAvgPool,
    Pool,
    TorchConv,
    apply_mask,
    depthwise_conv,
    resize_bilinear,
)


def lax_conv(x, kernel, bias, dilation=1, groups=1):
    """PyTorch-style 'same' conv through lax's (grouped) convolution: the reference."""
    pad = (kernel.shape[0] - 1) // 2 * dilation
    y = lax.conv_general_dilated(x, kernel, (1, 1), ((pad, pad), (pad, pad)),
                                 rhs_dilation=(dilation, dilation),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 feature_group_count=groups, precision=lax.Precision.HIGHEST)
    return y + bias


def random_inputs(seed, shape, kernel_shape):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    bias = jnp.asarray(rng.normal(size=kernel_shape[-1:]), jnp.float32)
    mask = np.zeros(shape[:3] + (1,), np.float32)
    mask[0, :7, :9] = 1  # a padded batch: image 0 is 7x9 inside 11x13, image 1 fills it
    mask[1] = 1
    cotangent = jnp.asarray(rng.normal(size=shape[:3] + kernel_shape[-1:]), jnp.float32)
    return x, kernel, bias, jnp.asarray(mask), cotangent


def assert_same_value_and_grads(fast, reference, args, cotangent):
    """Outputs and the VJP for every argument agree to float32 rounding."""
    out, vjp = jax.vjp(fast, *args)
    ref_out, ref_vjp = jax.vjp(reference, *args)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(vjp(cotangent)), jax.tree.leaves(ref_vjp(cotangent)),
                         strict=True):
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale + 1e-6)


@pytest.mark.parametrize("dilation", [1, 2])
def test_depthwise_conv_equals_grouped_lax_conv_with_masks(dilation):
    x, kernel, bias, mask, cotangent = random_inputs(dilation, (2, 11, 13, 6), (3, 3, 1, 6))

    def fast(x, kernel, bias):
        return apply_mask(depthwise_conv(apply_mask(x, mask), kernel, dilation) + bias, mask)

    def reference(x, kernel, bias):
        return apply_mask(lax_conv(apply_mask(x, mask), kernel, bias, dilation, groups=6), mask)

    assert_same_value_and_grads(jax.jit(fast), reference, (x, kernel, bias), cotangent)


def test_depthwise_conv_gradients_under_jit_and_bfloat16():
    x, kernel, bias, _, cotangent = random_inputs(3, (2, 11, 13, 6), (3, 3, 1, 6))
    grad = jax.jit(jax.grad(lambda x, k: jnp.sum(depthwise_conv(x, k, 2) * cotangent), argnums=(0, 1)))
    ref = jax.grad(lambda x, k: jnp.sum(lax_conv(x, k, 0.0, 2, groups=6) * cotangent), argnums=(0, 1))
    for got, want in zip(grad(x, kernel), ref(x, kernel), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    bf16 = jax.jit(jax.grad(lambda x, k: jnp.sum(depthwise_conv(x.astype(jnp.bfloat16),
                                                                 k.astype(jnp.bfloat16), 2)
                                                  .astype(jnp.float32) * cotangent), argnums=1))
    got = bf16(x, kernel)
    assert got.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(got)))
    np.testing.assert_allclose(got, ref(x, kernel)[1], rtol=0.05, atol=0.05 * scale)


@pytest.mark.parametrize("kernel_size,dilation,groups", [(1, 1, 1), (3, 1, 1), (3, 2, 6), (3, 1, 6)])
def test_torch_conv_module_equals_lax_conv(kernel_size, dilation, groups):
    """Every path of TorchConv (matmul, lax conv, depthwise) against lax, with nn.Conv's params."""
    x, _, _, _, _ = random_inputs(4, (2, 11, 13, 6), (3, 3, 1, 6))
    conv = TorchConv(6, kernel_size, dilation, groups)
    params = conv.init(jax.random.key(0), x)["params"]
    pad = (kernel_size - 1) // 2 * dilation
    reference = nn.Conv(6, (kernel_size, kernel_size), padding=[(pad, pad)] * 2,
                        kernel_dilation=(dilation, dilation), feature_group_count=groups)
    ref_params = reference.init(jax.random.key(0), x)["params"]
    # same names, shapes and initial values as nn.Conv: checkpoints of either load into the other
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref_params)
    np.testing.assert_array_equal(params["kernel"], ref_params["kernel"])
    cotangent = jnp.asarray(np.random.default_rng(5).normal(size=(2, 11, 13, 6)), jnp.float32)
    assert_same_value_and_grads(lambda p, x: conv.apply({"params": p}, x),
                                lambda p, x: reference.apply({"params": p}, x), (params, x), cotangent)


def test_torch_conv_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="not divisible by groups=4"):
        TorchConv(8, 3, groups=4).init(jax.random.key(0), jnp.zeros((1, 5, 5, 6)))


def torch_pool_nchw(x: np.ndarray, kind: str, k: int, s: int) -> np.ndarray:
    """PyTorch's AvgPool2d / MaxPool2d(k, s) without padding (floor mode) by its definition."""
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, c, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * s:i * s + k, j * s:j * s + k]
            out[:, :, i, j] = window.mean((2, 3)) if kind == "avg" else window.max((2, 3))
    return out


@pytest.mark.parametrize("kind,window,stride,hw", [("avg", 2, None, (9, 11)), ("avg", 4, None, (9, 14)),
                                                   ("max", 7, 3, (15, 17)), ("avg", 3, 2, (8, 9)),
                                                   ("max", 2, None, (5, 4))])
def test_pool_equals_torch_floor_mode(kind, window, stride, hw):
    x = np.random.default_rng(window).normal(size=(2, *hw, 3)).astype(np.float32)
    got = Pool(kind, window, stride).apply({}, jnp.asarray(x))
    want = torch_pool_nchw(x.transpose(0, 3, 1, 2), kind, window, stride or window)
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind,window,stride", [("max", 7, 3), ("avg", 3, 2), ("avg", 2, None)])
def test_pool_differentiates_under_jit(kind, window, stride):
    """ESA's overlapping 7x7/3 max pooling once failed to linearize under jit: the gradient of
    sum(pool(x)) is each window's arg-max (max) or 1/k^2 per covering window (avg), as PyTorch's."""
    x = np.random.default_rng(1).normal(size=(1, 15, 16, 2)).astype(np.float32)
    torch = require_torch()
    grad = np.asarray(jax.jit(jax.grad(lambda v: Pool(kind, window, stride).apply({}, v).sum()))(x))
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    pool = (torch.nn.MaxPool2d if kind == "max" else torch.nn.AvgPool2d)(window, stride or window)
    pool(xt).sum().backward()
    np.testing.assert_allclose(grad, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-7)


def test_pool_refuses_a_map_smaller_than_its_window():
    with pytest.raises(ValueError, match="3x8, smaller than the window"):
        Pool("avg", 4).apply({}, jnp.zeros((1, 3, 8, 2)))


def test_global_avg_pool_averages_the_valid_region():
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 3)).astype(np.float32)
    mask = np.zeros((2, 6, 5, 1), np.float32)
    mask[0, :4, :3] = 1
    mask[1] = 1
    got = np.asarray(GlobalAvgPool().apply({}, jnp.asarray(x), jnp.asarray(mask)))
    np.testing.assert_allclose(got[0, 0, 0], x[0, :4, :3].mean((0, 1)), rtol=1e-5)
    np.testing.assert_allclose(got[1, 0, 0], x[1].mean((0, 1)), rtol=1e-5)


@pytest.mark.parametrize("size_in,size_out", [((5, 7), (11, 3)), ((4, 4), (8, 8)), ((7, 3), (3, 7)),
                                              ((6, 5), (6, 5))])
def test_resize_bilinear_equals_torch_interpolate(size_in, size_out):
    torch = require_torch()
    x = np.random.default_rng(sum(size_in)).normal(size=(2, 3, *size_in)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=size_out, mode="bilinear",
                                           align_corners=False).numpy()
    got = np.asarray(resize_bilinear(jnp.asarray(x.transpose(0, 2, 3, 1)), size_out))
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, rtol=1e-5, atol=1e-6)


def test_torch_conv_stride_2_padding_0_equals_torch():
    """ESA's conv2: PyTorch's Conv2d(k=3, stride=2, padding=0) on odd and even sizes."""
    torch = require_torch()
    for hw in ((15, 16), (9, 9)):
        x = np.random.default_rng(hw[1]).normal(size=(1, *hw, 4)).astype(np.float32)
        conv = TorchConv(5, 3, stride=2, padding=0)
        params = conv.init(jax.random.key(0), x)["params"]
        reference = torch.nn.Conv2d(4, 5, 3, stride=2, padding=0)
        with torch.no_grad():
            kernel = np.array(params["kernel"]).transpose(3, 2, 0, 1).copy()
            reference.weight.copy_(torch.from_numpy(kernel))
            reference.bias.copy_(torch.from_numpy(np.array(params["bias"]) + 0.5))
            want = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        params = {"kernel": params["kernel"], "bias": params["bias"] + 0.5}
        got = np.asarray(conv.apply({"params": params}, jnp.asarray(x))).transpose(0, 3, 1, 2)
        assert got.shape == want.shape == (1, 5, (hw[0] - 3) // 2 + 1, (hw[1] - 3) // 2 + 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
