"""The CLIs end to end on tiny models and small generated images: make_lr, evaluate, upscale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mspan_jax.config_base import sr_config
from mspan_jax.data.images import read_image, write_image
from mspan_jax.data.imresize import bicubic_downscale
from mspan_jax.data.pairs import load_folder_pairs
from mspan_jax.evaluation import evaluate_pairs
from mspan_jax.models import get_model
from mspan_jax.params_io import save_params

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
TINY = ["--config.model.num_features=8", "--config.model.num_blocks=1", "--config.model.num_units=1"]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A params checkpoint of a tiny MSPAN x2 with random weights, and its config."""
    config = sr_config("mspan", 2)
    config.model.update(num_features=8, num_blocks=1, num_units=1)
    model = get_model(config.model)
    probe = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), probe)
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.1).astype(np.float32), shapes)
    directory = tmp_path_factory.mktemp("ckpt") / "tiny_x2"
    save_params(directory, variables, config.model)
    return directory, model, variables


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sets") / "Photos" / "HR"
    for name, (h, w) in {"one": (37, 30), "two": (28, 90)}.items():
        write_image(folder / f"{name}.png", RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


def test_make_lr_writes_matlab_bicubic(hr_folder, tmp_path):
    result = run_script("make_lr.py", "--hr-dir", hr_folder, "--out-dir", tmp_path / "x3", "--scale", 3)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "x3").iterdir()) == ["one.png", "two.png"]
    np.testing.assert_array_equal(read_image(tmp_path / "x3" / "one.png"),
                                  bicubic_downscale(read_image(hr_folder / "one.png"), 3))
    assert "2/2" in result.stderr  # the progress line

    assert_one_line_error(run_script("make_lr.py", "--hr-dir", tmp_path / "none", "--out-dir",
                                     tmp_path / "o", "--scale", 2), "none", "does not exist")
    assert_one_line_error(run_script("make_lr.py", "--hr-dir", hr_folder, "--out-dir", tmp_path / "o",
                                     "--scale", 0), "--scale")
    assert not (tmp_path / "o").exists()


def test_evaluate_folder_json_and_images(tiny_checkpoint, hr_folder, tmp_path):
    directory, model, variables = tiny_checkpoint
    result = run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint", directory,
                        "--hr-dir", hr_folder, "--json", tmp_path / "scores.json",
                        "--save-images", tmp_path / "sr", "--bucket", 32)
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert list(scores) == ["Photos"] and scores["Photos"]["images"] == 2  # HR -> parent's name

    pairs = load_folder_pairs(hr_folder, 2)
    expected = evaluate_pairs(model.apply, variables, pairs, scale=2, crop_border=2, bucket=32,
                              progress=False, keep_outputs=True)
    assert scores["Photos"]["psnr"] == pytest.approx(expected.psnr, abs=1e-6)
    assert scores["Photos"]["ssim"] == pytest.approx(expected.ssim, abs=1e-6)
    for name in ("one", "two"):
        saved = read_image(tmp_path / "sr" / "Photos" / f"{name}.png")
        np.testing.assert_array_equal(saved, expected.outputs[name])
    assert "bicubic" in result.stdout
    assert "compiled programs: 2" in result.stdout  # LR 18x15 -> 32x32, 14x45 -> 32x64
    assert f"{expected.psnr:.2f}" in result.stdout


def test_evaluate_errors_are_one_line(tiny_checkpoint, hr_folder, tmp_path):
    directory, _, _ = tiny_checkpoint
    assert_one_line_error(run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint",
                                     tmp_path / "missing", "--hr-dir", hr_folder), "missing")
    assert_one_line_error(run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint",
                                     directory, "--hr-dir", tmp_path / "nope", "--json",
                                     tmp_path / "s.json"), "nope")
    assert not (tmp_path / "s.json").exists()
    tiny_folder = tmp_path / "tiny"
    write_image(tiny_folder / "dot.png", np.zeros((1, 1, 3), np.uint8))
    assert_one_line_error(run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint",
                                     directory, "--hr-dir", tiny_folder, "--json", tmp_path / "s.json"),
                          f"{tiny_folder / 'dot.png'}: a 1x1 image is smaller than the scale 2")
    assert not (tmp_path / "s.json").exists()


def test_upscale_whole_and_tiled(tiny_checkpoint, hr_folder, tmp_path):
    directory, model, variables = tiny_checkpoint
    result = run_script("upscale.py", "--config", "configs/x2.py", *TINY, "--checkpoint", directory,
                        "--input", hr_folder, "--output", tmp_path / "out", "--tile", 24,
                        "--tile-overlap", 6)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one_x2.png", "two_x2.png"]
    lr = read_image(hr_folder / "two.png")
    tiled = read_image(tmp_path / "out" / "two_x2.png")
    assert tiled.shape == (56, 180, 3)
    # Tiny MSPAN sees 6 LR pixels around each pixel, so 6 pixels of context make the tiles exact.
    whole = np.asarray(model.apply(variables, jnp.asarray(lr[None] / np.float32(255))))[0]
    np.testing.assert_array_equal(tiled, np.round(np.clip(whole, 0, 1) * 255).astype(np.uint8))
    assert "compiled programs: 1" in result.stdout  # every tile of both images is padded to 24x24

    assert_one_line_error(run_script("upscale.py", "--config", "configs/x2.py", *TINY, "--checkpoint",
                                     directory, "--input", tmp_path / "none.png", "--output",
                                     tmp_path / "o2"), "none.png")
