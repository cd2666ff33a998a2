"""XLA's per-device memory estimate of the MSPAN x4 train step (the loop's sharded `make_train_step`)
at the paper's batch (16 LR 48x48 patches) and at 64, from the CPU compiler.

    python benchmarks/memory.py [--batches 16,64] [--lr-size 48] [--devices 1] [--json]

The state and batch are abstract (`jax.eval_shape`); each program is compiled for this machine's
CPU and `compiled.memory_analysis()` is printed: arguments (the replicated TrainState and this
device's share of the batch), outputs, temporaries (activations kept for the backward pass and
XLA's scratch), and their sum less the donated (aliased) state. With --devices N (and
XLA_FLAGS=--xla_force_host_platform_device_count=N) the batch is split over N CPU devices.

These are the CPU compiler's numbers. The arguments and outputs are the same on any backend; the
temporaries depend on the compiler's fusion and scheduling, which differ on TPU v4 and H100 (XLA:TPU
and XLA:GPU fuse more and rematerialize differently), so read them as an order of magnitude for an
accelerator, not its figure: see docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from mspan_jax.config_base import sr_config
from mspan_jax.train import lowering, sharding


def estimate(batch: int, lr_size: int, num_devices: int) -> dict[str, float]:
    config = sr_config("mspan", 4)
    mesh = sharding.create_mesh(jax.devices()[:num_devices])
    state, inputs = lowering.abstract_train_inputs(config, mesh, batch, lr_size)
    start = time.perf_counter()
    compiled = lowering.train_step(config, mesh).lower(state, inputs).compile()
    seconds = time.perf_counter() - start
    m = compiled.memory_analysis()
    mib = 1 / 2**20
    args, out = m.argument_size_in_bytes * mib, m.output_size_in_bytes * mib
    temp, alias = m.temp_size_in_bytes * mib, m.alias_size_in_bytes * mib
    return {"batch": batch, "lr_size": lr_size, "devices": num_devices, "per_device_batch":
            batch // num_devices, "argument_mib": round(args, 1), "output_mib": round(out, 1),
            "temp_mib": round(temp, 1), "alias_mib": round(alias, 1),
            "total_mib": round(args + out + temp - alias, 1), "compile_s": round(seconds, 1),
            "backend": jax.default_backend()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--lr-size", type=int, default=48)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [estimate(int(b), args.lr_size, args.devices) for b in args.batches.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"MSPAN x4 train step, XLA memory_analysis() of the {rows[0]['backend']} compiler, "
          "per device:")
    for r in rows:
        print(f"  batch {r['batch']:3d} (LR {r['lr_size']}, {r['per_device_batch']} per device): "
              f"{r['total_mib']:8.1f} MiB = args {r['argument_mib']} + out {r['output_mib']} + temp "
              f"{r['temp_mib']} - donated {r['alias_mib']}  (compiled in {r['compile_s']} s)")


if __name__ == "__main__":
    main()
