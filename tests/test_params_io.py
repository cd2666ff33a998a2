"""Params checkpoints: round trip, refusal of another model/scale/width, garbage directories, damage."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import flip_bytes, max_tree_diff, random_variables
from conftest import tiny_model_config as tiny

from mspan_jax.checkpoints.params import (
    FORMAT_VERSION,
    CheckpointError,
    expected_variables,
    load_params,
    read_metadata,
    save_params,
)

init = functools.partial(random_variables, std=1.0)  # (cfg, seed): variables of N(0, 1), no compile


def test_round_trip_gives_identical_variables_and_metadata(tmp_path):
    cfg = tiny("mspan", 2)
    variables = init(cfg)
    out = tmp_path / "ckpt"
    save_params(out, variables, cfg)
    loaded = load_params(out, cfg)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(variables)
    leaves = zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables), strict=True)
    for a, b in leaves:
        assert isinstance(a, jax.Array)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    meta = read_metadata(out)
    assert meta["model"]["name"] == "mspan" and meta["model"]["scale"] == 2
    assert meta["model"]["num_features"] == 8
    assert not [p for p in tmp_path.iterdir() if p.name != "ckpt"], "temp dirs left behind"


def test_compute_dtype_does_not_matter(tmp_path):
    """Params are stored and loaded as float32 whatever the compute dtype of the config."""
    cfg = tiny("imdn", 3)
    variables = init(cfg)
    save_params(tmp_path / "c", variables, cfg)
    loaded = load_params(tmp_path / "c", tiny("imdn", 3, dtype="bfloat16"))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(loaded)} == {np.dtype(np.float32)}
    assert max_tree_diff(loaded, variables) == 0


def test_refuses_overwrite_unless_asked(tmp_path):
    cfg = tiny("mspan", 2)
    v0, v1 = init(cfg, 0), init(cfg, 1)
    save_params(tmp_path / "c", v0, cfg)
    with pytest.raises(CheckpointError, match="already exists"):
        save_params(tmp_path / "c", v1, cfg)
    save_params(tmp_path / "c", v1, cfg, overwrite=True)
    got = load_params(tmp_path / "c", cfg)
    np.testing.assert_array_equal(
        np.asarray(got["params"]["upsampler"]["kernel"]), np.asarray(v1["params"]["upsampler"]["kernel"])
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


@pytest.mark.parametrize(
    "other, message",
    [
        (tiny("imdn", 2), "checkpoint is mspan x2 but config.model is imdn x2; pass the matching"),
        (tiny("mspan", 4), "checkpoint is mspan x2 but config.model is mspan x4"),
        (tiny("mspan", 2, num_features=16), "num_features=8 \\(config: 16\\)"),
    ],
)
def test_refuses_another_model_scale_or_width(tmp_path, other, message):
    cfg = tiny("mspan", 2)
    save_params(tmp_path / "c", init(cfg), cfg)
    with pytest.raises(CheckpointError, match=message) as info:
        load_params(tmp_path / "c", other)
    assert str(tmp_path / "c") in str(info.value) and "\n" not in str(info.value)


def test_refuses_tree_that_does_not_fit(tmp_path):
    cfg = tiny("mspan", 2)
    variables = init(cfg)
    variables["params"]["extra"] = {"kernel": jnp.zeros((1, 1, 8, 8))}
    save_params(tmp_path / "c", variables, cfg)
    with pytest.raises(CheckpointError, match=r"unexpected \[1\]: params/extra/kernel"):
        load_params(tmp_path / "c", cfg)


def test_garbage_directories_are_refused(tmp_path):
    cfg = tiny("mspan", 2)
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_params(tmp_path / "missing", cfg)
    (tmp_path / "file").write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_params(tmp_path / "file", cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a params checkpoint"):
        load_params(tmp_path / "empty", cfg)
    bad = tmp_path / "bad"
    (bad / "params").mkdir(parents=True)
    (bad / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable metadata"):
        load_params(bad, cfg)
    (bad / "model.json").write_text(json.dumps(
        {"format": "mspan_jax.params", "format_version": FORMAT_VERSION, "model": dict(cfg.to_dict())}
    ))
    with pytest.raises(CheckpointError, match="unreadable params checkpoint"):
        load_params(bad, cfg)


def test_flipped_bytes_are_caught_naming_the_array(tmp_path):
    # Width 32: its 3x3 kernels (37 KB) fill the data file, so the flipped bytes land in an array
    # (at width 8 most arrays are small enough to live in OCDBT's own checked nodes).
    cfg = tiny("mspan", 2, num_features=32)
    variables = init(cfg)
    save_params(tmp_path / "c", variables, cfg)
    flip_bytes(tmp_path / "c")
    # orbax alone reads the damaged file without complaint: the values are silently different.
    with ocp.StandardCheckpointer() as checkpointer:
        raw = checkpointer.restore(tmp_path / "c" / "params", expected_variables(cfg))
    flat_raw = jax.tree_util.tree_flatten_with_path(raw)[0]
    changed = ["/".join(k.key for k in path) for (path, a), b in
               zip(flat_raw, jax.tree_util.tree_leaves(variables), strict=True)
               if not np.array_equal(np.asarray(a), b)]
    assert changed, "the flipped bytes changed no array: the test damaged nothing"
    with pytest.raises(CheckpointError) as info:
        load_params(tmp_path / "c", cfg)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'c'}: array {changed[0]} does not match its recorded "
                              "checksum"), message
    assert "\n" not in message


def test_a_checkpoint_without_checksums_is_refused(tmp_path):
    cfg = tiny("mspan", 2)
    save_params(tmp_path / "c", init(cfg), cfg)
    meta = json.loads((tmp_path / "c" / "model.json").read_text())
    del meta["checksums"]
    (tmp_path / "c" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="records no checksums"):
        load_params(tmp_path / "c", cfg)


def test_a_checkpoint_from_before_checksums_loads_with_a_warning(tmp_path):
    cfg = tiny("mspan", 2)
    variables = init(cfg)
    save_params(tmp_path / "c", variables, cfg)
    meta = json.loads((tmp_path / "c" / "model.json").read_text())
    del meta["checksums"]
    meta["format_version"] = 1  # as written before checksums existed
    (tmp_path / "c" / "model.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="loaded unverified"):
        loaded = load_params(tmp_path / "c", cfg)
    assert all(np.array_equal(np.asarray(a), b) for a, b in
               zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables), strict=True))
