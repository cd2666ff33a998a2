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

from mspan_jax.host_allocator import OPT_OUT_ENV

# A conv's gradient whose temporaries (~290 MB, above glibc's 32 MB mmap ceiling) XLA:CPU allocates per
# call; the fewest minor page faults of 4 calls after the first (other allocations fault now and
# then, the buffer's pages every call).
PROBE = textwrap.dedent("""
    import json, resource
    from mspan_jax.host_allocator import keep_freed_memory
    applied = keep_freed_memory()
    import jax, jax.numpy as jnp

    def loss(w, x):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jnp.tanh(y) ** 2)

    grad = jax.jit(jax.grad(loss))
    x, w = jnp.ones((32, 128, 128, 16)), jnp.full((3, 3, 16, 32), 0.01)
    grad(w, x).block_until_ready()
    faults = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        grad(w, x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"applied": applied, "faults_per_call": min(faults), "all": faults}))
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
    # glibc's own behaviour: every 4 KiB page of the buffer, every call (74k faults here).
    assert default["faults_per_call"] > 40_000, default
    # Kept: none on an idle machine; up to 8k per call on average (32 MB of other, smaller buffers)
    # was seen under load and with JAX's compilation cache on, which the buffer's 74k dwarfs.
    assert kept["faults_per_call"] < default["faults_per_call"] / 4, (kept, default)
