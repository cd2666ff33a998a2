"""Figures and export on tiny models: the labelled drawing, compare.py, visualize_mspa.py, export.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    REPO_ROOT,
    find_exact,
    one_line_error,
    random_variables,
    require_extra,
    run_script,
    run_script_subprocess,
    script_module,
    subprocess_env,
    tiny_model_config,
)

from mspan_jax import metrics
from mspan_jax.checkpoints.params import save_params
from mspan_jax.data.degradations import add_gaussian_noise, seed_for_name
from mspan_jax.data.images import gray_plane, read_image, to_uint8, write_image
from mspan_jax.data.imresize import bicubic_downscale, bicubic_upscale, round_uint8
from mspan_jax.drawing import Panel, comparison_figure, draw_box, panel_grid, zoom
from mspan_jax.evaluation import EvalResult, ImageScore
from mspan_jax.inference import Predictor
from mspan_jax.models import get_model

RNG = np.random.default_rng(0)
TIMEOUT = 300


def _tiny_checkpoint(directory: Path, name: str, scale: int, seed: int = 0, **overrides):
    """A saved tiny model with random weights, its config file and (model, variables)."""
    cfg = tiny_model_config(name, scale, **overrides)
    model = get_model(cfg)
    variables = random_variables(model, seed)
    save_params(directory / f"{name}_x{scale}", variables, cfg)
    overrides = "".join(f"    config.model.{k} = {v!r}\n" for k, v in cfg.items()
                        if k not in ("name", "scale", "dtype"))
    config = directory / f"{name}_x{scale}.py"
    config.write_text("from mspan_jax.config_base import sr_config\n\n\ndef get_config():\n"
                      f"    config = sr_config({name!r}, {scale})\n{overrides}    return config\n")
    return directory / f"{name}_x{scale}", config, model, variables


def test_panel_grid_places_images_in_equal_cells_with_text_below():
    images = [RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(5)]
    grid = panel_grid([Panel(im, f"model {i}", "30.00 dB / 0.9000") for i, im in enumerate(images)],
                      columns=3)
    spots = [find_exact(grid, im) for im in images]
    assert all(len(s) == 1 for s in spots)
    (y0, x0), (_, x1), (_, x2), (y3, x3), (y4, x4) = (s[0] for s in spots)
    assert x1 - x0 == x2 - x1 > 30 and x3 == x0 and x4 == x1 and y3 == y4 > y0 + 20
    below = grid[y0 + 20:y3, x0:x1]  # the first cell's text
    assert (below < 128).any() and (below == 255).mean() > 0.5
    assert grid.shape[1] == 3 * (x1 - x0)


def test_draw_box_and_comparison_figure():
    image = np.full((40, 50, 3), 200, np.uint8)
    boxed = draw_box(image, (5, 10, 8, 12), width=1)
    assert (boxed[5, 10:22] == (255, 0, 0)).all() and (boxed[12, 10:22] == (255, 0, 0)).all()
    assert (boxed[5:13, 10] == (255, 0, 0)).all() and (boxed[5:13, 21] == (255, 0, 0)).all()
    assert (boxed[6:12, 11:21] == 200).all() and (boxed[:5] == 200).all()
    crop = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    figure = comparison_figure(Panel(image, "HR"), (5, 10, 8, 8),
                               [Panel(zoom(crop, 3), "a", "1 dB"), Panel(crop, "b")], columns=1)
    assert len(find_exact(figure, zoom(crop, 3))) == 1 and len(find_exact(figure, crop)) == 1
    assert (figure == (255, 0, 0)).all(axis=2).any()  # the box survives the scaling


def test_training_samples_are_labelled_crops():
    from mspan_jax.data.pairs import EvalPair
    from mspan_jax.train.validation import summary_figure

    hr = RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    pair = EvalPair(name="img", lr=hr[::2, ::2], hr=hr)
    bic, sr = RNG.integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    base = EvalResult(20.0, 0.5, [ImageScore("img", 20.0, 0.5)], 0, {"img": bic})
    result = EvalResult(25.0, 0.7, [ImageScore("img", 25.0, 0.7)], 0, {"img": sr})
    picture = summary_figure([pair], base, result, 16, "mspan x2", "sr")
    spots = [find_exact(picture, im[12:28, 16:32]) for im in (bic, sr, hr)]
    assert [len(s) for s in spots] == [1, 1, 1]
    assert spots[0][0][0] == spots[1][0][0] == spots[2][0][0]
    assert spots[0][0][1] < spots[1][0][1] < spots[2][0][1]
    assert picture.shape[0] > 16 + 20  # room for two lines of text


@pytest.mark.slow
def test_compare_two_models_and_bad_inputs(tmp_path):
    mspan_dir, mspan_cfg, model, variables = _tiny_checkpoint(tmp_path, "mspan", 2)
    imdn_dir, imdn_cfg, _, _ = _tiny_checkpoint(tmp_path, "imdn", 2, seed=1)
    hr = RNG.integers(0, 256, (41, 50, 3), dtype=np.uint8)
    write_image(tmp_path / "photo.png", hr)
    out = tmp_path / "cmp.png"
    result = run_script_subprocess("compare.py", "--image", tmp_path / "photo.png",  # the real CLI
                                   "--model", f"{mspan_cfg}={mspan_dir}",
                                   "--model", imdn_dir,  # a bare checkpoint: its recorded model
                                   "--labels", "A,B", "--crop", 16, "--box", "4,6", "--zoom", 2,
                                   "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    figure = read_image(out)
    hr = hr[:40]  # modcrop to the scale
    lr = bicubic_downscale(hr, 2)
    sr = to_uint8(Predictor(model.apply, variables, scale=2)(lr / np.float32(255)))
    assert f"A: {metrics.psnr(sr, hr, crop_border=2):.2f} dB" in result.stdout
    bicubic = bicubic_upscale(lr, 2)
    assert f"bicubic: {metrics.psnr(bicubic, hr, crop_border=2):.2f} dB" in result.stdout
    for img in (hr, bicubic):
        assert len(find_exact(figure, zoom(img[4:20, 6:22], 2))) == 1

    # A given LR (--lq) instead of the bicubic one.
    lr = RNG.integers(0, 256, (20, 25, 3), dtype=np.uint8)
    write_image(tmp_path / "lr.png", lr)
    result = run_script("compare.py", "--image", tmp_path / "photo.png", "--lq", tmp_path / "lr.png",
                  "--model", f"{mspan_cfg}={mspan_dir}", "--crop", 16, "--box", "4,6", "--zoom", 2,
                  "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    bicubic = bicubic_upscale(lr, 2)
    assert f"bicubic: {metrics.psnr(bicubic, hr, crop_border=2):.2f} dB" in result.stdout
    assert len(find_exact(read_image(out), zoom(bicubic[4:20, 6:22], 2))) == 1

    # A gray denoising model: gray reference, one noise field, scored as config.eval says.
    ir_dir, ir_cfg, _, _ = _tiny_checkpoint(tmp_path, "mspan_ir", 1, in_channels=1, out_channels=1)
    result = run_script("compare.py", "--image", tmp_path / "photo.png", "--model", f"{ir_cfg}={ir_dir}",
                  "--sigma", 15, "--crop", 16, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    photo = read_image(tmp_path / "photo.png")
    clean = np.repeat(round_uint8(gray_plane(photo))[..., None], 3, axis=2)
    rng = np.random.default_rng(seed_for_name("photo"))  # evaluation's noisy input: float, unclipped
    noisy = add_gaussian_noise(clean / np.float32(255), 15.0, rng, gray=True) * 255.0
    assert (noisy[..., 0] == noisy[..., 2]).all() and noisy.min() < 0
    psnr = metrics.psnr(noisy, clean, crop_border=1, unquantized=True)
    assert f"noisy (sigma 15): {psnr:.2f} dB" in result.stdout

    one_line_error(run_script("compare.py", "--image", tmp_path / "photo.png", "--model",
                              f"{mspan_cfg}={mspan_dir}", "--model", f"{ir_cfg}={ir_dir}", "--crop", 16,
                              "--out", out),
                   "differ in (scale, input channels)")
    one_line_error(run_script("compare.py", "--image", tmp_path / "photo.png", "--model",
                              f"{ir_cfg}={mspan_dir}", "--crop", 16, "--out", out),
                   "mspan x2", "mspan_ir x1")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    one_line_error(run_script("compare.py", "--image", tmp_path / "bad.png", "--model",
                              f"{mspan_cfg}={mspan_dir}", "--out", out), "bad.png")


def test_compare_takes_a_pytorch_weight_file_by_model_name(tmp_path, imdn_x4_weights):
    """NAME_xS=WEIGHTS.pth: the official IMDN x4 converted in memory, as upscale.py's --model/--scale;
    an unknown name fails in one line."""
    hr = RNG.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    write_image(tmp_path / "photo.png", hr)
    out = tmp_path / "fig.png"
    result = run_script("compare.py", "--image", tmp_path / "photo.png", "--model",
                        f"imdn_x4={imdn_x4_weights}", "--crop", 16, "--out", out)
    assert result.returncode == 0, result.stderr
    assert read_image(out).ndim == 3 and f"imdn ({imdn_x4_weights.name})" in result.stdout
    one_line_error(run_script("compare.py", "--image", tmp_path / "photo.png", "--model",
                              f"nosuch_x4={imdn_x4_weights}", "--out", out), "nosuch")


@pytest.mark.slow
def test_visualize_mspa_captures_the_attention_of_chosen_blocks(tmp_path):
    require_extra("matplotlib", "figures")
    ckpt, config, model, variables = _tiny_checkpoint(tmp_path, "mspan", 2)
    image = RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    write_image(tmp_path / "in.png", image)
    result = run_script("visualize_mspa.py", "--checkpoint", ckpt, "--image",  # the recorded model
                        tmp_path / "in.png", "--out", tmp_path / "mspa.png")
    assert result.returncode == 0, result.stderr[-2000:]
    from PIL import Image

    figure = np.asarray(Image.open(tmp_path / "mspa.png").convert("RGB"))  # matplotlib writes RGBA
    assert figure.shape[0] > figure.shape[1] > 400  # 3 rows of 2 columns, captions below
    gray = (figure[..., 0] == figure[..., 1]) & (figure[..., 1] == figure[..., 2])
    assert (~gray).mean() > 0.05 and (gray & (figure[..., 0] < 250)).mean() > 0.05  # viridis, gray
    # Two blocks: both shown by default (the paper's 2, 4, 6 needs six), one line each.
    assert [ln.split(":")[0] for ln in result.stdout.splitlines()[:2]] == ["IDDB1", "IDDB2"]
    # The map entering MSPA is the IDDB's `fuse` conv output: captured here independently.
    x = jnp.asarray(image[None] / np.float32(255))
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    for block in (1, 2):
        fuse = np.asarray(state["intermediates"]["body"][f"IDDB{block}"]["fuse"]["__call__"][0][0])
        mean = fuse.mean(axis=-1)
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(f"IDDB{block}:"))
        assert "input tenengrad=" in line and f"std={mean.std():.4g} mean={mean.mean():.4g};" in line
        mspa = state["intermediates"]["body"][f"IDDB{block}"]["mspa"]
        np.testing.assert_allclose(mspa["output"][0], mspa["input"][0] * mspa["attention"][0], rtol=1e-6)
        assert float(mspa["attention"][0].min()) > 0 and float(mspa["attention"][0].max()) < 1

    imdn_dir, imdn_cfg, _, _ = _tiny_checkpoint(tmp_path, "imdn", 2)
    one_line_error(run_script("visualize_mspa.py", "--config", imdn_cfg, "--checkpoint", imdn_dir,
                              "--image", tmp_path / "in.png", "--out", tmp_path / "x.png"),
                   "has no MSPA")
    (tmp_path / "ca").mkdir()
    ca_dir, _, _, _ = _tiny_checkpoint(tmp_path / "ca", "mspan", 2, attention="ca")
    one_line_error(run_script("visualize_mspa.py", "--checkpoint", ca_dir, "--image",
                              tmp_path / "in.png", "--out", tmp_path / "x.png"),
                   "attention='ca'", "has no MSPA")
    one_line_error(run_script("visualize_mspa.py", "--config", config, "--checkpoint", ckpt, "--image",
                              tmp_path / "in.png", "--blocks", "3", "--out", tmp_path / "x.png"),
                   "IDDB1..IDDB2")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name, scale", [("mspan", 3), ("imdn", 2), ("mspan_ir", 1)])
def test_export_matches_flax_at_any_size(tmp_path, name, scale):
    from jax import export

    with script_module("export.py") as script:  # its flags are removed again on exit
        export_model = script["export_model"]
    cfg = tiny_model_config(name, scale)
    model = get_model(cfg)
    variables = random_variables(model)
    restored = export.deserialize(export_model(model, variables, 3, ["cpu"]).serialize())
    for shape in ((1, 13, 9, 3), (2, 7, 20, 3)):
        x = RNG.random(shape, dtype=np.float32)
        np.testing.assert_allclose(np.asarray(restored.call(x)), np.asarray(model.apply(variables, x)),
                                   atol=1e-5)


@pytest.mark.slow
def test_export_cli_file_runs_without_the_package(tmp_path):
    ckpt, config, model, variables = _tiny_checkpoint(tmp_path, "mspan", 2)
    out = tmp_path / "m.jaxexport"
    result = run_script("export.py", "--checkpoint", ckpt, "--out", out)  # the recorded model
    assert result.returncode == 0, result.stderr[-2000:]
    assert "float32[b,h,w,3]" in result.stdout and "float32[b,2*h,2*w,3]" in result.stdout
    x = RNG.random((1, 11, 6, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["mspan_jax"] = sys.modules["flax"] = None  # neither may be imported
        import numpy as np
        from jax import export
        exported = export.deserialize(open({str(out)!r}, "rb").read())
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, np.asarray(exported.call(x)))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=subprocess_env(),
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.asarray(model.apply(variables, x)),
                               atol=1e-5)
    one_line_error(run_script("export.py", "--config", config, "--checkpoint", tmp_path / "nope",
                              "--out", tmp_path / "n.jaxexport"), "nope")
    assert not (tmp_path / "n.jaxexport").exists()


def test_visualize_mspa_without_matplotlib_says_what_to_install(tmp_path):
    script = ("import runpy, sys\nfrom importlib.machinery import PathFinder\n\n\n"
              "class Hide(PathFinder):\n    @classmethod\n"
              "    def find_spec(cls, name, path=None, target=None):\n"
              "        return None if name.partition('.')[0] == 'matplotlib' else "
              "PathFinder.find_spec(name, path, target)\n\n\n"
              "sys.meta_path[:] = [Hide if f is PathFinder else f for f in sys.meta_path]\n"
              f"sys.argv = ['visualize_mspa.py', '--config', 'configs/quickstart.py', '--checkpoint', "
              f"{str(tmp_path)!r}, '--image', 'skimage:chelsea', '--out', {str(tmp_path / 'f.png')!r}]\n"
              "runpy.run_path('scripts/visualize_mspa.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=TIMEOUT)
    one_line_error(result, "matplotlib", "[figures]")
