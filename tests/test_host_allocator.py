"""The scripts' host-allocator setting: a jitted gradient's temporaries are not faulted in afresh on
every call (docs/performance.md, "Kernel time")."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from mspan_jax.train.host_allocator import OPT_OUT_ENV

# A conv's gradient whose temporaries (~64 MB, above glibc's 32 MB mmap ceiling) XLA:CPU allocates per
# call; the minor page faults of 3 calls after the first, per call.
PROBE = textwrap.dedent("""
    import json, resource
    from mspan_jax.train.host_allocator import keep_freed_memory
    applied = keep_freed_memory()
    import jax, jax.numpy as jnp

    def loss(w, x):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jnp.tanh(y) ** 2)

    grad = jax.jit(jax.grad(loss))
    x, w = jnp.ones((8, 128, 128, 16)), jnp.full((3, 3, 16, 32), 0.01)
    grad(w, x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        grad(w, x).block_until_ready()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
    print(json.dumps({"applied": applied, "faults_per_call": faults}))
""")


def probe(opt_out: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != OPT_OUT_ENV}
    if opt_out:
        env[OPT_OUT_ENV] = "0"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_the_temporaries_of_a_step_are_reused_not_faulted_in_again():
    kept, default = probe(opt_out=False), probe(opt_out=True)
    assert kept["applied"] and not default["applied"]
    # glibc's own behaviour: every 4 KiB page of the ~64 MB buffer, every call (16k faults here).
    assert default["faults_per_call"] > 8000, default
    assert kept["faults_per_call"] < default["faults_per_call"] / 50, (kept, default)
