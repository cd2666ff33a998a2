"""The CLIs end to end on tiny models and small generated images: make_lr, evaluate, upscale."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from conftest import (
    SMALLEST,
    TINY_MODEL_OVERRIDES,
    flip_bytes,
    one_line_error,
    run_script,
    run_script_subprocess,
    tiny_model_config,
    tiny_model_flags,
)
from PIL import Image

from mspan_jax.checkpoints.params import save_params
from mspan_jax.config_base import sr_config
from mspan_jax.data.images import (
    gray_plane,
    png16_bytes,
    read_image,
    read_stored_image,
    to_uint8,
    write_image,
)
from mspan_jax.data.imresize import bicubic_downscale, imresize
from mspan_jax.data.pairs import load_folder_pairs
from mspan_jax.evaluation import evaluate_pairs
from mspan_jax.models import get_model

RNG = np.random.default_rng(0)
TINY = tiny_model_flags(**SMALLEST)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A params checkpoint of a tiny MSPAN x2 with random weights, and its config."""
    config = sr_config("mspan", 2)
    config.model = tiny_model_config("mspan", 2, **SMALLEST)
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
    result = run_script_subprocess("make_lr.py", "--hr-dir", hr_folder, "--out-dir", tmp_path / "x3",
                                   "--scale", 3)  # the real command line, once
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "x3").iterdir()) == ["onex3.png", "twox3.png"]
    np.testing.assert_array_equal(read_image(tmp_path / "x3" / "onex3.png"),
                                  bicubic_downscale(read_image(hr_folder / "one.png"), 3))
    assert "2/2" in result.stderr  # the progress line

    one_line_error(run_script("make_lr.py", "--hr-dir", tmp_path / "none", "--out-dir",
                              tmp_path / "o", "--scale", 2), "none", "does not exist")
    one_line_error(run_script("make_lr.py", "--hr-dir", hr_folder, "--out-dir", tmp_path / "o",
                              "--scale", 0), "--scale")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
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
    assert "compiled programs: 2" in result.stdout  # MSPA runs unpadded: LR 18x15 and 14x45
    assert f"{expected.psnr:.2f}" in result.stdout


def test_evaluate_errors_are_one_line(tiny_checkpoint, hr_folder, tmp_path):
    directory, _, _ = tiny_checkpoint
    one_line_error(run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint",
                              tmp_path / "missing", "--hr-dir", hr_folder), "missing")
    one_line_error(run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint",
                              directory, "--hr-dir", tmp_path / "nope", "--json",
                              tmp_path / "s.json"), "nope")
    assert not (tmp_path / "s.json").exists()
    # A folder whose only image is too small: nothing to score, one line naming the file.
    tiny_folder = tmp_path / "tiny"
    write_image(tiny_folder / "dot.png", np.zeros((1, 1, 3), np.uint8))
    one_line_error(run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint",
                              directory, "--hr-dir", tiny_folder, "--json", tmp_path / "s.json"),
                   f"{tiny_folder / 'dot.png'}: a 1x1 image is too small for scale 2")
    assert not (tmp_path / "s.json").exists()
    # A checkpoint damaged on disk: one line naming it and the damaged array, no scores written.
    damaged = tmp_path / "damaged"
    shutil.copytree(directory, damaged)
    flip_bytes(damaged)
    one_line_error(run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint",
                              damaged, "--hr-dir", hr_folder, "--json", tmp_path / "s.json"),
                   f"{damaged}: array params/", "does not match its recorded checksum")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_evaluate_lr_dir_self_ensemble_round_y_and_skipped_files(tiny_checkpoint, tmp_path):
    """Each flag reaches the library (the scores equal evaluate_pairs with it and differ without it);
    an unreadable file of a folder is skipped and the summary says "N of M images"."""
    directory, model, variables = tiny_checkpoint
    hr_dir, lr_dir = tmp_path / "Mixed" / "HR", tmp_path / "Mixed" / "LR"
    for name, (h, w) in {"one": (36, 30), "two": (28, 90)}.items():
        write_image(hr_dir / f"{name}.png", RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
        write_image(lr_dir / f"{name}x2.png", RNG.integers(0, 256, (h // 2, w // 2, 3), dtype=np.uint8))
    (hr_dir / "bad.png").write_bytes(b"\x89PNG damaged")
    result = run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint", directory,
                        "--hr-dir", hr_dir, "--lr-dir", lr_dir, "--self-ensemble", "--round-y",
                        "--json", tmp_path / "scores.json", "--bucket", 32)
    assert result.returncode == 0, result.stderr
    assert "(2 of 3 images)" in result.stdout and "bad.png" in result.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())["Mixed"]
    assert scores["images"] == 2 and scores["skipped"] == ["bad.png"]

    def library(lr=lr_dir, **flags):
        pairs = load_folder_pairs(hr_dir, 2, lr, skip_unusable=True)
        options = dict(self_ensemble=True, round_y=True) | flags
        return evaluate_pairs(model.apply, variables, pairs, scale=2, crop_border=2, bucket=32,
                              progress=False, **options).psnr

    assert scores["psnr"] == pytest.approx(library(), abs=1e-6)
    for other in (library(lr=None), library(self_ensemble=False), library(round_y=False)):
        assert abs(other - scores["psnr"]) > 1e-5  # equal flags agree to 1e-6


@pytest.mark.slow
def test_evaluate_datasets_are_whole_or_fail(tiny_checkpoint, tmp_path):
    directory, model, variables = tiny_checkpoint
    for name, count in (("Set5", 5), ("Set14", 13)):  # Set14 lacks an image
        for i in range(count):
            write_image(tmp_path / "manual" / name / "HR" / f"img{i:02d}.png",
                        RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    data = ["--data-dir", tmp_path / "tfds", "--manual-dir", tmp_path / "manual"]
    result = run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint", directory,
                        "--datasets", "set5", *data, "--json", tmp_path / "scores.json")
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert list(scores) == ["set5"] and scores["set5"]["images"] == 5 and "(5 images)" in result.stdout
    from mspan_jax.data.datasets import load_benchmark

    pairs = load_benchmark("set5", 2, data_dir=tmp_path / "tfds")
    expected = evaluate_pairs(model.apply, variables, pairs, scale=2, crop_border=2, progress=False)
    assert scores["set5"]["psnr"] == pytest.approx(expected.psnr, abs=1e-6)

    failed = run_script("evaluate.py", "--config", "configs/x2.py", *TINY, "--checkpoint", directory,
                        "--datasets", "set5,set14", *data, "--json", tmp_path / "partial.json")
    one_line_error(failed, "set14: the set has 14 images but ", "holds 13")
    assert not (tmp_path / "partial.json").exists()


@pytest.mark.slow
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
    # Tiles with 6 pixels of context equal the whole image up to MSPA's pooled context, which sees
    # the tile border (docs/evaluation.md): at most one level here.
    whole = np.asarray(model.apply(variables, jnp.asarray(lr[None] / np.float32(255))))[0]
    expected = np.round(np.clip(whole, 0, 1) * 255).astype(np.int16)
    assert np.abs(tiled.astype(np.int16) - expected).max() <= 1
    # MSPA runs each tile at its own size (no padding): 24 or 21 rows x 24 or 22 columns.
    assert "compiled programs: 4" in result.stdout

    one_line_error(run_script("upscale.py", "--config", "configs/x2.py", *TINY, "--checkpoint",
                              directory, "--input", tmp_path / "none.png", "--output",
                              tmp_path / "o2"), "none.png")


def test_model_info_reports_the_official_imdn_size():
    """IMDN x4: the official file's 715,176 parameters and 40.89 G mult-adds (README: 40.9 G) at 720p."""
    result = run_script("model_info.py", "--config", "configs/imdn_x4.py", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["model"], info["scale"], info["params"]) == ("imdn", 4, 715_176)
    assert info["macs_g"] == 40.89 and info["output_hw"] == [720, 1280]
    assert info["input_shape_nhwc"] == [1, 180, 320, 3]
    table = run_script("model_info.py", "--config", "configs/imdn_x4.py", "--depth", 1)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "params     715,176" in lines and "mult-adds  40.89 G" in table.stdout
    tree = lines[lines.index("module tree (params):") + 1:]
    rows = {line.split()[0]: line.split()[1] for line in tree}
    assert rows["upsampler"] == f"{3 * 3 * 64 * 48 + 48:,}"  # 3x3 conv 64 -> 3*4^2 channels + bias
    assert sum(int(n.replace(",", "")) for n in rows.values()) == 715_176


def _apply(model, variables, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.apply(variables, jnp.asarray(x[None], jnp.float32)))[0]


@pytest.mark.slow
def test_upscale_keeps_alpha_gray_and_16_bits(tiny_checkpoint, tmp_path):
    directory, model, variables = tiny_checkpoint
    folder = tmp_path / "in"
    folder.mkdir()
    rgba = RNG.integers(0, 256, (12, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    gray = RNG.integers(0, 256, (12, 10), dtype=np.uint8)
    Image.fromarray(gray, "L").save(folder / "gray.png")
    rgb16 = RNG.integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    (folder / "rgb16.png").write_bytes(png16_bytes(rgb16))
    gray16 = RNG.integers(0, 65536, (12, 10), dtype=np.uint16)
    tifffile.imwrite(folder / "gray16.tif", gray16)
    out = tmp_path / "out"
    result = run_script("upscale.py", "--config", "configs/x2.py", *TINY, "--checkpoint", directory,
                        "--input", folder, "--output", out)
    assert result.returncode == 0, result.stderr
    assert "compiled programs: 1" in result.stdout  # every input is 12x10

    def sr(x: np.ndarray) -> np.ndarray:
        return np.clip(_apply(model, variables, x), 0, 1)

    # RGBA: colour through the model, alpha through the MATLAB bicubic, 8 bits each.
    with Image.open(out / "rgba_x2.png") as im:
        assert im.mode == "RGBA" and im.size == (20, 24)
        got = np.asarray(im)
    np.testing.assert_array_equal(got[..., :3], to_uint8(sr(rgba[..., :3] / 255)))
    alpha = np.clip(imresize(rgba[..., 3] / 255.0, 2.0), 0, 1)
    np.testing.assert_array_equal(got[..., 3], np.round(alpha * 255).astype(np.uint8))
    # Gray: R = G = B through the RGB model, back with rgb2gray's weights.
    with Image.open(out / "gray_x2.png") as im:
        assert im.mode == "L"
        got = np.asarray(im).astype(int)
    raw = _apply(model, variables, np.repeat(gray[..., None], 3, 2) / 255)  # unclipped, then gray
    want = np.round(np.clip(gray_plane(raw), 0, 1) * 255)
    assert np.abs(got - want).max() <= 1
    # 16 bits in, 16 bits out: the model saw x / 65535 and its output is not rounded to 8 bits.
    back = read_stored_image(out / "rgb16_x2.png")
    assert back.bits == 16 and back.color.shape == (24, 20, 3) and back.alpha is None
    got16 = np.round(back.color * 65535)
    assert np.abs(got16 - np.round(sr(rgb16 / 65535.0) * 65535)).max() <= 2
    inside = got16[(got16 > 0) & (got16 < 65535)]  # unclipped: not 8-bit values scaled up
    assert inside.size > 100 and np.mean(inside % 257 != 0) > 0.9
    back = read_stored_image(out / "gray16_x2.png")  # 16-bit gray TIFF -> 16-bit gray PNG
    assert back.bits == 16 and back.color.shape == (24, 20, 1)
    with Image.open(out / "gray16_x2.png") as im:
        assert im.mode == "I;16"


@pytest.mark.slow
def test_upscale_restoration_model_and_bad_inputs(tiny_checkpoint, tmp_path):
    directory, _, _ = tiny_checkpoint
    config = tmp_path / "ir.py"
    smallest_ir = dict(TINY_MODEL_OVERRIDES["mspan_ir"], **SMALLEST)
    config.write_text("from mspan_jax.config_base import sr_config\n\n\ndef get_config():\n"
                      "    config = sr_config('mspan_ir', 1)\n"
                      f"    config.model.update({smallest_ir!r})\n"
                      "    return config\n")
    ir_config = sr_config("mspan_ir", 1)
    ir_config.model = tiny_model_config("mspan_ir", 1, **SMALLEST)
    ir = get_model(ir_config.model)
    variables = ir.init(jax.random.key(3), jnp.zeros((1, 8, 8, 3)))
    save_params(tmp_path / "ir_ckpt", variables, ir_config.model)
    folder = tmp_path / "in"
    folder.mkdir()
    rgba = RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "a.png")
    result = run_script("upscale.py", "--config", config, "--checkpoint", tmp_path / "ir_ckpt",
                        "--input", folder, "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out" / "a_x1.png") as im:
        got = np.asarray(im)
    assert im.mode == "RGBA" and got.shape == (9, 11, 4)
    np.testing.assert_array_equal(got[..., 3], rgba[..., 3])  # scale 1: alpha as it was
    want = to_uint8(_apply(ir, variables, rgba[..., :3] / 255.0))
    np.testing.assert_array_equal(got[..., :3], want)

    # A checkpoint of the other task, and a corrupt image in the folder: one line each.
    one_line_error(run_script("upscale.py", "--config", config, "--checkpoint", directory,
                              "--input", folder, "--output", tmp_path / "o2"),
                   "mspan x2", "mspan_ir x1")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    broken = run_script("upscale.py", "--config", config, "--checkpoint", tmp_path / "ir_ckpt",
                        "--input", folder, "--output", tmp_path / "o3")
    errors = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert broken.returncode == 1 and len(errors) == 1 and "broken.png" in errors[0], broken.stderr
    assert "Traceback" not in broken.stderr
