"""How params start (`config.model.init`) and MSPAN's BLF activation (`config.model.blf_activation`):
"torch" draws every conv as PyTorch's Conv2d does, layer for layer against the freshly built PyTorch
reference; "flax" is `model.init` unchanged; records from before the keys existed keep meaning
Flax's init and ReLU projections; linear and ReLU BLFs both match their PyTorch reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SMALLEST, random_variables, require_torch, tiny_model_config

from mspan_jax.checkpoints.params import CheckpointError, check_model_config, model_config_dict
from mspan_jax.config_base import model_config
from mspan_jax.errors import ConfigError
from mspan_jax.models import layers
from mspan_jax.models.layers import init_scheme_params
from mspan_jax.models.registry import complete_record, get_model, init_variables

# One conv of every kind the models use, at widths with enough samples to judge a distribution:
# flax param path of MSPAN x4 with ESA (its strided 3x3) -> what it is.
MSPAN_CONVS = {
    "body/fea_conv": "3x3, 3 -> C",
    "body/IDDB1/AU1": "1x1",
    "body/IDDB1/CU1": "3x3",
    "body/IDDB1/esa/conv2": "3x3 stride 2, unpadded",
    "body/blf/proj_f1": "1x1 BLF projection",
    "upsampler": "the upsampler's 3x3 to 3 * 16",
}


def _leaf(tree, path: str):
    for part in path.split("/"):
        tree = tree[part]
    return tree


def _check_uniform(values: np.ndarray, bound: float, what: str) -> None:
    """`values` look like n draws of U(-bound, bound): inside the bound, reaching near it, and their
    standard deviation bound / sqrt(3) within 6 sampling errors (sd(s) / sigma ~ sqrt(1.8 / n))."""
    v = np.asarray(values, np.float64).ravel()
    n = v.size
    assert np.abs(v).max() <= bound * (1 + 1e-6), what
    assert np.abs(v).max() >= bound * (1 - 12 / n), what  # P(miss) = (1 - 12/n)^n ~ e^-12
    assert abs(v.std() / (bound / np.sqrt(3)) - 1) < 6 * np.sqrt(1.8 / n), (what, v.std(), bound)
    assert abs(v.mean()) < 6 * bound / np.sqrt(3 * n), what


@pytest.mark.slow
def test_torch_init_draws_each_conv_as_the_fresh_pytorch_reference():
    torch = require_torch()
    from mspan_jax.convert.rules import key_map
    from mspan_jax.convert.torch_reference import build_torch_model

    cfg = model_config("mspan", 4)
    cfg.update(num_features=32, num_blocks=2, num_units=1, attention="esa")
    model = get_model(cfg)
    x = jnp.zeros((1, 15, 15, 3))
    params = jax.jit(lambda: init_variables(cfg, model, jax.random.key(0), x))()["params"]
    torch.manual_seed(0)
    reference = build_torch_model(cfg.to_dict()).state_dict()
    names = key_map(cfg)
    for path, what in MSPAN_CONVS.items():
        kernel = np.asarray(_leaf(params, f"{path}/kernel"))
        weight = reference[names[f"{path}/kernel"]]
        fan_in = torch.nn.init._calculate_fan_in_and_fan_out(weight)[0]
        bound = 1 / np.sqrt(fan_in)
        assert layers.torch_conv_bound(kernel.shape) == pytest.approx(bound), what
        for label, ours, theirs in (("kernel", kernel, weight.numpy()),
                                    ("bias", _leaf(params, f"{path}/bias"),
                                     reference[names[f"{path}/bias"]].numpy())):
            if label == "bias" and theirs.size < 40:  # too few draws for a distribution
                assert np.abs(ours).max() <= bound * (1 + 1e-6), (what, label)
                continue
            _check_uniform(theirs, bound, f"PyTorch {path} {label} ({what})")
            _check_uniform(ours, bound, f"ours {path} {label} ({what})")


def test_torch_init_redraws_every_conv_and_keeps_layernorm():
    """MSPAN-IR (LayerNorm, MLP 1x1s): every conv leaf is redrawn within its bound, LayerNorm's
    leaves are kept as given (PyTorch's LayerNorm starts where Flax's does); "flax" keeps all.
    On drawn params, not `model.init`'s: its compile is the cost, and the slow test above runs it."""
    model = get_model(tiny_model_config("mspan_ir", 1, **SMALLEST))
    params = random_variables(model, seed=3)["params"]
    key = jax.random.key(3, impl="rbg")  # as training draws it
    assert init_scheme_params(params, "flax", key) is params
    torch_params = jax.jit(lambda p, k: init_scheme_params(p, "torch", k))(params, key)
    assert jax.tree.structure(torch_params) == jax.tree.structure(params)
    flat = jax.tree_util.tree_flatten_with_path(torch_params)[0]
    seen = set()
    for path, leaf in flat:
        names = [p.key for p in path]
        module = _leaf(torch_params, "/".join(names[:-1]))
        if names[-2] == "norm":
            np.testing.assert_array_equal(leaf, _leaf(params, "/".join(names)))
            seen.add("norm")
            continue
        bound = layers.torch_conv_bound(module["kernel"].shape)
        leaf = np.asarray(leaf)  # numpy: an eager jnp op compiles once per leaf shape
        assert np.abs(leaf).max() <= bound, names
        assert not np.any(leaf == _leaf(params, "/".join(names))), names  # drawn afresh
        seen.add(names[-1])
    assert seen == {"norm", "kernel", "bias"}


def test_init_key_is_validated_and_is_not_an_architecture_key():
    with pytest.raises(ConfigError, match="config.model.init='lecun'"):
        get_model(dict(tiny_model_config("imdn", 4), init="lecun"))
    for name in ("mspan", "mspan_ir", "imdn", "rfdn"):
        assert model_config(name, 4 if name != "mspan_ir" else 1).init == "torch", name
    saved = model_config_dict(tiny_model_config("imdn", 4, init="flax"))
    check_model_config("ckpt", saved, tiny_model_config("imdn", 4))  # init differs: still resumes
    del saved["init"]  # a record from before the key
    check_model_config("ckpt", saved, tiny_model_config("imdn", 4))


def test_a_record_without_blf_activation_means_relu():
    saved = model_config_dict(tiny_model_config("mspan", 4))
    del saved["blf_activation"], saved["init"]
    assert complete_record(saved)["blf_activation"] == "relu"
    assert complete_record(saved)["init"] == "flax"
    check_model_config("ckpt", saved, tiny_model_config("mspan", 4, blf_activation="relu"))
    with pytest.raises(CheckpointError, match="blf_activation='relu' \\(config: 'none'\\)"):
        check_model_config("ckpt", saved, tiny_model_config("mspan", 4))


def test_shipped_weights_record_the_network_they_were_trained_as():
    """x4 (retrained 2026-12-07): linear BLF and PyTorch's init; x2 and x3: the previous x4's."""
    import json
    from pathlib import Path

    for scale, start in ((2, ("relu", "flax")), (3, ("relu", "flax")), (4, ("none", "torch"))):
        meta = json.loads((Path(__file__).parents[1] / "weights" / f"mspan_x{scale}" / "model.json")
                          .read_text())
        assert (meta["model"]["blf_activation"], meta["model"]["init"]) == start, scale


def test_blf_activation_none_is_linear_and_relu_is_the_old_function():
    cfg = tiny_model_config("mspan", 2, num_units=1)  # BLF fuses 2 blocks or more
    assert cfg.blf_activation == "none"
    linear, relu = get_model(cfg), get_model(dict(cfg, blf_activation="relu"))
    x = jax.random.uniform(jax.random.key(0), (1, 8, 8, 3))
    variables = random_variables(linear, seed=1, std=0.3)
    assert not np.allclose(jax.jit(linear.apply)(variables, x), jax.jit(relu.apply)(variables, x))
    with pytest.raises(ConfigError, match="blf_activation='gelu'"):
        get_model(dict(cfg, blf_activation="gelu"))


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["none", "relu"])
def test_blf_activation_matches_the_pytorch_reference(activation):
    require_torch()

    from mspan_jax.convert.rules import key_map
    from mspan_jax.convert.torch_reference import max_abs_difference

    cfg = tiny_model_config("mspan", 2, blf_activation=activation)
    variables = random_variables(get_model(cfg), seed=2, std=0.3)
    flat = {p: np.asarray(_leaf(variables["params"], p)) for p in key_map(cfg)}
    state = {key_map(cfg)[p]: (np.transpose(v, (3, 2, 0, 1)) if v.ndim == 4 else v)
             for p, v in flat.items()}
    assert max_abs_difference(cfg, state, variables, input_hw=(8, 12)) < 1e-5


@pytest.mark.slow  # two compiles of an apply and its gradient (~8 s): an off-by-default speed option
def test_split_concat_1x1_equals_concat_then_1x1(monkeypatch):
    """The IDDB's 1x1s over concatenations as sums of one matmul per part: the same outputs and
    gradients within 1e-5, the same params."""
    cfg = tiny_model_config("mspan", 2, num_blocks=1, num_units=3)
    model = get_model(cfg)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    variables = random_variables(model, seed=1, std=0.3)

    def loss(params):
        return jnp.mean(jnp.abs(model.apply({"params": params}, x) - 0.5))

    results = {}
    for split in (False, True):
        monkeypatch.setattr(layers, "SPLIT_CONCAT_1X1", split)
        # A fresh jit per setting: the flag is read when the function is traced.
        results[split] = jax.jit(lambda p: (model.apply({"params": p}, x), jax.grad(loss)(p)))(
            variables["params"])
        assert jax.tree.structure(random_variables(model)) == jax.tree.structure(variables)
    np.testing.assert_allclose(results[True][0], results[False][0], atol=1e-5, rtol=0)
    for a, b in zip(jax.tree.leaves(results[True][1]), jax.tree.leaves(results[False][1]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
