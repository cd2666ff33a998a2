"""The proof: the official IMDN_x4.pth, converted by the CLI, scores the paper's Set5 x4 numbers.

LR images are MATLAB bicubic of the Set5 HR (`bicubic_downscale`); metrics on the Y channel with
crop_border 4. IMDN paper / README (MATLAB, unrounded Y): 32.21 dB / 0.8948. The official
test_IMDN.py rounds Y to integers (`utils.quantize`): 32.187 / 0.8936.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, require_torch

torch = require_torch()

from mspan_jax.checkpoints.params import load_params  # noqa: E402
from mspan_jax.config_base import model_config  # noqa: E402
from mspan_jax.convert import convert_state_dict, read_state_dict  # noqa: E402
from mspan_jax.convert.torch_reference import build_torch_model  # noqa: E402
from mspan_jax.data.pairs import load_folder_pairs  # noqa: E402
from mspan_jax.evaluation import evaluate_pairs  # noqa: E402
from mspan_jax.models import get_model  # noqa: E402

PSNR_TOL, SSIM_TOL = 0.003, 0.0002


@pytest.fixture
def official_state(imdn_x4_weights):
    return read_state_dict(imdn_x4_weights)


def test_official_file_matches_the_torch_reference(official_state):
    reference = build_torch_model(model_config("imdn", 4)).state_dict()
    assert len(official_state) == 92
    assert sum(v.size for v in official_state.values()) == 715_176
    assert sorted(official_state) == sorted(reference)  # `module.` prefixes stripped
    for key, value in official_state.items():
        assert value.shape == tuple(reference[key].shape), key


def test_flax_and_torch_agree_on_a_set5_image(official_state, set5_dir):
    """Both implementations on a real LR crop with the official weights."""
    cfg = model_config("imdn", 4)
    reference = build_torch_model(cfg)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in official_state.items()})
    lr = load_folder_pairs(set5_dir / "HR", 4)[0].lr[:48, :56].astype(np.float32) / 255.0
    with torch.no_grad():
        expected = reference(torch.from_numpy(lr.transpose(2, 0, 1)[None].copy())).numpy()[0]
    variables = convert_state_dict(cfg, official_state)
    got = np.asarray(jax.jit(get_model(cfg).apply)(variables, lr[None]))[0]
    assert np.max(np.abs(got.transpose(2, 0, 1) - expected)) < 1e-4


@pytest.mark.slow
def test_official_imdn_x4_scores_the_paper_on_set5(imdn_x4_weights, set5_dir, tmp_path):
    out = tmp_path / "imdn4"
    result = subprocess.run(
        [sys.executable, "scripts/convert_torch_weights.py", "--model=imdn", "--scale=4",
         f"--src={imdn_x4_weights}", f"--out={out}", "--verify"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "verify: max |flax - torch|" in result.stdout

    cfg = model_config("imdn", 4)
    variables = load_params(out, cfg)
    pairs = load_folder_pairs(set5_dir / "HR", 4)
    assert [p.name for p in pairs] == ["baby", "bird", "butterfly", "head", "woman"]
    apply = get_model(cfg).apply
    scores = evaluate_pairs(apply, variables, pairs, scale=4, crop_border=4, progress=False)
    assert scores.psnr == pytest.approx(32.21, abs=PSNR_TOL)
    assert scores.ssim == pytest.approx(0.8948, abs=SSIM_TOL)

    rounded = evaluate_pairs(apply, variables, pairs, scale=4, crop_border=4, round_y=True,
                             progress=False)
    assert rounded.psnr == pytest.approx(32.187, abs=PSNR_TOL)
    assert rounded.ssim == pytest.approx(0.8936, abs=SSIM_TOL)
