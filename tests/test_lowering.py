"""The sharded train step and the inference function lower for TPU and CUDA from this CPU-only
machine (`jax.export`: tracing and lowering, no compilation), and contain nothing that runs on the
CPU only (a lapack custom call, a host callback): what would otherwise show up first on a pod."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import script_module, tiny_model_config
from jax import export

from mspan_jax.config_base import sr_config
from mspan_jax.models.registry import get_model
from mspan_jax.train import lowering

PLATFORMS = ("tpu", "cuda")


@pytest.mark.slow  # traces and lowers the full-size train step (~7 s)
def test_full_size_train_step_lowers_portably():
    config = sr_config("mspan", 4)  # the paper's MSPAN x4, batch 16 of LR 48 over 8 devices
    exported = lowering.export_train_step(config, PLATFORMS, num_devices=8, batch_size=16, lr_size=48)
    assert exported.platforms == PLATFORMS and exported.nr_devices == 8
    assert lowering.non_portable_parts(exported) == []
    state_in, batch_in = exported.in_avals[:-2], exported.in_avals[-2:]
    assert [a.shape for a in batch_in] == [(16, 192, 192, 3), (16, 48, 48, 3)]  # hr, lr (sorted keys)
    assert len(exported.out_avals) > len(state_in)  # the new state and the metrics


def test_full_size_inference_lowers_portably():
    exported = lowering.export_abstract_inference(sr_config("mspan", 4).model, PLATFORMS)
    assert exported.platforms == PLATFORMS
    assert lowering.non_portable_parts(exported) == []
    assert exported.out_avals[0].str_short().endswith("[b,4*h,4*w,3]")


def test_the_export_script_lowers_portably():
    model = get_model(tiny_model_config("mspan", 2))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    variables = jax.tree.map(lambda a: np.full(a.shape, 0.01, a.dtype), shapes)  # no init compile
    with script_module("export.py") as script:  # its flags removed again afterwards
        exported = script["export_model"](model, variables, 3, ["cpu", *PLATFORMS])
    assert lowering.non_portable_parts(exported) == []


def test_the_scan_catches_cpu_only_parts():
    """The check itself: a CPU lapack call and a host callback are both named (`jax.export` refuses
    a host callback outright; the scan also reads a jitted function's lowered text)."""
    def cpu_only(x):
        q, _ = jnp.linalg.qr(x)
        return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), q)

    x = jax.ShapeDtypeStruct((4, 4), jnp.float32)
    found = lowering.non_portable_parts(jax.jit(cpu_only).lower(x).as_text())
    assert any(p.startswith("custom_call lapack_") for p in found), found
    assert any(p.startswith("host callback ") for p in found), found
    with pytest.raises(NotImplementedError, match="host_callbacks"):
        export.export(jax.jit(cpu_only), platforms=("cpu",))(x)


@pytest.mark.slow
def test_train_step_cost_grows_with_the_batch_and_bounds_the_speed():
    """The cost analysis behind docs/tpu_pod.md's estimate: work per step proportional to the
    batch (the parameter update is a small fixed part), and the roofline is set by the slower
    of compute and memory."""
    config = sr_config("mspan", 4)
    config.model = tiny_model_config("mspan", 4)
    two, four = (lowering.train_step_cost(config, batch_size=b, lr_size=16) for b in (2, 4))
    assert two["flops"] > 0 and two["bytes"] > 0
    assert 1.8 < four["flops"] / two["flops"] <= 2.0
    assert 1.5 < four["bytes"] / two["bytes"] <= 2.0
    fast_memory = lowering.roofline_steps_per_sec(two, peak_flops=1e12, bytes_per_sec=1e15)
    assert fast_memory == pytest.approx(1e12 / two["flops"])
    fast_compute = lowering.roofline_steps_per_sec(two, peak_flops=1e18, bytes_per_sec=1e9)
    assert fast_compute == pytest.approx(1e9 / two["bytes"])
