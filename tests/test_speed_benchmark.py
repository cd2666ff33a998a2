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


def load_speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--json"],
                          capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["machine"]["backend"] == "cpu" and result["settings"]["interleaved"]
    assert set(result["machine"]["loadavg"]) == {"start", "end"}
    assert result["machine"]["cpu_info"]["model"]  # the CPU the figures belong to
    assert result["settings"]["mspan_attention"] == "mspa"
    train_keys = {"framework", "variant", "model", "dtype", "batch", "s_per_step", "cpu_s_per_step",
                  "compile_s"}
    infer_keys = {"framework", "variant", "model", "dtype", "lr_hw", "s_per_image", "cpu_s_per_image",
                  "compile_s"}
    assert all(set(r) == train_keys for r in result["train"])
    assert all(set(r) == infer_keys for r in result["infer"])
    ours = {(kind, r["dtype"]) for kind in ("train", "infer") for r in result[kind]
            if r["framework"] == "jax"}
    assert ours == {(k, d) for k in ("train", "infer") for d in ("float32", "bfloat16")}
    assert all(r["s_per_step"] > 0 and r["compile_s"] > 0 for r in result["train"])
    assert {r["model"] for r in result["train"]} == {"mspan", "imdn"}
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


def test_rejects_unknown_model(capsys):
    assert load_speed().main(["--models", "edsr"]) == 2  # in-process: main(argv) returns the status
    assert "choose from mspan,imdn" in capsys.readouterr().err
