"""Checkpoints that carry their model: `Upscaler.from_checkpoint` (tiled, batched, as the CLI) and
scripts/upscale.py / evaluate.py with --checkpoint and no --config; a given --config is checked."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_script, run_script_subprocess, tiny_model_config

from mspan_jax import Upscaler
from mspan_jax.checkpoints.params import CheckpointError, save_params
from mspan_jax.checkpoints.resolve import checkpoint_config, load_weights, recorded_model_config
from mspan_jax.config_base import sr_config
from mspan_jax.data.images import read_image, write_image
from mspan_jax.models import get_model
from mspan_jax.train.checkpoint import TrainCheckpoints

RNG = np.random.default_rng(0)


def _random_variables(model_config) -> dict:
    shapes = jax.eval_shape(get_model(model_config).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.1).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(params checkpoint dir, model config, variables) of a tiny MSPAN x2 with random weights."""
    cfg = tiny_model_config("mspan", 2, num_blocks=1, num_units=1)
    variables = _random_variables(cfg)
    directory = tmp_path_factory.mktemp("ckpt") / "tiny_x2"
    save_params(directory, variables, cfg)
    return directory, cfg, variables


def _whole(cfg, variables, lr: np.ndarray) -> np.ndarray:
    return np.asarray(get_model(cfg).apply(variables, jnp.asarray(lr[None], jnp.float32)))[0]


def test_upscaler_tiles_and_batches_like_the_model(tmp_path):
    # Tiny MSPAN without attention sees 4 LR pixels around each pixel, so 6 pixels of tile context
    # are exact (MSPA's pooled context would see the tile border: tests/test_evaluation.py).
    cfg = tiny_model_config("mspan", 2, num_blocks=1, num_units=1, attention="none")
    variables = _random_variables(cfg)
    save_params(tmp_path / "tiny_x2", variables, cfg)
    up = Upscaler.from_checkpoint(tmp_path / "tiny_x2", tile=24, tile_overlap=6)
    assert up.scale == 2
    batch = RNG.integers(0, 256, (2, 20, 40, 3), dtype=np.uint8)  # 40 > tile: tiled
    sr = up.upscale(batch)
    assert sr.shape == (2, 40, 80, 3) and sr.dtype == np.uint8
    for lr, out in zip(batch, sr, strict=True):
        expected = np.round(np.clip(_whole(cfg, variables, lr / np.float32(255)), 0, 1) * 255)
        np.testing.assert_array_equal(out, expected.astype(np.uint8))
    assert up.predictor.program_shapes == {(1, 24, 24, 3)}  # every tile of both images, padded

    image = batch[0].astype(np.float32) / 255  # float in [0, 1] -> float out, same numbers
    out = up.upscale(image)
    assert out.dtype == np.float32 and out.shape == (40, 80, 3)
    np.testing.assert_allclose(out, np.clip(_whole(cfg, variables, image), 0, 1), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        up.upscale(batch[0, :, :, :1])


def _train_config():
    train = sr_config().train
    train.async_checkpointing = False
    return train


@pytest.mark.slow
def test_a_training_workdir_records_its_model(tiny, tmp_path):
    _, cfg, variables = tiny
    checkpoints = TrainCheckpoints(tmp_path / "run", _train_config())
    checkpoints.save_best(5, variables["params"], 30.0, cfg)
    checkpoints.wait()
    checkpoints.close()
    assert recorded_model_config(tmp_path / "run")["num_features"] == 8
    config = checkpoint_config(tmp_path / "run")
    assert (config.model.name, config.model.scale, config.eval.crop_border) == ("mspan", 2, 2)
    assert Upscaler.from_checkpoint(tmp_path / "run").upscale(np.zeros((4, 4, 3), np.uint8)).shape \
        == (8, 8, 3)
    with pytest.raises(CheckpointError, match="holds no training checkpoint|not a params checkpoint"):
        checkpoint_config(tmp_path)

    # scripts/save_params.py: the workdir's weights as a params checkpoint, the same numbers.
    done = run_script_subprocess("save_params.py", "--checkpoint", tmp_path / "run", "--out",
                                 tmp_path / "p")  # the real command line, once
    assert done.returncode == 0 and "mspan x2" in done.stdout, done.stderr
    assert recorded_model_config(tmp_path / "p") == recorded_model_config(tmp_path / "run")
    chex.assert_trees_all_equal(load_weights(tmp_path / "p", cfg), variables)
    again = run_script("save_params.py", "--checkpoint", tmp_path / "run", "--out", tmp_path / "p")
    assert again.returncode == 2 and "already exists" in again.stderr, again.stderr
    # A restoration checkpoint gets restoration's eval section (no border shave, RGB).
    ir = tiny_model_config("mspan_ir", 1, num_blocks=1, num_units=1)
    save_params(tmp_path / "ir", _random_variables(ir), ir)
    config = checkpoint_config(tmp_path / "ir")
    assert (config.model.name, config.eval.crop_border, config.eval.y_channel) == ("mspan_ir", 0, False)


def test_scripts_need_no_config_and_check_a_given_one(tiny, tmp_path):
    directory, cfg, variables = tiny
    lr = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    write_image(tmp_path / "in" / "a.png", lr)
    done = run_script("upscale.py", "--checkpoint", directory, "--input", tmp_path / "in",
                   "--output", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    expected = np.round(np.clip(_whole(cfg, variables, lr / np.float32(255)), 0, 1) * 255)
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "a_x2.png"), expected.astype(np.uint8))

    hr = RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    write_image(tmp_path / "Set" / "HR" / "b.png", hr)
    done = run_script("evaluate.py", "--checkpoint", directory, "--hr-dir", tmp_path / "Set" / "HR")
    assert done.returncode == 0, done.stderr
    assert "model mspan x2" in done.stdout and "Set x2 (1 images)" in done.stdout

    wrong = run_script("evaluate.py", "--config", "configs/x4.py", "--checkpoint", directory,
                    "--hr-dir", tmp_path / "Set" / "HR")
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert wrong.returncode == 2 and len(errors) == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    assert "checkpoint is mspan x2 but config.model is mspan x4" in errors[0]

    save_params(tmp_path / "ir", _random_variables(ir := tiny_model_config("mspan_ir", 1)), ir)
    restoration = run_script("evaluate.py", "--checkpoint", tmp_path / "ir",
                             "--hr-dir", tmp_path / "Set")
    assert restoration.returncode == 2 and "pass its --config" in restoration.stderr, restoration.stderr
