"""PyTorch -> Flax conversion: reference models, round trips at every scale and block attention,
file formats, refusals, and the convert_torch_weights.py CLI: --verify parity at x2, x3, x4 and for
every attention (none, ca, esa, mspa), and bad inputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest
from conftest import REPO_ROOT, one_line_error, require_torch, run_script
from conftest import tiny_model_config as tiny

torch = require_torch()

from mspan_jax.checkpoints.params import expected_variables, load_params  # noqa: E402
from mspan_jax.config_base import model_config  # noqa: E402
from mspan_jax.convert import (  # noqa: E402
    ConversionError,
    convert_state_dict,
    key_map,
    read_state_dict,
    read_weights,
    to_state_dict,
)
from mspan_jax.convert.torch_reference import build_torch_model, max_abs_difference  # noqa: E402
from mspan_jax.models import get_model  # noqa: E402
from mspan_jax.models.attention import ATTENTIONS  # noqa: E402
from mspan_jax.models.complexity import count_params  # noqa: E402

SCRIPT = REPO_ROOT / "scripts" / "convert_torch_weights.py"


def random_torch_model(cfg, seed: int = 0, std: float | None = 0.3):
    """The reference model with every weight and bias random (not the init's zeros/structure):
    N(0, std^2), or with `std` None N(0, 1 / fan-in) weights and N(0, 0.1^2) biases, which keeps
    the activations of a full-width model in range."""
    torch.manual_seed(seed)
    model = build_torch_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if std is not None:
                p.copy_(torch.randn_like(p) * std)
            else:
                fan_in = p[0].numel() if p.ndim > 1 else 100
                p.copy_(torch.randn_like(p) / fan_in**0.5)
    return model


def numpy_state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_torch_reference_imdn_is_the_official_size():
    model = build_torch_model(model_config("imdn", 4))
    state = model.state_dict()
    assert len(state) == 92
    assert sum(v.numel() for v in state.values()) == 715_176
    assert {"fea_conv.weight", "IMDB1.c5.bias", "IMDB6.cca.conv_du.0.weight", "IMDB6.cca.conv_du.2.bias",
            "c.0.weight", "LR_conv.weight", "upsampler.0.weight"} <= set(state)
    # The Flax tree maps onto exactly these keys, with the same shapes.
    assert sorted(key_map(model_config("imdn", 4)).values()) == sorted(state)


@pytest.mark.parametrize("name, scale, attention, params", [
    ("mspan", 4, "mspa", 611_952), ("mspan", 2, "none", 542_652), ("mspan", 2, "ca", 544_686),
    ("mspan", 2, "esa", 582_252), ("mspan_ir", 1, "mspa", 827_427), ("mspan_ir", 1, "ca", None)])
def test_torch_reference_mspan_has_the_flax_parameter_count(name, scale, attention, params):
    cfg = model_config(name, scale)
    cfg.attention = attention
    model = build_torch_model(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == count_params(expected_variables(cfg)) and n == (params or n)
    assert sorted(key_map(cfg).values()) == sorted(model.state_dict())
    first = "IDDB1." if name == "mspan" else "stage1.iddb."
    block = {k[len(first):].split(".")[0] for k in model.state_dict() if k.startswith(first)}
    assert block & {"mspa", "ca", "esa"} == ({attention} - {"none"})


@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg",
    [
        tiny("mspan", 2),
        tiny("mspan", 3, mspa_interactions=3),  # one more multi-semantic interaction
        tiny("mspan", 4),
        tiny("mspan", 2, attention="none"),
        tiny("mspan", 2, attention="ca"),
        tiny("mspan", 2, attention="esa"),
        tiny("imdn", 4),
        tiny("mspan_ir", 1),
        tiny("mspan_ir", 1, attention="esa"),
    ],
    ids=["mspan_x2", "mspan_x3_3interactions", "mspan_x4", "mspan_x2_none", "mspan_x2_ca",
         "mspan_x2_esa", "imdn_x4", "mspan_ir", "mspan_ir_esa"],
)
def test_round_trip_gives_identical_outputs(cfg):
    """Random torch model -> state_dict -> convert -> Flax gives the torch output (<= 1e-5), which
    also proves the upsampler's pixel-shuffle channel order needs no permutation at x2/x3/x4, and
    that pooling, bilinear resizes and ESA's stride-2 conv match PyTorch's on odd sizes."""
    model = random_torch_model(cfg)
    state = numpy_state_dict(model)
    variables = convert_state_dict(cfg, state)
    x = np.random.default_rng(1).random((2, 3, 15, 17), dtype=np.float32)  # ESA needs >= 15
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = np.asarray(jax.jit(get_model(cfg).apply)(variables, x.transpose(0, 2, 3, 1)))
    got = got.transpose(0, 3, 1, 2)
    assert got.shape == expected.shape == (2, 3, 15 * cfg.scale, 17 * cfg.scale)
    assert np.max(np.abs(got - expected)) <= 1e-5 * max(1.0, float(np.max(np.abs(expected))))
    # ... and Flax -> torch gives the file back bit for bit.
    back = to_state_dict(cfg, variables)
    assert sorted(back) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(back[key], state[key], err_msg=key)


@pytest.mark.slow
def test_verification_catches_a_wrong_upsampler_channel_order():
    """Reordering the upsampler's output channels the naive NHWC way ((c, i, j) -> (i, j, c)) breaks
    the outputs: the channel order matters and the converter's (none) is the right one."""
    cfg = tiny("mspan", 2)
    state = numpy_state_dict(random_torch_model(cfg))
    variables = convert_state_dict(cfg, state)
    assert max_abs_difference(cfg, state, variables) <= 1e-4
    up = variables["params"]["upsampler"]
    order = np.arange(12).reshape(3, 2, 2).transpose(1, 2, 0).reshape(-1)  # (c,i,j) -> (i,j,c)
    up["kernel"], up["bias"] = up["kernel"][..., order], up["bias"][order]
    assert max_abs_difference(cfg, state, variables) > 1e-2


def test_conv_layouts():
    cfg = tiny("mspan", 2)
    state = numpy_state_dict(random_torch_model(cfg))
    params = convert_state_dict(cfg, state)["params"]
    w = state["IDDB1.mspa.context1_quarter.weight"]  # (O, I, 3, 3), O = I = C / 4
    k = np.asarray(params["body"]["IDDB1"]["mspa"]["context1_quarter"]["kernel"])
    assert w.shape == (2, 2, 3, 3) and k.shape == (3, 3, 2, 2)
    np.testing.assert_array_equal(k[1, 2, 0, 1], w[1, 0, 1, 2])
    w = state["IDDB2.AU2.weight"]  # (O, I, 1, 1): C + distilled out, C + distilled in
    k = np.asarray(params["body"]["IDDB2"]["AU2"]["kernel"])
    assert w.shape == (12, 12, 1, 1)
    np.testing.assert_array_equal(k[0, 0], w[:, :, 0, 0].T)
    w = state["blf.proj_t1.weight"]
    np.testing.assert_array_equal(np.asarray(params["body"]["blf"]["proj_t1"]["kernel"])[0, 0],
                                  w[:, :, 0, 0].T)
    np.testing.assert_array_equal(np.asarray(params["upsampler"]["bias"]), state["upsampler.0.bias"])
    esa = tiny("mspan", 2, attention="esa")
    state = numpy_state_dict(random_torch_model(esa))
    params = convert_state_dict(esa, state)["params"]
    w = state["IDDB2.esa.conv2.weight"]  # ESA's stride-2 3x3 conv
    np.testing.assert_array_equal(np.asarray(params["body"]["IDDB2"]["esa"]["conv2"]["kernel"]),
                                  w.transpose(2, 3, 1, 0))


@pytest.mark.parametrize(
    "cfg, message",
    [
        (tiny("imdn", 2), r"missing \[32\]: IMDB1.c1.bias.*unexpected \[70\]: IDDB1.AU1.bias"),
        (tiny("mspan", 3), r"looks like mspan x2, num_features=8.*shape mismatch \[2\]: "
                           r"upsampler.0.bias has \(12,\), expected \(27,\)"),
        (tiny("mspan", 2, num_features=16), "shape mismatch \\[\\d+\\]: .*"),
        (tiny("mspan", 2, num_blocks=1), "unexpected \\[\\d+\\]: IDDB2.AU1.bias"),
        (tiny("mspan_ir", 1), r"looks like mspan x2, num_features=8, attention=mspa but config.model "
                              r"is mspan_ir x1.*missing \[84\]: head_conv1.bias.*unexpected \[74\]: "
                              r"IDDB1.AU1.bias"),
        (tiny("mspan", 2, attention="esa"), r"looks like mspan x2, num_features=8, attention=mspa but "
                                            r"config.model is mspan x2, num_features=8, attention=esa;"
                                            r".*missing \[28\]: IDDB1.esa.conv1.bias.*"
                                            r"unexpected \[44\]: IDDB1.mspa.channel_down.bias"),
    ],
    ids=["arch", "scale", "width", "depth", "task", "attention"],
)
def test_refuses_another_architecture_scale_or_width(cfg, message):
    state = numpy_state_dict(random_torch_model(tiny("mspan", 2)))
    with pytest.raises(ConversionError, match=message) as info:
        convert_state_dict(cfg, state)
    assert "\n" not in str(info.value) and len(str(info.value)) < 1500


def test_state_dicts_of_mspan_ir_are_named_and_the_retired_one_refused():
    """The figure (c) MSPAN-IR's state_dict is recognized (width, attention); one of the retired
    MSPAN-IR layout (the SR trunk + out_conv) is refused, named as retired, in one line."""
    cfg = tiny("mspan_ir", 1, attention="ca")
    state = numpy_state_dict(random_torch_model(cfg))
    with pytest.raises(ConversionError, match="looks like mspan_ir, num_features=8, attention=ca but"):
        convert_state_dict(tiny("mspan_ir", 1, num_features=16), state)
    retired = {k: v for k, v in numpy_state_dict(random_torch_model(tiny("mspan", 2))).items()
               if not k.startswith(("rec_conv.", "upsampler."))}
    retired["out_conv.weight"], retired["out_conv.bias"] = np.zeros((3, 8, 3, 3)), np.zeros(3)
    with pytest.raises(ConversionError, match="looks like an MSPAN-IR of the retired layout") as info:
        convert_state_dict(tiny("mspan_ir", 1), retired)
    assert "\n" not in str(info.value)


def test_layer_norm_maps_to_torch_weight():
    cfg = tiny("mspan_ir", 1)
    state = numpy_state_dict(random_torch_model(cfg))
    params = convert_state_dict(cfg, state)["params"]
    np.testing.assert_array_equal(np.asarray(params["stage2"]["norm"]["scale"]),
                                  state["stage2.norm.weight"])
    assert key_map(cfg)["stage1/norm/scale"] == "stage1.norm.weight"
    w = state["stage1.mlp_fc1.weight"]  # (hidden, C, 1, 1)
    np.testing.assert_array_equal(np.asarray(params["stage1"]["mlp_fc1"]["kernel"])[0, 0],
                                  w[:, :, 0, 0].T)


def test_long_key_lists_are_truncated():
    with pytest.raises(ConversionError, match=r"missing \[92\]: .*\.\.\. \(84 more\)"):
        convert_state_dict(model_config("imdn", 4), {"fea_conv.weight_x": np.zeros(1)})


# --- file formats --------------------------------------------------------------------------------


class NotATensor:
    """A pickled object that the allow-list unpickler must refuse."""


@pytest.fixture(scope="module")
def tiny_state():
    return numpy_state_dict(random_torch_model(tiny("mspan", 2)))


def tensors(state):
    return {k: torch.from_numpy(v) for k, v in state.items()}


def check_same(read, state):
    assert sorted(read) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(read[key], state[key], err_msg=key)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 7},
        lambda sd: {"model": sd},
        lambda sd: {"params": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DataParallel
    ],
    ids=["raw", "state_dict", "model", "params", "module_prefix"],
)
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reads_pth_legacy_and_zip(tmp_path, tiny_state, wrap, legacy):
    path = tmp_path / "w.pth"
    torch.save(wrap(tensors(tiny_state)), path, _use_new_zipfile_serialization=not legacy)
    with open(path, "rb") as f:
        head = f.read(2)
    assert (head == b"PK") != legacy  # the zip format starts with PK, the legacy one with a pickle
    check_same(read_state_dict(path), tiny_state)


def test_reads_safetensors_and_half_precision(tmp_path, tiny_state):
    from safetensors.numpy import save_file

    save_file(tiny_state, str(tmp_path / "w.safetensors"))
    check_same(read_state_dict(tmp_path / "w.safetensors"), tiny_state)
    torch.save({k: v.to(torch.bfloat16) for k, v in tensors(tiny_state).items()}, tmp_path / "bf16.pt")
    read = read_state_dict(tmp_path / "bf16.pt")
    assert read["fea_conv.weight"].dtype == ml_dtypes.bfloat16  # read as stored; converted to float32
    variables = convert_state_dict(tiny("mspan", 2), read)
    assert variables["params"]["upsampler"]["kernel"].dtype == np.float32


def test_bad_files_are_refused(tmp_path, tiny_state):
    with pytest.raises(ConversionError, match="no such file"):
        read_state_dict(tmp_path / "missing.pth")
    with pytest.raises(ConversionError, match="is not a file"):
        read_state_dict(tmp_path)
    (tmp_path / "text.pth").write_text("hello, I am not a checkpoint\n")
    with pytest.raises(ConversionError, match="not a PyTorch checkpoint"):
        read_state_dict(tmp_path / "text.pth")
    for legacy in (True, False):
        path = tmp_path / f"trunc_{legacy}.pth"
        torch.save(tensors(tiny_state), path, _use_new_zipfile_serialization=not legacy)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
            read_state_dict(path)
    from safetensors.numpy import save_file

    path = tmp_path / "trunc.safetensors"
    save_file(tiny_state, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConversionError, match="not a readable safetensors file"):
        read_state_dict(path)
    torch.save({"weight": torch.zeros(2), "obj": NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(ConversionError, match="code-bearing objects .global test_convert.NotATensor"):
        read_state_dict(tmp_path / "code.pth")
    torch.save({"step": 3}, tmp_path / "notensors.pth")
    with pytest.raises(ConversionError, match="holds no tensors"):
        read_state_dict(tmp_path / "notensors.pth")


# --- the CLI -------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_script(SCRIPT.name, *args)


TINY_OVERRIDES = ("--config.model.num_features=8", "--config.model.num_blocks=2",
                  "--config.model.num_units=2")
# (scale, attention, width): --verify parity of random reference weights through the CLI at every
# scale and attention; the tiny width through --config overrides, the paper's width by --model/--scale
# (x4, the default MSPA) and --attention (ESA, whose 7x7 stride-3 max pool sees a 15x19 map there).
PARITY_CASES = [(2, "mspa", "tiny"), (3, "mspa", "tiny"), (4, "mspa", "full"), (2, "none", "tiny"),
                (2, "ca", "tiny"), (2, "esa", "full")]


@pytest.mark.slow
def test_cli_verify_agrees_with_the_reference_for_mspan_ir(tmp_path):
    """The paper's MSPAN-IR (figure (c), C=54, n=6, gray) through --config configs/denoise_gray.py:50:
    random reference weights convert and --verify agrees with PyTorch."""
    cfg = model_config("mspan_ir", 1)
    cfg.in_channels = cfg.out_channels = 1
    state = numpy_state_dict(random_torch_model(cfg, seed=7, std=None))
    assert sum(v.size for v in state.values()) == 825_481
    torch.save(tensors(state), tmp_path / "w.pth")
    out = tmp_path / "ckpt"
    result = run_cli("--config=configs/denoise_gray.py:50", f"--src={tmp_path / 'w.pth'}",
                     f"--out={out}", "--verify")
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("verify: "))
    assert float(line.split(" = ")[1].split()[0]) <= 1e-4
    assert sorted(load_params(out, cfg)["params"]["stage6"]) == ["iddb", "mlp_fc1", "mlp_fc2", "norm"]


@pytest.mark.slow
@pytest.mark.parametrize("scale, attention, width", PARITY_CASES,
                         ids=[f"x{s}_{a}_{w}" for s, a, w in PARITY_CASES])
def test_cli_verify_agrees_with_the_reference(tmp_path, scale, attention, width):
    cfg = model_config("mspan", scale) if width == "full" else tiny("mspan", scale)
    cfg.attention = attention
    state = numpy_state_dict(random_torch_model(cfg, seed=scale, std=None))
    torch.save(tensors(state), tmp_path / "w.pth")
    out = tmp_path / "ckpt"
    if width == "full":
        args = ["--model=mspan", f"--scale={scale}"]
        args += [f"--attention={attention}"] if attention != "mspa" else []
    else:
        args = [f"--config=configs/x{scale}.py", *TINY_OVERRIDES,
                f"--config.model.attention={attention}"]
    result = run_cli(*args, f"--src={tmp_path / 'w.pth'}", f"--out={out}", "--verify")
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("verify: "))
    assert float(line.split(" = ")[1].split()[0]) <= 1e-4
    assert f"converted to mspan x{scale} (num_features={cfg.num_features}, attention {attention})" \
        in result.stdout
    assert sorted(load_params(out, cfg)["params"]["body"]["IDDB1"]) == sorted(
        expected_variables(cfg)["params"]["body"]["IDDB1"])


def test_cli_attention_flag_is_checked(tmp_path, tiny_state):
    torch.save(tensors(tiny_state), tmp_path / "w.pth")
    src, out = f"--src={tmp_path / 'w.pth'}", tmp_path / "out"
    result = run_cli("--config=configs/x2.py", "--attention=esa", src, f"--out={out}")
    assert_fails_leaving_nothing(result, out, match="--attention=esa disagrees with the config's "
                                                   "model.attention=mspa")
    assert "--config.model.attention=esa" in result.stderr
    result = run_cli("--model=imdn", "--scale=2", "--attention=ca", src, f"--out={out}")
    assert_fails_leaving_nothing(result, out, match="imdn has no block attention")
    result = run_cli("--model=mspan", "--scale=2", "--attention=pa", src, f"--out={out}")
    assert_fails_leaving_nothing(result, out, match="attention")
    assert set(ATTENTIONS) == {"none", "ca", "esa", "mspa"}


def assert_fails_leaving_nothing(result, out: Path, code: int = 2, match: str = ""):
    """One error line (`one_line_error`), and neither `out` nor a temporary of it left behind."""
    one_line_error(result, match, code=code)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.slow
def test_cli_converts_and_verifies_with_a_config_file(tmp_path, tiny_state):
    config = tmp_path / "tiny_x2.py"
    config.write_text(
        "from mspan_jax.config_base import sr_config\n\n\n"
        "def get_config():\n"
        "    config = sr_config('mspan', 2)\n"
        "    config.model.update(num_features=8, num_blocks=2, num_units=2)\n"
        "    return config\n"
    )
    torch.save(tensors(tiny_state), tmp_path / "w.pth", _use_new_zipfile_serialization=False)
    out = tmp_path / "ckpt"
    result = run_cli(f"--config={config}", f"--src={tmp_path / 'w.pth'}", f"--out={out}", "--verify")
    assert result.returncode == 0, result.stderr
    assert "verify: max |flax - torch| = " in result.stdout and f"wrote {out}" in result.stdout
    loaded = load_params(out, tiny("mspan", 2))
    np.testing.assert_array_equal(np.asarray(loaded["params"]["body"]["fea_conv"]["bias"]),
                                  tiny_state["fea_conv.bias"])
    # A state_dict for another model: one line with the key lists, nothing written.
    result = run_cli("--model=imdn", "--scale=2", f"--src={tmp_path / 'w.pth'}",
                     f"--out={tmp_path / 'x'}")
    assert_fails_leaving_nothing(result, tmp_path / "x", match="missing [")
    assert "unexpected [" in result.stderr


def test_cli_bad_inputs_fail_with_one_line_and_write_nothing(tmp_path, tiny_state):
    out = tmp_path / "out"
    (tmp_path / "text.pth").write_text("not weights\n")
    trunc = tmp_path / "trunc.pth"
    torch.save(tensors(tiny_state), trunc, _use_new_zipfile_serialization=False)  # like IMDN_x4.pth
    trunc.write_bytes(trunc.read_bytes()[:-500])
    for src, match in ((tmp_path / "missing.pth", "no such file"),
                       (tmp_path / "text.pth", "not a PyTorch checkpoint"),
                       (tmp_path / "trunc.pth", "not a readable PyTorch checkpoint")):
        result = run_cli("--model=imdn", "--scale=4", f"--src={src}", f"--out={out}")
        assert_fails_leaving_nothing(result, out, match=match)


def _basicsr_file(path: Path, state) -> dict:
    """A BasicSR-style file: {'params': raw weights, 'params_ema': the EMA (other values)}."""
    ema = {k: v + np.float32(0.5) for k, v in state.items()}
    torch.save({"params": tensors(state), "params_ema": tensors(ema)}, path)
    return ema


def test_basicsr_files_give_the_ema_unless_asked(tmp_path, tiny_state):
    ema = _basicsr_file(tmp_path / "basicsr.pth", tiny_state)
    state, entry, others = read_weights(tmp_path / "basicsr.pth")
    check_same(state, ema)
    assert (entry, others) == ("params_ema", ["params"])
    state, entry, others = read_weights(tmp_path / "basicsr.pth", "params")
    check_same(state, tiny_state)
    assert (entry, others) == ("params", ["params_ema"])
    with pytest.raises(ConversionError, match=r"has no 'ema' entry \(entries holding tensors: "
                       r"\['params', 'params_ema'\]\)"):
        read_weights(tmp_path / "basicsr.pth", "ema")
    assert read_weights(tmp_path / "basicsr.pth")[0].keys() == read_state_dict(
        tmp_path / "basicsr.pth").keys()


@pytest.mark.slow
def test_cli_basicsr_choice_safetensors_and_a_failing_verify(tmp_path, tiny_state):
    config = tmp_path / "tiny_x2.py"
    config.write_text("from mspan_jax.config_base import sr_config\n\n\ndef get_config():\n"
                      "    config = sr_config('mspan', 2)\n"
                      "    config.model.update(num_features=8, num_blocks=2, num_units=2)\n"
                      "    return config\n")
    ema = _basicsr_file(tmp_path / "basicsr.pth", tiny_state)
    cfg = tiny("mspan", 2)
    bias = ("params", "body", "fea_conv", "bias")

    def converted_bias(out):
        node = load_params(out, cfg)
        for key in bias:
            node = node[key]
        return np.asarray(node)

    src = f"--src={tmp_path / 'basicsr.pth'}"
    result = run_cli(f"--config={config}", src, f"--out={tmp_path / 'a'}")
    assert result.returncode == 0, result.stderr
    assert "(entry 'params_ema')" in result.stdout and "also holds 'params'" in result.stdout
    np.testing.assert_array_equal(converted_bias(tmp_path / "a"), ema["fea_conv.bias"])
    result = run_cli(f"--config={config}", src, f"--out={tmp_path / 'b'}", "--param-key=params")
    assert result.returncode == 0, result.stderr
    assert "(entry 'params')" in result.stdout
    np.testing.assert_array_equal(converted_bias(tmp_path / "b"), tiny_state["fea_conv.bias"])

    # .safetensors through the CLI, verified against the PyTorch reference.
    from safetensors.numpy import save_file

    save_file(tiny_state, str(tmp_path / "w.safetensors"))
    result = run_cli(f"--config={config}", f"--src={tmp_path / 'w.safetensors'}",
                     f"--out={tmp_path / 'c'}", "--verify")
    assert result.returncode == 0, result.stderr
    assert "verify: max |flax - torch| = " in result.stdout
    np.testing.assert_array_equal(converted_bias(tmp_path / "c"), tiny_state["fea_conv.bias"])

    # A converter bug (the upsampler's bias off by 0.01) fails --verify: exit 1, nothing written.
    out = tmp_path / "d"
    import mspan_jax.convert as convert

    real = convert.convert_state_dict

    def buggy(cfg, state):
        variables = real(cfg, state)
        up = variables["params"]["upsampler"]
        up["bias"] = up["bias"] + 0.01
        return variables

    with pytest.MonkeyPatch.context() as patch:  # run_cli re-executes the script: it imports this
        patch.setattr(convert, "convert_state_dict", buggy)
        result = run_cli(f"--config={config}", f"--src={tmp_path / 'w.safetensors'}", f"--out={out}",
                         "--verify")
    assert_fails_leaving_nothing(result, out, code=1,
                                 match="verification failed: max abs difference 0.01")
