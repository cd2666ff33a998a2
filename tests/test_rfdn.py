"""RFDN, added through its spec alone: its PyTorch reference is the authors' network (the released
RFDN_AIM.pth loads into it strictly), the converted weights give its outputs on [0, 1] although
the network works on 0..255, and scripts/evaluate.py scores the authors' Set5 x4 numbers with them:
32.159 / 0.8946 (Y, 4 pixels shaved, uint8 output; what the authors' code gives on these weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, require_shared, require_torch, run_script, tiny_model_config

torch = require_torch()

from mspan_jax.config_base import model_config  # noqa: E402
from mspan_jax.convert import convert_state_dict, read_state_dict, to_state_dict  # noqa: E402
from mspan_jax.convert.torch_reference import build_torch_model, max_abs_difference  # noqa: E402
from mspan_jax.data.images import read_image  # noqa: E402
from mspan_jax.models import get_model, get_spec  # noqa: E402
from mspan_jax.models.registry import min_input_size, pads_exactly  # noqa: E402

CONFIG = REPO_ROOT / "configs" / "rfdn_x4.py"
SET5_X4 = (32.159, 0.8946)  # the authors' code and weights, our metric convention
PARAMS = 433_448  # RFDN_AIM.pth's tensors, all of them parameters
MULT_ADDS = (23_759_144_640, 23_860_962_576)  # macs, macs_with_bias: 1280x720 output (LR 320x180)
TINY = dict(num_features=8, num_modules=2)


def released_weights():
    return require_shared("weights/RFDN_AIM.pth")


def test_tiny_rfdn_converts_to_the_reference_outputs_on_0_1():
    """Random reference weights of a tiny RFDN: conversion and back, and the Flax model on [0, 1]
    equal to the reference on 0..255 (divided by 255)."""
    cfg = tiny_model_config("rfdn", 3, **TINY)
    torch.manual_seed(0)
    state = {k: v.numpy() for k, v in build_torch_model(cfg).state_dict().items()}
    variables = convert_state_dict(cfg, state)
    assert max_abs_difference(cfg, state, variables, (20, 24)) < 1e-5
    assert all(np.array_equal(state[k], v) for k, v in to_state_dict(cfg, variables).items())


def test_spec_declares_what_the_package_asks_of_rfdn():
    model = get_model(model_config("rfdn", 4))
    assert not pads_exactly(model) and min_input_size(model) == 15  # ESA pools and resizes
    assert get_spec("rfdn").torch_pixel_range == 255.0


def test_the_released_file_loads_strictly_into_the_reference():
    state = read_state_dict(released_weights())
    reference = build_torch_model(model_config("rfdn", 4))
    expected = reference.state_dict()
    assert sorted(state) == sorted(expected)
    assert {k: v.shape for k, v in state.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert sum(v.size for v in state.values()) == PARAMS
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """RFDN_AIM.pth through scripts/convert_torch_weights.py --verify: the params checkpoint."""
    out = tmp_path_factory.mktemp("rfdn") / "rfdn_x4"
    result = run_script("convert_torch_weights.py", "--model", "rfdn", "--scale", "4", "--src",
                        released_weights(), "--out", out, "--verify")
    assert result.returncode == 0, result.stderr[-2000:]
    diff = float(result.stdout.split("max |flax - torch| = ")[1].split()[0])
    assert diff <= 1e-4
    return out


@pytest.mark.slow
def test_released_weights_score_the_authors_set5_x4(converted, tmp_path):
    set5 = require_shared("data/Set5")
    scores = tmp_path / "set5.json"
    result = run_script("evaluate.py", "--checkpoint", converted, "--hr-dir", set5 / "HR",
                        "--lr-dir", set5 / "LR_bicubic" / "X4", "--json", scores)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(scores.read_text())["Set5"]
    assert got["images"] == 5 and got["channel"] == "Y"
    assert (round(got["psnr"], 3), round(got["ssim"], 4)) == SET5_X4


@pytest.mark.slow
def test_upscale_and_export_take_the_converted_checkpoint(converted, tmp_path):
    lr = require_shared("data/Set5/LR_bicubic/X4/babyx4.bmp")
    result = run_script("upscale.py", "--checkpoint", converted, "--input", lr, "--output",
                        tmp_path / "sr")
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_image(tmp_path / "sr" / "babyx4_x4.png").shape == (512, 512, 3)
    result = run_script("export.py", "--checkpoint", converted, "--out", tmp_path / "rfdn.jaxexport")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rfdn x4, float32[b,h,w,3] in [0, 1] -> float32[b,4*h,4*w,3]" in result.stdout


@pytest.mark.slow
def test_model_info_gives_the_files_params_and_mult_adds():
    result = run_script("model_info.py", "--config", CONFIG, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads(result.stdout)
    assert (info["model"], info["scale"], info["params"]) == ("rfdn", 4, PARAMS)
    assert (info["macs"], info["macs_with_bias"]) == MULT_ADDS and "paper" not in info
