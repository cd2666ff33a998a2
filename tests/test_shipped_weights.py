"""The shipped MSPAN weights (weights/, model cards in weights/README.md) load from a clone and
score on Set5 what their cards say: one image per scale in-process, and the scripts on x4."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO_ROOT, run_script, run_script_subprocess

from mspan_jax import Upscaler
from mspan_jax.checkpoints.params import model_config_dict
from mspan_jax.checkpoints.resolve import checkpoint_config, load_weights, recorded_model_config
from mspan_jax.config_base import model_config
from mspan_jax.data.images import read_image, write_image
from mspan_jax.data.pairs import load_set_folder
from mspan_jax.evaluation import bicubic_scores, evaluate_pairs
from mspan_jax.models import get_model

WEIGHTS = REPO_ROOT / "weights"
IMAGE = "butterfly"  # Set5's hardest image: the one where a weaker model shows first
# (PSNR, SSIM) of weights/mspan_x{s} on Set5 butterfly (published bicubic LR; Y channel, s pixels
# shaved), as weights/README.md lists them.
CARD = {2: (31.7649, 0.95987), 3: (26.7769, 0.88954), 4: (24.3487, 0.82477)}


@pytest.mark.slow
@pytest.mark.parametrize("scale", sorted(CARD))
def test_shipped_mspan_scores_its_card_on_set5(scale, set5_dir):
    directory = WEIGHTS / f"mspan_x{scale}"
    # The paper's MSPAN at its defaults; x2 and x3 (from the previous x4) with the ReLU BLF and
    # Flax init they were trained with.
    old_start = dict(blf_activation="relu", init="flax") if scale != 4 else {}
    assert recorded_model_config(directory) == dict(
        model_config_dict(model_config("mspan", scale)), **old_start)
    config = checkpoint_config(directory)  # no --config needed: the checkpoint records its model
    variables = load_weights(directory, config.model)
    pairs = [p for p in load_set_folder(set5_dir, scale) if p.name == IMAGE]
    scores = evaluate_pairs(get_model(config.model).apply, variables, pairs, scale=scale,
                            crop_border=scale, progress=False)
    psnr, ssim = CARD[scale]
    assert scores.psnr == pytest.approx(psnr, abs=0.01)
    assert scores.ssim == pytest.approx(ssim, abs=0.0005)
    assert scores.psnr > bicubic_scores(pairs, scale=scale, crop_border=scale).psnr


@pytest.mark.slow
def test_scripts_run_the_shipped_x4_without_a_config(set5_dir, tmp_path):
    lr = set5_dir / "LR_bicubic" / "X4" / f"{IMAGE}x4.bmp"
    done = run_script_subprocess("upscale.py", "--checkpoint", WEIGHTS / "mspan_x4", "--input", lr,
                                 "--output", tmp_path)  # the real command lines of both scripts
    assert done.returncode == 0, done.stderr[-2000:]
    sr = read_image(tmp_path / f"{IMAGE}x4_x4.png")
    np.testing.assert_array_equal(
        sr, Upscaler.from_checkpoint(WEIGHTS / "mspan_x4").upscale(read_image(lr)))
    done = run_script_subprocess("evaluate.py", "--checkpoint", WEIGHTS / "mspan_x4", "--hr-dir",
                                 set5_dir / "HR", "--lr-dir", set5_dir / "LR_bicubic" / "X4")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "model mspan x4" in done.stdout and "Set5 x4 (5 images)" in done.stdout


def test_a_checkpoint_of_the_retired_reconstruction_fails_in_one_line(tmp_path):
    """Weights of the MSPAN reconstruction that preceded the paper's figures (their model.json
    kept in tests/data) are refused with one line that says the architecture changed."""
    old = tmp_path / "old_mspan_x4"
    (old / "params").mkdir(parents=True)
    (old / "model.json").write_text((REPO_ROOT / "tests" / "data" / "retired_mspan_x4_model.json")
                                    .read_text())
    image = tmp_path / "lr.png"
    write_image(image, np.zeros((8, 8, 3), np.uint8))
    done = run_script("upscale.py", "--checkpoint", old, "--input", image, "--output", tmp_path / "o")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "MSPAN architecture changed" in lines[0], done.stderr
    assert not (tmp_path / "o").exists()
