"""TorchConv's fast forms equal lax's convolution: the depthwise shift-and-add with its own VJP
(dilations 1 and 2, masked like MSPA) and the 1x1 conv as a matmul, in outputs and gradients."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from mspan_jax.models.layers import TorchConv, apply_mask, depthwise_conv


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
