"""Checkpoints that carry their model: `Upscaler.from_checkpoint` (tiled, batched, as the CLI) and
scripts/upscale.py / evaluate.py with --checkpoint and no --config; a given --config is checked."""

from __future__ import annotations

import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    random_variables,
    run_script,
    run_script_subprocess,
    script_module,
    tiny_model_config,
)

from mspan_jax import Upscaler
from mspan_jax.checkpoints.params import CheckpointError, save_params
from mspan_jax.checkpoints.resolve import checkpoint_config, load_weights, recorded_model_config
from mspan_jax.config_base import sr_config
from mspan_jax.data.images import read_image, write_image
from mspan_jax.models import get_model
from mspan_jax.train.checkpoint import TrainCheckpoints

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(params checkpoint dir, model config, variables) of a tiny MSPAN x2 with random weights."""
    cfg = tiny_model_config("mspan", 2, num_blocks=1, num_units=1)
    variables = random_variables(cfg, seed=1)
    directory = tmp_path_factory.mktemp("ckpt") / "tiny_x2"
    save_params(directory, variables, cfg)
    return directory, cfg, variables


def _whole(cfg, variables, lr: np.ndarray) -> np.ndarray:
    return np.asarray(get_model(cfg).apply(variables, jnp.asarray(lr[None], jnp.float32)))[0]


def test_upscaler_tiles_and_batches_like_the_model(tmp_path):
    # Tiny MSPAN without attention sees 4 LR pixels around each pixel, so 6 pixels of tile context
    # are exact (MSPA's pooled context would see the tile border: tests/test_evaluation.py).
    cfg = tiny_model_config("mspan", 2, num_blocks=1, num_units=1, attention="none")
    variables = random_variables(cfg, seed=1)
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
    assert up.upscale(batch[0, :, :, :1]).shape == (40, 80, 1)  # gray in, gray out (as the CLI)


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
    from mspan_jax.train.console import best_checkpoint  # what the end-of-training summary reads

    assert best_checkpoint(tmp_path / "run") == (5, 30.0) and best_checkpoint(tmp_path) is None
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
    save_params(tmp_path / "ir", random_variables(ir, seed=1), ir)
    config = checkpoint_config(tmp_path / "ir")
    assert (config.model.name, config.eval.crop_border, config.eval.y_channel) == ("mspan_ir", 0, False)


@pytest.mark.slow
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

    save_params(tmp_path / "ir", random_variables(ir := tiny_model_config("mspan_ir", 1), seed=1), ir)
    restoration = run_script("evaluate.py", "--checkpoint", tmp_path / "ir",
                             "--hr-dir", tmp_path / "Set")
    assert restoration.returncode == 2 and "pass its --config" in restoration.stderr, restoration.stderr


def test_the_api_takes_what_the_cli_takes(tiny, tmp_path):
    """uint8 / uint16 / float, gray (H, W) and (H, W, 1), RGBA, a path and a PIL image: the numbers of
    scripts/upscale.py (upscale_stored), in the input's layout and type; clear errors otherwise."""
    from PIL import Image

    from mspan_jax.data.images import StoredImage, read_stored_image
    from mspan_jax.upscaler import upscale_stored

    directory, cfg, _ = tiny
    up = Upscaler.from_checkpoint(directory)
    rgb16 = RNG.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    out16 = up.upscale(rgb16)
    want = upscale_stored(up.predictor, StoredImage(rgb16 / np.float32(65535), None, 16), 3)
    assert out16.dtype == np.uint16 and out16.shape == (18, 22, 3)
    np.testing.assert_array_equal(out16, np.round(np.clip(want.color.astype(np.float64), 0, 1) * 65535))

    gray = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    flat, kept = up.upscale(gray), up.upscale(gray[:, :, None])
    assert flat.shape == (18, 22) and kept.shape == (18, 22, 1)
    np.testing.assert_array_equal(flat, kept[:, :, 0])
    rgba = RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    out = up.upscale(rgba)
    assert out.shape == (18, 22, 4) and out.dtype == np.uint8

    # A path and a PIL image give what upscale.py computes from the file.
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    from_file = upscale_stored(up.predictor, read_stored_image(tmp_path / "a.png"), 3)
    expected = np.round(np.clip(np.concatenate([from_file.color, from_file.alpha[:, :, None]], 2),
                                0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(up.upscale(str(tmp_path / "a.png")), expected)
    np.testing.assert_array_equal(up.upscale(tmp_path / "a.png"), expected)
    with Image.open(tmp_path / "a.png") as im:
        np.testing.assert_array_equal(up.upscale(im), expected)
    np.testing.assert_array_equal(out, expected)

    with pytest.raises(ValueError, match="uint8, uint16 or float"):
        up.upscale(rgb16.astype(np.int32))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\) image .* got shape \(9, 11, 5\)"):
        up.upscale(np.zeros((9, 11, 5), np.uint8))
    with pytest.raises(ValueError, match="no such file"):
        up.upscale(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="got dict"):
        up.upscale({"not": "an image"})


def test_weights_by_name_and_torch_files_in_memory(tmp_path, monkeypatch):
    """`mspan_x4` resolves to the shipped weights from any folder; a PyTorch file of a known model
    loads with model=(name, scale), converted in memory to the converter's numbers."""
    from safetensors.numpy import save_file

    from mspan_jax.checkpoints import resolve
    from mspan_jax.config_base import model_config
    from mspan_jax.convert import to_state_dict

    monkeypatch.chdir(tmp_path)
    assert resolve.resolve_checkpoint("mspan_x4") == resolve.WEIGHTS_DIR / "mspan_x4"
    assert set(resolve.shipped_models()) >= {"mspan_x2", "mspan_x3", "mspan_x4"}
    with pytest.raises(CheckpointError, match=r"mspan_x9: no such checkpoint or shipped model; "
                                              r"shipped: mspan_x2, mspan_x3, mspan_x4"):
        resolve.resolve_checkpoint("mspan_x9")
    # A pip-installed (non-editable) package has no repository around it: one line saying so.
    monkeypatch.setattr(resolve, "WEIGHTS_DIR", tmp_path / "site-packages" / "weights")
    with pytest.raises(CheckpointError, match="this install has no shipped weights"):
        resolve.resolve_checkpoint("mspan_x4")
    monkeypatch.undo()

    cfg = model_config("imdn", 2)
    variables = random_variables(cfg, seed=1)
    save_file({k: np.ascontiguousarray(v) for k, v in to_state_dict(cfg, variables).items()},
              str(tmp_path / "imdn_x2.safetensors"))
    with pytest.raises(CheckpointError, match="pass --model and --scale"):
        resolve.load_model(tmp_path / "imdn_x2.safetensors")
    loaded = resolve.load_model(tmp_path / "imdn_x2.safetensors", model=("imdn", 2))
    assert (loaded.config.model.name, loaded.config.model.scale) == ("imdn", 2)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    assert Upscaler.from_checkpoint(tmp_path / "imdn_x2.safetensors", model=("imdn", 2)).scale == 2


@pytest.mark.slow
def test_upscale_folder_survives_bad_files(tiny, tmp_path):
    """Every readable image is written, whatever its format or size (a WebP, a JPEG without an image
    extension, a 1x1 and a 3x10 PNG below MSPA's 4 pixels, a phone JPEG turned by its EXIF
    orientation, with its ICC profile and DPI kept); a corrupt one and a non-image are listed one
    line each with why; exit 1; --skip-existing, --suffix, --ext and --list-models."""
    from PIL import Image, ImageCms

    directory, _, _ = tiny
    folder = tmp_path / "in"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    folder.mkdir()
    Image.fromarray(RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(
        folder / "a.png", icc_profile=icc, dpi=(300, 300))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_image(folder / "c.jpg", RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    Image.fromarray(RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(folder / "d.webp")
    Image.fromarray(RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(folder / "e.dat", "JPEG")
    Image.fromarray(RNG.integers(0, 256, (1, 1, 3), dtype=np.uint8)).save(folder / "f.png")
    Image.fromarray(RNG.integers(0, 256, (10, 3), dtype=np.uint8)).save(folder / "g.png")  # 3 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 12 wide, 10 high; shown turned 90 degrees clockwise: 10 x 12
    Image.fromarray(RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(
        folder / "phone.jpg", exif=exif, icc_profile=icc, dpi=(72, 96))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    done = run_script("upscale.py", "--checkpoint", directory, "--input", folder, "--output", out,
                      "--ext", "auto")
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "c_x2.jpg", "d_x2.png", "e_x2.png",
                                                     "f_x2.png", "g_x2.png", "phone_x2.jpg"]
    sizes = {}
    for p in out.iterdir():
        with Image.open(p) as im:
            sizes[p.stem] = (im.size, im.mode, im.info.get("icc_profile"), im.info.get("dpi"))
    assert sizes["f_x2"][:2] == ((2, 2), "RGB") and sizes["g_x2"][:2] == ((6, 20), "L")
    assert sizes["phone_x2"][:3] == ((20, 24), "RGB", icc) and sizes["phone_x2"][3] == (96, 72)
    assert sizes["a_x2"][2] == icc and sizes["a_x2"][3] == pytest.approx((300, 300), abs=0.02)
    assert f"skipped {folder / 'notes.txt'}: not an image (PNG, JPEG, WebP" in done.stdout
    assert f"FAILED {folder / 'b.png'}: not an image file" in done.stdout
    assert "wrote 7 images to" in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 of 8 images could not be read" in errors[0], done.stderr
    assert "Traceback" not in done.stderr

    one = run_script("upscale.py", "--checkpoint", directory, "--input", folder / "phone.jpg",
                     "--output", tmp_path / "one")
    assert one.returncode == 0 and "wrote 1 image to" in one.stdout, one.stderr
    for name in ("b.png", "d.webp", "e.dat", "f.png", "g.png", "phone.jpg"):
        (folder / name).unlink()
    for name in ("d_x2.png", "e_x2.png", "f_x2.png", "g_x2.png", "phone_x2.jpg"):
        (out / name).unlink()
    again = run_script("upscale.py", "--checkpoint", directory, "--input", folder, "--output",
                       tmp_path / "out", "--skip-existing", "--suffix", "", "--dtype", "bfloat16")
    assert again.returncode == 0 and "(bfloat16)" in again.stdout, again.stderr
    bf16, f32 = (read_image(tmp_path / "out" / n).astype(int) for n in ("a.png", "a_x2.png"))
    assert 0 < np.abs(bf16 - f32).max() <= 8  # bfloat16 compute: close to float32, not equal
    assert f"{tmp_path / 'out' / 'a.png'} exists" not in again.stdout  # a.png is new: suffix ''
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "a_x2.png", "c.png",
                                                                      "c_x2.jpg"]
    third = run_script("upscale.py", "--checkpoint", directory, "--input", folder, "--output",
                       tmp_path / "out", "--skip-existing", "--ext", "auto")
    assert third.returncode == 0 and "wrote 0 images" in third.stdout, third.stderr
    assert f"{tmp_path / 'out' / 'a_x2.png'} exists (--skip-existing)" in third.stdout

    listed = run_script("upscale.py", "--list-models")
    assert listed.returncode == 0 and "mspan_x4   mspan x4" in listed.stdout, listed.stderr


def test_the_official_imdn_pth_runs_without_conversion(imdn_x4_weights):
    """IMDN_x4.pth given straight to the API (what upscale.py / evaluate.py do with --model imdn
    --scale 4): converted in memory to the numbers convert_torch_weights.py writes."""
    from mspan_jax.config_base import model_config
    from mspan_jax.convert import convert_state_dict, read_weights

    up = Upscaler.from_checkpoint(imdn_x4_weights, model=("imdn", 4))
    expected = convert_state_dict(model_config("imdn", 4), read_weights(imdn_x4_weights)[0])
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(up.predictor.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    assert up.upscale(np.full((8, 8, 3), 128, np.uint8)).shape == (32, 32, 3)


def test_the_api_keeps_what_it_is_given(tiny):
    """A PIL image in gives a PIL image out (mode, ICC profile and DPI kept, EXIF orientation
    applied); float samples outside [0, 1] are refused in one line, not clipped to white; images
    below MSPA's 4 pixels, down to 1x1, upscale to their size."""
    from PIL import Image, ImageCms

    directory, _, _ = tiny
    up = Upscaler.from_checkpoint(directory)
    rgb = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im = Image.fromarray(rgb)
    im.info.update(icc_profile=icc, dpi=(300, 300))
    out = up.upscale(im)
    assert isinstance(out, Image.Image) and (out.mode, out.size) == ("RGB", (22, 18))
    assert out.info["icc_profile"] == icc and out.info["dpi"] == (300, 300)
    np.testing.assert_array_equal(np.asarray(out), up.upscale(rgb))
    for mode in ("L", "LA", "RGBA", "I;16", "I", "P"):
        back = up.upscale(im.convert(mode))
        assert (back.mode, back.size) == ({"P": "RGB"}.get(mode, mode), (22, 18)), mode
    exif = Image.Exif()
    exif[0x0112] = 8  # shown turned 90 degrees counterclockwise
    turned = Image.open(_jpeg_with(rgb, exif))
    assert up.upscale(turned).size == (18, 22)

    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\], got values from 0 to "
                                         r"255 \(0..255 samples: divide by 255"):
        up.upscale(np.linspace(0, 255, 9 * 11 * 3).reshape(9, 11, 3))
    with pytest.raises(ValueError, match="NaN"):
        up.upscale(np.full((4, 4, 3), np.nan, np.float32))
    near = up.upscale(np.clip(rgb / 255.0 + 1e-4, 0, 1 + 1e-4))  # float rounding: taken, clipped
    assert near.dtype == np.float32 and near.max() <= 1.0
    with pytest.raises(ValueError, match=r"at least 1x1 pixels, got shape \(0, 5, 3\)"):
        up.upscale(np.zeros((0, 5, 3), np.uint8))
    assert up.upscale(rgb[:1, :1]).shape == (2, 2, 3) and up.upscale(rgb[:, :3]).shape == (18, 6, 3)


def _jpeg_with(rgb: np.ndarray, exif) -> io.BytesIO:
    from PIL import Image

    data = io.BytesIO()
    Image.fromarray(rgb).save(data, "JPEG", exif=exif)
    data.seek(0)
    return data


def test_alpha_and_tiles_stream_in_strips_exactly_and_in_bounded_memory(tiny, tmp_path, capsys):
    """A tiled RGBA upscale made a row of tiles at a time has the whole-image alpha bicubic, a PNG
    written a row of tiles at a time equals the tiles assembled at once, and the memory writing it
    takes does not grow with the image (no float copy of the output, no whole-output buffer)."""
    import tracemalloc

    from mspan_jax.data.images import read_stored_image, stored_image
    from mspan_jax.data.imresize import imresize

    directory, _, _ = tiny
    up = Upscaler.from_checkpoint(directory, tile=16, tile_overlap=2)
    rgba = RNG.integers(0, 256, (40, 14, 4), dtype=np.uint8)
    out = up.upscale(rgba)
    stored_alpha = (rgba[:, :, 3] / np.float32(255)).astype(np.float64)  # as StoredImage holds it
    alpha = np.clip(imresize(stored_alpha, 2.0), 0, 1)
    np.testing.assert_array_equal(out[:, :, 3], np.round(alpha * 255).astype(np.uint8))

    def peak_writing(lr_height: int) -> int:
        """Peak traced bytes of writing a PNG of an (lr_height, 100) image."""
        tracemalloc.start()
        try:
            script["write_output"](tmp_path / "t.png", up.predictor, images[lr_height], 3, **options)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    images = {h: stored_image(RNG.integers(0, 256, (h, 100, 3), dtype=np.uint8)) for h in (100, 400)}
    options = dict(tile=16, tile_overlap=2)
    with script_module("upscale.py") as script:
        script["write_output"](tmp_path / "warm.png", up.predictor, images[100], 3, **options)
        short, tall = peak_writing(100), peak_writing(400)
    # The 400-high image's output is 1.44 MB larger as uint8 (5.8 MB as float32): a row of tiles
    # at a time, memory does not grow with it.
    assert tall < short + 0.1 * (800 - 200) * 200 * 3, (short, tall)
    # The progress line ends only once the caller has taken (written) the last row of tiles.
    from mspan_jax.inference import upscale_strips

    strips = upscale_strips(up.predictor, images[100].color, progress=True, **options)
    taken = [next(strips) for _ in range(9)]  # 100 LR rows: 9 rows of tiles (cores of 12)
    assert sum(len(t) for t in taken) == 200 and "tiles 81/81" not in capsys.readouterr().err
    assert next(strips, None) is None and "tiles 81/81" in capsys.readouterr().err
    written = read_stored_image(tmp_path / "t.png")
    np.testing.assert_array_equal(np.round(written.color * 255).astype(np.uint8),
                                  up.upscale(np.round(images[400].color * 255).astype(np.uint8)))


@pytest.mark.slow
def test_sigterm_while_a_png_is_written_leaves_nothing(tiny, tmp_path):
    """A PNG output is written a row of tiles at a time, under a temporary name; SIGTERM (kill, a job
    scheduler) mid-image ends the run as Ctrl-C does, and the temporary file goes with it."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO_ROOT, subprocess_env

    directory, _, _ = tiny
    write_image(tmp_path / "big.png", RNG.integers(0, 256, (400, 400, 3), dtype=np.uint8))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "upscale.py"), "--checkpoint",
                             str(directory), "--input", str(tmp_path / "big.png"), "--output", str(out),
                             "--tile", "24", "--tile-overlap", "2"],
                            env=subprocess_env(JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out.is_dir() and any(out.iterdir())) and proc.poll() is None:
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert list(out.iterdir()) == [], list(out.iterdir())
