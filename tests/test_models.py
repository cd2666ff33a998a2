"""Flax models: shapes, parameter counts, pixel shuffle order, jit/grad, bf16, MSPA, MSPAN-IR."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mspan_jax.config_base import model_config
from mspan_jax.models import IMDN, MSPA, MSPAN, MSPANIR, get_model, pixel_shuffle
from mspan_jax.models.complexity import abstract_variables, count_macs, count_params, sr_input_shape

TINY_MSPAN = dict(num_features=8, num_blocks=2, num_units=2)
TINY_IMDN = dict(num_features=16, num_modules=2)


def torch_pixel_shuffle_nchw(x: np.ndarray, s: int) -> np.ndarray:
    """A loop transcription of torch.nn.PixelShuffle's definition on NCHW arrays."""
    n, c, h, w = x.shape
    out = np.zeros((n, c // (s * s), h * s, w * s), x.dtype)
    for oc in range(c // (s * s)):
        for i in range(s):
            for j in range(s):
                out[:, oc, i::s, j::s] = x[:, oc * s * s + i * s + j]
    return out


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pixel_shuffle_matches_torch_definition(scale):
    x = np.random.default_rng(scale).normal(size=(2, 3 * scale * scale, 5, 7)).astype(np.float32)
    expected = torch_pixel_shuffle_nchw(x, scale)
    got = np.asarray(pixel_shuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), scale)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got, expected)


def test_pixel_shuffle_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="not divisible"):
        pixel_shuffle(jnp.zeros((1, 2, 2, 5)), 2)


@pytest.mark.parametrize("name,scale", [(n, s) for n in ("mspan", "imdn") for s in (2, 3, 4)])
def test_output_shapes_for_odd_sizes(name, scale):
    model = get_model(model_config(name, scale))
    x = jax.ShapeDtypeStruct((2, 17, 23, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    y = jax.eval_shape(model.apply, variables, x)
    assert y.shape == (2, 17 * scale, 23 * scale, 3) and y.dtype == jnp.float32


def test_full_size_parameter_counts():
    imdn = count_params(abstract_variables(get_model(model_config("imdn", 4)), (1, 8, 8, 3)))
    assert imdn == 715_176  # the official IMDN_x4.pth holds 715,176 parameters
    mspan = count_params(abstract_variables(get_model(model_config("mspan", 4)), (1, 8, 8, 3)))
    assert mspan == 490_512 and 350_000 <= mspan <= 700_000


def test_imdn_mult_adds_match_the_paper():
    # IMDN paper, Table: x4 40.9G, x2 158.8G Mult-Adds for a 1280x720 output.
    for scale, paper in ((4, 40.9), (2, 158.8)):
        macs = count_macs(get_model(model_config("imdn", scale)), sr_input_shape(scale))
        assert round(macs / 1e9, 1) == paper


def test_mspan_mult_adds_count_every_conv_of_the_architecture():
    """Every MSPAN conv runs at LR size, stride 1, so its mult-adds are LR pixels x kernel weights:
    the count must include MSPA's pixel branch, which the forward pass folds into fuse0."""
    for extra in ({}, {"mspa_fusion": "parallel"}, {"mspa_dilations": ()}):
        cfg = dict(model_config("mspan", 4), **extra)
        model = get_model(cfg)
        params = abstract_variables(model, (1, 8, 8, 3))["params"]
        kernels = sum(math.prod(leaf.shape) for path, leaf in
                      jax.tree_util.tree_flatten_with_path(params)[0] if path[-1].key == "kernel")
        shape = sr_input_shape(4)
        assert count_macs(model, shape) == shape[1] * shape[2] * kernels
    assert count_macs(get_model(model_config("mspan", 4)), sr_input_shape(4)) == 28_043_366_400


def test_tiny_models_run_and_differentiate_under_jit():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 9, 11, 3)), jnp.float32)
    for model in (MSPAN(scale=3, **TINY_MSPAN), IMDN(scale=2, **TINY_IMDN)):
        variables = model.init(jax.random.key(1), x)

        @jax.jit
        def loss_and_grad(params, model=model):
            def loss(p):
                y = model.apply({"params": p}, x)
                return jnp.mean(jnp.abs(y - jax.image.resize(x, y.shape, "bicubic")))
            return jax.value_and_grad(loss)(params)

        value, grads = loss_and_grad(variables["params"])
        norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
        assert np.isfinite(float(value)) and all(np.isfinite(norms)) and max(norms) > 0


def test_bfloat16_compute_is_finite_with_float32_params():
    model = MSPAN(scale=2, dtype=jnp.bfloat16, **TINY_MSPAN)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 12, 10, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    y = jax.jit(model.apply)(variables, x)
    assert y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))
    ref = MSPAN(scale=2, **TINY_MSPAN).apply(variables, x)
    assert float(jnp.max(jnp.abs(y - ref))) < 0.1  # bf16 follows the f32 result


def test_mspa_attention_lies_in_open_unit_interval():
    mspa = MSPA(features=8, dilations=(1, 2))
    x = jnp.asarray(np.random.default_rng(0).normal(scale=3.0, size=(2, 10, 12, 8)), jnp.float32)
    variables = mspa.init(jax.random.key(0), x)
    att = mspa.apply(variables, x, method=MSPA.attention)
    assert att.shape == x.shape
    assert float(att.min()) > 0.0 and float(att.max()) < 1.0
    np.testing.assert_allclose(mspa.apply(variables, x), x * att, rtol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_mspan_ir_returns_input_plus_residual(channels):
    model = MSPANIR(in_channels=channels, out_channels=channels, **TINY_MSPAN)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 13, 9, channels)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    y = model.apply(variables, x)
    assert y.shape == x.shape
    assert float(jnp.max(jnp.abs(y - x))) > 0  # a non-zero residual is added ...
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, v: jnp.zeros_like(v) if "out_conv" in jax.tree_util.keystr(path) else v, variables
    )
    np.testing.assert_array_equal(model.apply(zeroed, x), x)  # ... to exactly the input


def test_mask_makes_padded_input_equal_unpadded():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 7, 9, 3)), jnp.float32)
    padded = jnp.pad(x, ((0, 0), (0, 5), (0, 3), (0, 0)))
    mask = jnp.pad(jnp.ones((1, 7, 9, 1)), ((0, 0), (0, 5), (0, 3), (0, 0)))
    for model in (MSPAN(scale=2, **TINY_MSPAN), IMDN(scale=2, **TINY_IMDN)):
        variables = model.init(jax.random.key(0), x)
        full = model.apply(variables, x)
        cropped = model.apply(variables, padded, mask)[:, :14, :18]
        np.testing.assert_allclose(cropped, full, atol=1e-5)


def test_registry_builds_every_config_and_rejects_bad_keys():
    for name in ("mspan", "imdn", "mspan_ir"):
        assert get_model(model_config(name, 1 if name == "mspan_ir" else 4)).scale in (1, 4)
    bad = model_config("mspan", 4)
    bad.num_blocs = 3
    with pytest.raises(ValueError, match="num_blocs"):
        get_model(bad)
    with pytest.raises(ValueError, match="is not a model"):
        get_model(ml_collections.ConfigDict({"name": "edsr"}))
    with pytest.raises(ValueError, match="dtype"):
        get_model(ml_collections.ConfigDict({"name": "mspan", "dtype": "float8"}))
