"""Restoration (MSPAN-IR, scale 1): configs, seeded noisy test sets, the denoising benchmark builders,
scripts/evaluate.py's restoration mode and its wrong-task errors, and training validation."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    REPO_ROOT,
    SMALLEST,
    require_shared,
    run_script,
    subprocess_env,
    tiny_model_config,
    tiny_model_flags,
)

from mspan_jax import metrics
from mspan_jax.checkpoints.params import CheckpointError, load_params, save_params
from mspan_jax.config_base import BLIND_SIGMA_RANGE
from mspan_jax.data import datasets
from mspan_jax.data.degradations import seed_for_name
from mspan_jax.data.images import write_image
from mspan_jax.data.pairs import load_folder_restoration_pairs
from mspan_jax.evaluation import evaluate_pairs, input_scores, nl_means_scores
from mspan_jax.models import get_model

RNG = np.random.default_rng(0)
TINY = tiny_model_flags(**SMALLEST)


def load_config(name: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def random_variables(model_config, channels: int = 3):
    shapes = jax.eval_shape(get_model(model_config).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 8, 8, channels), jnp.float32))
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.05).astype(np.float32), shapes)


def tiny_ir(channels: int = 3):
    return tiny_model_config("mspan_ir", 1, **SMALLEST, in_channels=channels, out_channels=channels)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("arg, sigma, sigma_range", [
    (None, 25.0, ()), ("15", 15.0, ()), ("25", 25.0, ()), ("30", 30.0, ()), ("50", 50.0, ()),
    ("70", 70.0, ()), ("blind", 25.0, BLIND_SIGMA_RANGE),
])
def test_denoise_configs_take_the_noise_level(arg, sigma, sigma_range):
    # gray at the paper's (DuRN's) 30 / 50 / 70 validates on BSD68 gray: CBSD68 through rgb2gray
    gray_val = "cbsd68" if arg in ("30", "50", "70") else "set12"
    for name, channels, val in (("denoise_color", 3, "cbsd68"), ("denoise_gray", 1, gray_val)):
        config = load_config(name, arg)
        assert (config.model.name, config.model.scale, config.model.in_channels) == ("mspan_ir", 1,
                                                                                      channels)
        assert config.model.out_channels == channels
        assert config.data.noise_sigma == sigma and tuple(config.data.noise_sigma_range) == sigma_range
        assert config.eval.datasets == (val,) and not config.eval.y_channel
        assert config.eval.crop_border == 0
    with pytest.raises(ValueError, match="use one of \\[15, 25, 30, 50, 70\\] or 'blind'"):
        load_config("denoise_color", "35")


def test_paired_configs_score_the_literature_channel():
    # the defaults are the sets of the paper's (DuRN's) tables: PolyU real noise, DID-MDN rain
    for arg, name in ((None, "polyu"), ("sidd", "sidd")):
        real = load_config("denoise_real", arg)
        assert real.data.source == "paired" and real.eval.datasets == (name,)
        assert not real.eval.y_channel and real.model.in_channels == 3
    with pytest.raises(ValueError, match="use one of \\['polyu', 'sidd'\\]"):
        load_config("denoise_real", "dnd")
    for arg, name in ((None, "didmdn"), ("rain100l", "rain100l"), ("rain100h", "rain100h")):
        derain = load_config("derain", arg)
        assert derain.data.source == "paired" and derain.eval.datasets == (name,)
        assert derain.eval.y_channel and derain.eval.crop_border == 0
    with pytest.raises(ValueError, match="use one of \\['didmdn', 'rain100l', 'rain100h'\\]"):
        load_config("derain", "rain800")
    quick = load_config("quickstart_denoise")
    assert quick.data.source == "skimage" and quick.data.noise_sigma == 25
    assert quick.eval.classical_baseline and quick.eval.datasets == ("skimage_holdout",)


# ----------------------------------------------------------------------------- test sets
@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sets") / "Clean"
    for name, (h, w) in {"one": (40, 36), "two": (30, 52)}.items():
        write_image(folder / f"{name}.png", RNG.integers(40, 216, (h, w, 3), dtype=np.uint8))
    return folder


def test_folder_noise_is_seeded_per_image_and_gray_models_get_gray(clean_folder):
    pairs, skipped = load_folder_restoration_pairs(clean_folder, noise_sigma=25.0)
    again, _ = load_folder_restoration_pairs(clean_folder, noise_sigma=25.0)
    assert skipped == []
    assert [p.name for p in pairs] == ["one", "two"]
    noises = []
    for p, q in zip(pairs, again, strict=True):
        np.testing.assert_array_equal(p.lr, q.lr)  # every run sees the same noisy input
        assert p.lr.dtype == np.float32 and p.hr.dtype == np.uint8
        noises.append(p.lr.astype(np.float64) * 255 - p.hr)  # float, not rounded nor clipped
        assert abs(noises[-1].std() - 25.0) < 1.0 and abs(noises[-1].mean()) < 1.0
    # Each image has its own noise field, not one shared field.
    assert np.abs(noises[0][:30, :36] - noises[1][:30, :36]).max() > 1
    gray, _ = load_folder_restoration_pairs(clean_folder, noise_sigma=25.0, channels=1)
    assert gray[0].hr.shape == (40, 36, 1) and gray[0].lr.shape == (40, 36, 1)


def test_paired_folder_pairs_by_name(tmp_path):
    gt = RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    write_image(tmp_path / "GT" / "norain-001.png", gt)
    write_image(tmp_path / "LQ" / "rain-001.png", 255 - gt)
    pairs, skipped = load_folder_restoration_pairs(tmp_path / "GT", tmp_path / "LQ")
    assert [p.name for p in pairs] == ["001"] and skipped == []
    np.testing.assert_array_equal(pairs[0].lr, 255 - gt)
    write_image(tmp_path / "LQ" / "rain-002.png", gt[:10])  # sizes differ: skipped, named
    write_image(tmp_path / "GT" / "norain-002.png", gt)
    with pytest.warns(UserWarning, match="rain-002.png: size 24x10 differs"):
        pairs, skipped = load_folder_restoration_pairs(tmp_path / "GT", tmp_path / "LQ")
    assert [p.name for p in pairs] == ["001"] and skipped == ["norain-002.png"]
    # PolyU (DuRN's real-noise test set): <camera>_<scene>_<i>_real.PNG <-> ..._mean.PNG
    write_image(tmp_path / "polyu" / "LQ" / "Canon80D_print_3_real.PNG", 255 - gt)
    write_image(tmp_path / "polyu" / "GT" / "Canon80D_print_3_mean.PNG", gt)
    pairs, _ = load_folder_restoration_pairs(tmp_path / "polyu" / "GT", tmp_path / "polyu" / "LQ")
    assert [p.name for p in pairs] == ["canon80d_print_3"]


def test_prepare_restoration_data_lays_out_didmdn_and_polyu(tmp_path):
    """DID-MDN's side-by-side rainy | clean images and PolyU's _real / _mean files become LQ/GT
    folders that pair by name (the layout `paired_folders/didmdn` and `/polyu` read)."""
    rainy, clean = (RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(2))
    write_image(tmp_path / "didmdn_src" / "7.png", np.concatenate([rainy, clean], axis=1))
    result = run_script("prepare_restoration_data.py", "--set", "didmdn", "--src",
                        tmp_path / "didmdn_src", "--out", tmp_path / "didmdn" / "test")
    assert result.returncode == 0, result.stderr[-2000:]
    pairs, _ = load_folder_restoration_pairs(tmp_path / "didmdn/test/GT", tmp_path / "didmdn/test/LQ")
    assert [p.name for p in pairs] == ["7"]
    np.testing.assert_array_equal(pairs[0].lr, rainy)
    np.testing.assert_array_equal(pairs[0].hr, clean)
    write_image(tmp_path / "polyu_src" / "Nikon800_wall_3_real.png", rainy)
    write_image(tmp_path / "polyu_src" / "Nikon800_wall_3_mean.png", clean)
    result = run_script("prepare_restoration_data.py", "--set", "polyu", "--src", tmp_path / "polyu_src",
                        "--out", tmp_path / "polyu" / "test")
    assert result.returncode == 0 and "wrote 1 LQ and 1 GT" in result.stdout, result.stderr[-2000:]
    pairs, _ = load_folder_restoration_pairs(tmp_path / "polyu/test/GT", tmp_path / "polyu/test/LQ")
    assert [p.name for p in pairs] == ["nikon800_wall_3"]
    np.testing.assert_array_equal(pairs[0].lr, rainy)
    write_image(tmp_path / "polyu_src" / "Nikon800_wall_4_real.png", rainy)  # no _mean partner
    result = run_script("prepare_restoration_data.py", "--set", "polyu", "--src", tmp_path / "polyu_src",
                        "--out", tmp_path / "polyu2")
    assert "1 images without a partner" in error_line(result)


def test_a_checkpoint_of_the_retired_mspan_ir_fails_in_one_line(tmp_path, clean_folder):
    """Weights of the retired MSPAN-IR layout (the SR trunk + out_conv; its model.json records the
    trunk's keys and no mlp_ratio) are refused in one line that says the architecture changed."""
    old = tmp_path / "old_mspan_ir"
    (old / "params").mkdir(parents=True)
    model = {"name": "mspan_ir", "scale": 1, "dtype": "float32", "num_features": 48, "num_blocks": 6,
             "num_units": 3, "distill_rate": 0.5, "attention": "mspa", "attention_reduction": 4,
             "ca_reduction": 16, "mspa_interactions": 2, "in_channels": 3, "out_channels": 3}
    (old / "model.json").write_text(json.dumps({"format": "mspan_jax.params", "format_version": 2,
                                                "model": model, "checksums": {}}))
    image = tmp_path / "noisy.png"
    write_image(image, np.zeros((8, 8, 3), np.uint8))
    result = run_script("upscale.py", "--checkpoint", old, "--input", image, "--output", tmp_path / "o")
    assert result.returncode != 0 and not (tmp_path / "o").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MSPAN-IR changed to the paper's figure (c)" in lines[0], result.stderr
    # with a --config, the checkpoint/config comparison names the missing key, also in one line
    result = run_script("evaluate.py", "--config", "configs/denoise_color.py:25", "--checkpoint", old,
                        "--hr-dir", clean_folder)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "mlp_ratio=None" in lines[0], result.stderr


def test_metrics_score_gray_images_on_their_plane():
    a = RNG.integers(0, 256, (24, 24, 1), dtype=np.uint8)
    b = np.clip(a.astype(int) + 5, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert metrics.psnr(b, a, crop_border=0) == pytest.approx(10 * math.log10(255**2 / mse))
    assert metrics.psnr(b, a, crop_border=0, y_channel=False) == metrics.psnr(b, a, crop_border=0)
    assert 0 < metrics.ssim(b, a, crop_border=0) < 1


def test_denoising_builders_are_whole_or_fail_and_gray_sets_stay_gray(tmp_path):
    manual = tmp_path / "manual"
    for i in range(12):
        img = RNG.integers(0, 256, (24, 20), dtype=np.uint8)
        write_image(manual / "Set12" / f"{i + 1:02d}.png", np.repeat(img[..., None], 3, axis=2))
    pairs = datasets.load_restoration_set("set12", 15.0, channels=1, data_dir=tmp_path / "tfds",
                                          manual_dir=manual)
    assert len(pairs) == 12 and pairs[0].hr.shape == pairs[0].lr.shape == (24, 20, 1)
    with pytest.raises(ValueError, match="set12 is a grayscale set but the model takes 3 channels"):
        datasets.load_restoration_set("set12", 15.0, data_dir=tmp_path / "tfds", manual_dir=manual)

    for i in range(3):
        write_image(manual / "Kodak24" / f"kodim{i + 1:02d}.png",
                    RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="kodak24: the set has 24 images but .*Kodak24 holds 3"):
        datasets.load_restoration_set("kodak24", 25.0, data_dir=tmp_path / "tfds", manual_dir=manual)
    with pytest.raises(FileNotFoundError, match="McMaster has no images: put the McMaster clean"):
        datasets.load_restoration_set("mcmaster", 25.0, data_dir=tmp_path / "tfds", manual_dir=manual)
    for i in range(18):  # a whole McMaster, one file of it corrupt: refused, naming the file
        write_image(manual / "McMaster" / f"{i + 1}.png", RNG.integers(0, 256, (16, 16, 3), np.uint8))
    (manual / "McMaster" / "7.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match="mcmaster: the set has 18 images but .*McMaster/7.png: "):
        datasets.load_restoration_set("mcmaster", 25.0, data_dir=tmp_path / "tfds", manual_dir=manual)
    with pytest.raises(ValueError, match="cbsd68 is a restoration .* set; evaluate a restoration"):
        datasets.load_benchmark("cbsd68", 4)
    from mspan_jax.data.builders.benchmarks import DENOISING_SETS

    assert tuple(DENOISING_SETS) == datasets.DENOISING_SET_NAMES  # the tfds-free copy of the names


@pytest.mark.slow
def test_cbsd68_noisy_baseline_is_the_published_sigma_25_psnr(tmp_path):
    """The real CBSD68 (68 images, 481x321) through its builder: sigma 25 noise seeded per image and
    not clipped (the DnCNN / FFDNet protocol) gives the noisy input the published 20log10(255/25) =
    20.17 dB, from the noise field of each image's own seed, the same on every load."""
    folder = require_shared("data/CBSD68")
    pairs = datasets.load_restoration_set("cbsd68", 25.0, data_dir=tmp_path, manual_dir=folder.parent)
    assert len(pairs) == 68 and pairs[0].name == "101085"
    assert {p.hr.shape for p in pairs} == {(321, 481, 3), (481, 321, 3)}
    baseline = input_scores(pairs, crop_border=0, y_channel=False)
    assert baseline.psnr == pytest.approx(20.17, abs=0.01)
    for p in pairs[:3]:
        noise = 25.0 * np.random.default_rng(seed_for_name(p.name)).standard_normal(p.hr.shape)
        np.testing.assert_allclose(p.lr.astype(np.float64) * 255, p.hr + noise, atol=1e-3)
    again = datasets.load_restoration_set("cbsd68", 25.0, data_dir=tmp_path, manual_dir=folder.parent)
    np.testing.assert_array_equal(pairs[7].lr, again[7].lr)


# ----------------------------------------------------------------------------- evaluate.py
@pytest.fixture(scope="module")
def ir_checkpoint(tmp_path_factory):
    config = tiny_ir()
    variables = random_variables(config)
    directory = tmp_path_factory.mktemp("ckpt") / "tiny_ir"
    save_params(directory, variables, config)
    return directory, get_model(config), variables


@pytest.mark.slow
def test_evaluate_denoising_folder_json(ir_checkpoint, clean_folder, tmp_path):
    directory, model, variables = ir_checkpoint
    result = run_script("evaluate.py", "--config", "configs/quickstart_denoise.py", *TINY,
                        "--checkpoint", directory, "--hr-dir", clean_folder, "--noise-sigma", 15,
                        "--json", tmp_path / "scores.json", "--bucket", 32)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "scores.json").read_text())["Clean"]
    pairs, _ = load_folder_restoration_pairs(clean_folder, noise_sigma=15.0)
    expected = evaluate_pairs(model.apply, variables, pairs, scale=1, crop_border=0, y_channel=False,
                              bucket=32, progress=False)
    noisy = input_scores(pairs, crop_border=0, y_channel=False)
    classical = nl_means_scores(pairs, crop_border=0)
    assert scores["psnr"] == pytest.approx(expected.psnr, abs=1e-6)
    assert scores["input"]["psnr"] == pytest.approx(noisy.psnr, abs=1e-9)
    assert scores["nl_means"]["psnr"] == pytest.approx(classical.psnr, abs=1e-9)
    assert scores["channel"] == "RGB" and scores["noise_sigma"] == 15.0 and scores["images"] == 2
    assert noisy.psnr == pytest.approx(24.6, abs=0.3)  # sigma 15: 20log10(255/15) = 24.61 dB
    assert "Gaussian noise sigma 15, seeded per image" in result.stdout and "on RGB" in result.stdout


def test_evaluate_deraining_pairs_on_y(ir_checkpoint, tmp_path):
    directory, _, _ = ir_checkpoint
    for i in range(2):
        gt = RNG.integers(0, 256, (20, 28, 3), dtype=np.uint8)
        write_image(tmp_path / "test" / "GT" / f"norain-{i}.png", gt)
        write_image(tmp_path / "test" / "LQ" / f"rain-{i}.png", np.maximum(gt, 200))
    result = run_script("evaluate.py", "--config", "configs/derain.py", *TINY, "--checkpoint", directory,
                        "--hr-dir", tmp_path / "test" / "GT", "--lr-dir", tmp_path / "test" / "LQ",
                        "--json", tmp_path / "scores.json")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "scores.json").read_text())["test"]
    assert scores["channel"] == "Y" and "noise_sigma" not in scores and scores["images"] == 2
    assert "paired LQ/GT" in result.stdout


def test_a_checkpoint_of_the_other_task_fails_in_one_line(ir_checkpoint, tmp_path):
    directory, _, _ = ir_checkpoint
    line = error_line(run_script("evaluate.py", "--config", "configs/x4.py", *TINY, "--checkpoint",
                                 directory, "--hr-dir", tmp_path))
    assert "checkpoint is a restoration model (mspan_ir x1) but config.model is super-resolution " \
           "(mspan x4)" in line
    sr = tiny_model_config("mspan", 4, num_blocks=1, num_units=1)
    save_params(tmp_path / "sr_x4", random_variables(sr), sr)
    with pytest.raises(CheckpointError, match="checkpoint is a super-resolution model \\(mspan x4\\) "
                                              "but config.model is restoration \\(mspan_ir x1\\)"):
        load_params(tmp_path / "sr_x4", tiny_ir())
    line = error_line(run_script("evaluate.py", "--config", "configs/x4.py", *TINY, "--checkpoint",
                                 tmp_path / "sr_x4", "--noise-sigma", 25, "--hr-dir", tmp_path))
    assert "--noise-sigma is for restoration models" in line


# ----------------------------------------------------------------------------- training validation
@pytest.mark.slow
def test_gray_validation_scores_the_noisy_input_and_nl_means():
    from mspan_jax.config_base import restoration_config
    from mspan_jax.train.validation import Validator

    config = restoration_config(channels=1)
    config.model.update(num_features=8, **SMALLEST)
    config.eval.datasets = ("skimage_holdout",)
    config.eval.classical_baseline = True
    config.data.noise_sigma = 25.0
    validator = Validator(config, get_model(config.model))
    pairs = validator.suite.sets["skimage_holdout"].pairs
    assert all(p.lr.shape[2] == 1 and p.hr.shape[2] == 1 for p in pairs)
    params = random_variables(config.model, channels=1)["params"]
    scores, images = validator(params)
    results = validator.results_json(7, scores)
    assert set(results) == {"step", "skimage_holdout", "input", "nl_means"}
    assert results["input"]["skimage_holdout"]["psnr"] == pytest.approx(20.17, abs=0.05)
    psnr = {key: results[key]["skimage_holdout"]["psnr"] for key in ("input", "nl_means")}
    assert psnr["nl_means"] > psnr["input"] + 5
    assert images["skimage_holdout"].shape[-1] == 3  # gray crops shown as RGB


@pytest.mark.slow
def test_quickstart_denoise_trains_with_scripts_train(tmp_path):
    """The quickstart config through scripts/train.py (tiny widths, 2 steps): eval_results.json holds
    the model, the noisy input and non-local means."""
    workdir = tmp_path / "run"
    proc = run_script("train.py", "--config", "configs/quickstart_denoise.py", "--workdir", workdir,
                      *TINY, "--config.train.num_steps=2", "--config.data.hr_patch_size=16",
                      "--config.train.checkpoint_every_steps=2", "--config.data.prefetch=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "eval_results.json").read_text())
    assert set(results) == {"step", "skimage_holdout", "input", "nl_means"} and results["step"] == 2
    assert "(input " in proc.stdout and "nl_means " in proc.stdout
    assert os.path.isdir(workdir / "samples")


def test_a_bad_config_argument_fails_in_one_line(tmp_path):
    proc = run_script("train.py", "--config", "configs/denoise_color.py:35", "--workdir",
                      tmp_path / "run")
    line = error_line(proc)
    assert "configs/denoise_color.py:35: cannot load it (noise level '35'" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_visualize_mspa_reads_the_stages_of_mspan_ir():
    """scripts/visualize_mspa.py's maps come from figure (c)'s `stage{i}/iddb/mspa` as from MSPAN's
    `body/IDDB{i}/mspa` (in a subprocess: the script defines absl flags on import)."""
    code = ("import sys, jax, numpy as np\n"
            "sys.path[:0] = ['scripts', 'tests']\n"
            "from conftest import tiny_model_config\n"
            "from mspan_jax.models import get_model\n"
            "from visualize_mspa import mspa_maps\n"
            "model = get_model(tiny_model_config('mspan_ir', 1))\n"
            "v = model.init(jax.random.key(0), np.zeros((1, 16, 12, 3), np.float32))\n"
            "maps = mspa_maps(model, v, np.random.rand(16, 12, 3).astype(np.float32), [2])\n"
            "print(sorted((k, a.shape) for k, a in maps[2].items()))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(sorted((k, (16, 12)) for k in ("attention", "input", "output")))
