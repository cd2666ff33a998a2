"""TFLite export (mspan_jax.deploy.tflite_export, scripts/export.py --format tflite) run by LiteRT's
interpreter: parity with the JAX model at two sizes that are not multiples of each other, from one
file (sizes free in its signature), TFLite builtins only, metadata, float16 weights."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pytest
from conftest import SMALL_WIDTH, random_variables, require_extra, run_script, tiny_model_config

from mspan_jax.deploy.tflite_runtime import read_metadata as metadata
from mspan_jax.models.registry import get_model, specs

# Every test converts through TensorFlow, whose import alone takes ~7 s: the imports wait for the
# first test that runs (`export_tflite`, `interpreter_of`), not the fast tier's collection.
pytestmark = pytest.mark.slow


def export_tflite(*args: Any, **kwargs: Any) -> bytes:
    """`mspan_jax.deploy.tflite_export.export_tflite`, TensorFlow imported on first use."""
    require_extra("tensorflow", "tflite")
    from mspan_jax.deploy.tflite_export import export_tflite as export

    return export(*args, **kwargs)


def interpreter_of(data: bytes) -> Any:
    """LiteRT's interpreter of a .tflite file's bytes."""
    return require_extra("ai_edge_litert.interpreter", "tflite").Interpreter(model_content=data)


SIZES = ((17, 23), (40, 32))  # not multiples of each other; 17, 23: odd, not /4
TOLERANCE = 1e-5  # max abs, per unit of the output's range
REGISTERED = [(name, 4 if "sr" in spec.tasks else 1) for name, spec in specs().items()]


def run(interpreter: Any, x: np.ndarray) -> np.ndarray:
    """One call at x's size: the input resized (batch, height and width are free), then invoked."""
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], x.shape, strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def max_error(cfg, variables, data: bytes, sizes=SIZES, batch: int = 1) -> float:
    """The largest max-abs difference from JAX over `sizes`, per unit of the output's range."""
    model = get_model(cfg)
    interpreter = interpreter_of(data)
    rng = np.random.default_rng(0)
    worst = 0.0
    for h, w in sizes:
        x = rng.random((batch, h, w, int(cfg.get("in_channels", 3))), dtype=np.float32)
        expected = np.asarray(jax.jit(model.apply)(variables, x))
        got = run(interpreter, x)
        assert got.shape == expected.shape, (h, w)
        worst = max(worst, float(np.abs(got - expected).max()) / max(1.0, np.abs(expected).max()))
    return worst


@pytest.fixture(scope="module")
def tiny_mspan():
    cfg = tiny_model_config("mspan", 4)
    variables = random_variables(cfg, std=0.1)
    return cfg, variables, export_tflite(cfg, variables)


# Each case compiles the JAX model at two sizes and converts once (~20-40 s on the shared CPU).
@pytest.mark.parametrize("name,scale", REGISTERED)
def test_every_registered_model_matches_jax_at_two_sizes(name, scale):
    cfg = tiny_model_config(name, scale, **SMALL_WIDTH.get(name, {}))
    variables = random_variables(cfg, std=0.1)
    assert max_error(cfg, variables, export_tflite(cfg, variables)) <= TOLERANCE


def test_one_file_any_size_builtins_only_and_metadata(tiny_mspan):
    cfg, variables, data = tiny_mspan
    interpreter = interpreter_of(data)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape_signature"]) == [-1, -1, -1, 3] and inp["dtype"] == np.float32
    assert list(out["shape_signature"]) == [-1, -1, -1, 3]
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "CONV_2D" in ops and not any(op.startswith(("Flex", "CUSTOM")) for op in ops), ops
    meta = metadata(data)
    assert (meta["model"], meta["scale"], meta["layout"], meta["precision"]) == ("mspan", "4", "nhwc",
                                                                                  "float32")
    assert int(meta["params"]) == sum(a.size for a in jax.tree.leaves(variables))
    assert meta["producer"].startswith("mspan-jax ")
    # batch 2 through the same file after the sizes above
    assert max_error(cfg, variables, data, sizes=((21, 19),), batch=2) <= TOLERANCE


def test_float16_weights_halve_the_file_and_stay_close(tiny_mspan):
    cfg, variables, data32 = tiny_mspan
    data16 = export_tflite(cfg, variables, precision="float16")
    assert metadata(data16)["precision"] == "float16"
    interpreter = interpreter_of(data16)
    assert any(t["dtype"] == np.float16 for t in interpreter.get_tensor_details())
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    err16 = max_error(cfg, variables, data16, sizes=SIZES[:1])
    assert 1e-5 < err16 < 2e-2  # float16 weights: not silently float32, and not broken
    assert max_error(cfg, variables, data32, sizes=SIZES[:1]) <= TOLERANCE


def test_export_script_writes_tflite_and_rejects_onnx_flags(tmp_path):
    out = tmp_path / "mspan_x4.tflite"
    result = run_script("export.py", "--checkpoint", "mspan_x4", "--format", "tflite", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "TFLite builtins" in result.stdout
    data = out.read_bytes()
    assert metadata(data)["model"] == "mspan"
    from mspan_jax.checkpoints.resolve import load_model

    loaded = load_model("mspan_x4")
    assert max_error(loaded.model_config, loaded.variables, data, sizes=SIZES[:1]) <= TOLERANCE
    bad = run_script("export.py", "--checkpoint", "mspan_x4", "--format", "tflite", "--layout",
                     "nchw", "--out", tmp_path / "x.tflite")
    assert bad.returncode == 2 and "NHWC" in bad.stderr and not (tmp_path / "x.tflite").exists()


def test_upscale_runs_a_tflite_file_like_the_jax_path(tiny_mspan, tmp_path):
    """upscale.py and Upscaler with a .tflite --checkpoint (LiteRT, tiles included) give the JAX
    path's pixels to one uint8 level; a foreign .tflite is a one-line error."""
    from PIL import Image

    from mspan_jax import Upscaler

    cfg, variables, data = tiny_mspan
    path = tmp_path / "tiny.tflite"
    path.write_bytes(data)
    image = np.random.default_rng(3).integers(0, 256, (30, 37, 3), dtype=np.uint8)
    options = dict(tile=16, tile_overlap=4)
    got = Upscaler.from_checkpoint(path, **options).upscale(image).astype(np.int16)
    expected = Upscaler(cfg, variables, **options).upscale(image).astype(np.int16)
    assert got.shape == (120, 148, 3) and np.abs(got - expected).max() <= 1
    Image.fromarray(image).save(tmp_path / "a.png")
    result = run_script("upscale.py", "--checkpoint", path, "--input", tmp_path / "a.png",
                        "--output", tmp_path / "out", "--tile", 16, "--tile-overlap", 4)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a_x4.png")), got)
    (tmp_path / "foreign.tflite").write_bytes(b"not a flatbuffer")
    bad = run_script("upscale.py", "--checkpoint", tmp_path / "foreign.tflite", "--input",
                     tmp_path / "a.png", "--output", tmp_path / "out2")
    assert bad.returncode == 2 and "foreign.tflite" in bad.stderr, bad.stderr
