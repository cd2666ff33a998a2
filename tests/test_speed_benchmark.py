"""benchmarks/speed.py: its ratio and summary arithmetic, and the --json schema of a tiny run.
No timing is asserted: timings belong in the benchmark, never in tests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, require_torch, subprocess_env

SCRIPT = REPO_ROOT / "benchmarks" / "speed.py"


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_speed():
    return load_benchmark("speed")


def row(framework, variant, model, dtype, batch, seconds, cpu):
    return {"framework": framework, "variant": variant, "model": model, "dtype": dtype,
            "batch": batch, "s_per_step": seconds, "cpu_s_per_step": cpu, "compile_s": 1.0}


def test_ratios_pair_each_dtype_with_its_pytorch_counterpart():
    speed = load_speed()
    rows = [row("jax", "jit", "mspan", "float32", 16, 1.0, 2.0),
            row("jax", "jit", "mspan", "bfloat16", 16, 3.0, 3.0),
            row("pytorch", "eager", "mspan", "float32", 16, 2.0, 2.0),
            row("pytorch", "channels_last", "mspan", "float32", 16, 0.5, 4.0),
            row("pytorch", "eager_autocast", "mspan", "bfloat16", 16, 6.0, 1.0)]
    got = {(q["dtype"], q["versus"]): (q["ratio"], q["cpu_ratio"]) for q in speed.ratios(rows, "train")}
    assert got == {("float32", "eager"): (0.5, 1.0),
                   ("float32", "best_fp32:channels_last"): (2.0, 0.5),
                   ("bfloat16", "eager_autocast"): (0.5, 3.0)}


def test_each_jax_variant_gets_its_own_ratios_and_summary():
    """--jax-variant workers' rows (variant 'jit:<name>') are paired with the same PyTorch rows as
    the default worker's, and summarised under their name."""
    speed = load_speed()
    rows = [row("jax", "jit", "mspan", "float32", 16, 1.0, 2.0),
            row("jax", "jit:dp2", "mspan", "float32", 16, 0.5, 2.0),
            row("jax", "jit", "imdn", "float32", 16, 2.0, 2.0),
            row("jax", "jit:dp2", "imdn", "float32", 16, 2.0, 2.0),
            row("pytorch", "eager", "mspan", "float32", 16, 2.0, 2.0)]
    got = {(q["ours"], q["versus"]): q["ratio"] for q in speed.ratios(rows, "train")}
    assert got == {("jit", "eager"): 0.5, ("jit:dp2", "eager"): 0.25,
                   ("jit", "best_fp32:eager"): 0.5, ("jit:dp2", "best_fp32:eager"): 0.25}
    summary = speed.summary({"train": rows})
    assert summary["mspan_over_imdn_train_float32_b16"] == 0.5
    assert summary["mspan_over_imdn_train_float32_b16_dp2"] == 0.25


def test_jax_variant_parsing():
    speed = load_speed()
    assert speed.parse_jax_variant("dp2:XLA_FLAGS=--a=2 --b=false;MSPAN_SPLIT_CONCAT_1X1=1") == (
        "dp2", {"XLA_FLAGS": "--a=2 --b=false", "MSPAN_SPLIT_CONCAT_1X1": "1"})
    for bad in ("dp2", "dp2:", ":A=1", "x:A"):
        with pytest.raises(ValueError, match="--jax-variant"):
            speed.parse_jax_variant(bad)
    assert isinstance(speed.cpu_info()["flags"], list)


def test_summary_compares_mspan_with_imdn_and_bf16_with_f32():
    speed = load_speed()
    result = {"train": [row("jax", "jit", "mspan", "float32", 16, 1.0, 2.0),
                        row("jax", "jit", "mspan", "bfloat16", 16, 1.5, 1.0),
                        row("jax", "jit", "imdn", "float32", 16, 4.0, 4.0),
                        row("pytorch", "eager", "imdn", "float32", 16, 8.0, 8.0)]}
    assert speed.summary(result) == {
        "mspan_over_imdn_train_float32_b16": 0.25, "mspan_bf16_over_f32_train_b16": 1.5,
        "cpu_mspan_over_imdn_train_float32_b16": 0.5, "cpu_mspan_bf16_over_f32_train_b16": 0.5}


def test_tiny_models_use_only_current_config_keys():
    """TINY_MODELS may only override keys that the models still have (no silently ignored ones),
    and the tiny MSPAN keeps the paper's block attention unless --attention asks for another."""
    from mspan_jax.models.registry import get_spec

    speed = load_speed()
    for name, overrides in speed.TINY_MODELS.items():
        assert set(overrides) <= set(get_spec(name).defaults), name
        assert {k: speed.model_config(name, True)[k] for k in overrides} == overrides
    assert speed.model_config("mspan", True)["attention"] == get_spec("mspan").defaults["attention"]
    assert speed.model_config("mspan", False, "esa")["attention"] == "esa"
    assert "attention" not in speed.model_config("imdn", True, "esa")
    speed.TINY_MODELS["mspan"] = dict(speed.TINY_MODELS["mspan"], use_mspa=True)
    with pytest.raises(ValueError, match="no config keys \\['use_mspa'\\]"):
        speed.model_config("mspan", True)


@pytest.mark.slow
def test_tiny_run_prints_the_json_schema():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--json", "--profile", "1"],
                          capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["machine"]["backend"] == "cpu" and result["settings"]["interleaved"]
    assert set(result["machine"]["loadavg"]) == {"start", "end"}
    assert result["machine"]["cpu_info"]["model"]  # the CPU the figures belong to
    assert result["settings"]["mspan_attention"] == "mspa"
    train_keys = {"framework", "variant", "model", "dtype", "batch", "s_per_step", "cpu_s_per_step",
                  "compile_s", "profile"}
    infer_keys = {"framework", "variant", "model", "dtype", "lr_hw", "s_per_image", "cpu_s_per_image",
                  "compile_s", "profile"}
    assert all(set(r) == train_keys for r in result["train"])
    assert all(set(r) == infer_keys for r in result["infer"])
    ours = {(kind, r["dtype"]) for kind in ("train", "infer") for r in result[kind]
            if r["framework"] == "jax"}
    assert ours == {(k, d) for k in ("train", "infer") for d in ("float32", "bfloat16")}
    assert all(r["s_per_step"] > 0 and r["compile_s"] > 0 for r in result["train"])
    assert {r["model"] for r in result["train"]} == {"mspan", "imdn"}
    # --profile 1: where each row's time went, in categories that cover its wall time
    for r in result["train"] + result["infer"]:
        p = r["profile"]
        assert p["per_call_ms"] > 0 and p["threads"] >= 1
        assert all(ms >= 0 for ms in p["categories"].values()), p
    breakdown = load_benchmark("profile_breakdown")
    conv = (breakdown.CONV_FORWARD, breakdown.CONV_BACKWARD)
    ours_train = [r["profile"]["categories"] for r in result["train"] if r["framework"] == "jax"]
    assert all(c.get(conv[0], 0) > 0 and c.get(conv[1], 0) > 0 for c in ours_train)
    assert {"mspan_bf16_over_f32_train_b2", "mspan_over_imdn_train_float32_b2",
            "cpu_mspan_over_imdn_train_float32_b2"} <= set(result["summary"])
    require_torch()  # the PyTorch rows below: skipped without torch, failing under CI's rule
    # the baseline runs with PyTorch's default threads: nothing set by the script
    assert result["machine"]["torch"]["threads"] >= 1
    assert result["machine"]["torch"]["omp_env"] == {k: v for k, v in subprocess_env().items()
                                                     if k in load_speed().OMP_ENV}
    theirs = {(r["variant"], r["dtype"]) for r in result["train"] if r["framework"] == "pytorch"}
    assert theirs == {("eager", "float32"), ("eager_autocast", "bfloat16"), ("channels_last", "float32")}
    versus = {(q["dtype"], q["versus"].split(":")[0]) for q in result["ratios"]["train"]}
    assert versus == {("float32", "eager"), ("float32", "best_fp32"), ("bfloat16", "eager_autocast")}
    assert {(q["model"], tuple(q["lr_hw"])) for q in result["ratios"]["infer"]} == {
        ("mspan", (12, 16)), ("imdn", (12, 16))}
    theirs_train = [r["profile"]["categories"] for r in result["train"] if r["framework"] == "pytorch"]
    assert all(c.get(conv[0], 0) > 0 and c.get(conv[1], 0) > 0 for c in theirs_train)


def test_rejects_unknown_model(capsys):
    assert load_speed().main(["--models", "edsr"]) == 2  # in-process: main(argv) returns the status
    assert "choose from mspan,imdn" in capsys.readouterr().err


def test_profile_breakdown_charges_a_traced_programs_time_to_its_ops(tmp_path):
    """`jax_breakdown` on a real jax.profiler trace of a jitted conv step: its forward and backward
    convs are found (the kernel gradient's fusion has no metadata) and the categories add up to
    the traced wall time per call."""
    import jax
    import jax.numpy as jnp

    breakdown = load_benchmark("profile_breakdown")

    def loss(w, x):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(jnp.abs(jnp.tanh(y)))

    @jax.jit
    def step(w, x):
        return w - 0.1 * jax.grad(loss)(w, x)

    w, x = jnp.full((3, 3, 16, 16), 0.01), jnp.ones((8, 48, 48, 16))
    for _ in range(2):  # compiled for the committed w it returns, before the trace
        w = step(w, x)
    w.block_until_ready()
    with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
        for _ in range(3):
            w = step(w, x)
        w.block_until_ready()
    hlo = step.lower(w, x).compile().as_text()
    got = breakdown.jax_breakdown(tmp_path, hlo, "jit_step", cores=2)
    cats = got["categories"]
    # found by opcode and metadata (with XLA's multi-threaded Eigen, as in this process unless
    # XLA_FLAGS say otherwise, a conv's work runs outside its event: the times are small then)
    assert cats[breakdown.CONV_FORWARD] > 0 and cats[breakdown.CONV_BACKWARD] > 0, cats
    assert got["threads"] >= 1 and all(ms >= 0 for ms in cats.values()), cats
    # the ops' core time over 2 cores plus the time in no op is the wall time per call
    assert sum(cats.values()) == pytest.approx(got["per_call_ms"])
    ops_ms = got["per_call_ms"] - cats[breakdown.NOT_IN_OP]
    one_core = breakdown.jax_breakdown(tmp_path, hlo, "jit_step", cores=1)["categories"]
    assert one_core[breakdown.CONV_FORWARD] == pytest.approx(2 * cats[breakdown.CONV_FORWARD])
    assert 0 < ops_ms <= got["per_call_ms"]
    with pytest.raises(ValueError, match="no thunk of jit_other"):
        breakdown.jax_breakdown(tmp_path, hlo, "jit_other", cores=2)


def test_profile_categories_of_hlo_instructions():
    breakdown = load_benchmark("profile_breakdown")
    hlo = """%fused_computation.1 (p0: f32[4]) -> f32[4] {
  ROOT %convolution.3 = f32[3,3,8,8]{3,2,1,0} convolution(%p0, %p1), window={size=3x3}
}

ENTRY %main.9 (a: f32[4]) -> f32[4] {
  %ynn_fusion.1 = f32[3,3,8,8]{3,2,1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.1
  %convolution.5 = f32[8] convolution(%a, %b), metadata={op_name="j(s)/jvp(M)/conv_general_dilated"}
  %dot.6 = f32[8]{0} dot(%a, %b), metadata={op_name="jit(step)/transpose(jvp(M))/dot_general"}
  %add_fusion.2 = f32[8]{0} fusion(%a), kind=kLoop, calls=%c, metadata={op_name="jit(step)/jvp(M)/add"}
  %select_fusion.3 = f32[8] fusion(%a), calls=%c, metadata={op_name="j/transpose(jvp(M))/select_n"}
  %all-reduce.4 = f32[8]{0} all-reduce(%a), replica_groups={{0,1}}
  %transpose_copy_fusion.7 = f32[8]{0} fusion(%a), kind=kLoop, calls=%c
  ROOT %multiply_fusion.8 = f32[8] fusion(%a), calls=%c, metadata={op_name="jit(step)/mul"}
}
"""
    instructions = breakdown._instructions(hlo)
    got = {name: breakdown.classify(name, instructions) for name in (
        "ynn_fusion.1", "convolution.5", "dot.6", "add_fusion.2", "select_fusion.3",
        "all-reduce.4", "transpose_copy_fusion.7", "multiply_fusion.8")}
    assert got == {"ynn_fusion.1": breakdown.CONV_BACKWARD, "convolution.5": breakdown.CONV_FORWARD,
                   "dot.6": breakdown.CONV_BACKWARD, "add_fusion.2": breakdown.OTHER_FORWARD,
                   "select_fusion.3": breakdown.OTHER_BACKWARD, "all-reduce.4": breakdown.ALL_REDUCE,
                   "transpose_copy_fusion.7": breakdown.LAYOUT, "multiply_fusion.8": breakdown.UPDATE}
    # an inference program has no update: its unmarked elementwise ops are forward
    assert breakdown.classify("multiply_fusion.8", instructions, training=False) == (
        breakdown.OTHER_FORWARD)
