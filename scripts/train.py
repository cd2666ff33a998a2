"""Train MSPAN or IMDN: `python scripts/train.py --config configs/x4.py --workdir DIR`.

Any config key can be overridden, e.g. `--config.train.batch_size=32 --config.train.num_steps=1000`.
A workdir that holds checkpoints is resumed (same data order and optimizer state). Multi-host
(TPU pod slices, GPU clusters): pass --multihost on every host (jax.distributed auto-detects the
cluster), or --coordinator-address/--num-processes/--process-id explicitly (the underscore spellings
of earlier releases still work). See docs/training.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.errors import first_line
from mspan_jax.train.cpu_devices import split_cpu_cores

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events and eval_results.json "
                               "go here (local path or gs://); a workdir with checkpoints is resumed.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (auto-detected "
                               "cluster: TPU pod slice, SLURM, ...) before anything else.")
_COORDINATOR = flags.DEFINE_string("coordinator-address", None, "host:port of process 0, for a "
                                   "multi-process run without auto-detection (implies --multihost).")
_NUM_PROCESSES = flags.DEFINE_integer("num-processes", None, "Number of processes (with "
                                      "--coordinator-address).")
_PROCESS_ID = flags.DEFINE_integer("process-id", None,
                                   "This process's index (with --coordinator-address).")
# The underscore spellings of earlier releases, kept for users' launch scripts.
for _old, _new in (("coordinator_address", "coordinator-address"), ("num_processes", "num-processes"),
                   ("process_id", "process-id")):
    flags.DEFINE_alias(_old, _new)


def initialize_distributed() -> None:
    """Starts jax.distributed when asked to, before any JAX computation; bad flags fail in one line."""
    if _COORDINATOR.value:
        import jax

        if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
            cli.fail("--coordinator-address needs --num-processes and --process-id")
        if _NUM_PROCESSES.value < 1 or not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
            cli.fail(f"--process-id={_PROCESS_ID.value} must be in [0, --num-processes="
                     f"{_NUM_PROCESSES.value}) and --num-processes at least 1")
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    elif _NUM_PROCESSES.value is not None or _PROCESS_ID.value is not None:
        cli.fail("--num-processes and --process-id need --coordinator-address (or use --multihost "
                 "where the cluster is auto-detected)")
    elif _MULTIHOST.value:
        import jax

        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as e:
            cli.fail(f"--multihost: jax.distributed.initialize() found no cluster to join "
                     f"({first_line(e)}); on one machine drop --multihost, elsewhere pass "
                     "--coordinator-address, --num-processes and --process-id")


def main(argv: Sequence[str]) -> None:
    if _CONFIG.value is None:
        cli.fail("--config is required, e.g. --config configs/quickstart.py")
    if not _WORKDIR.value:
        cli.fail("--workdir is required: where checkpoints and logs go (e.g. /tmp/q or gs://bucket/run)")
    config = _CONFIG.value
    if not (_MULTIHOST.value or _COORDINATOR.value):  # one process: its cores as devices
        split_cpu_cores(config.train.cpu_devices, config.train.batch_size)
    initialize_distributed()

    from mspan_jax.train.checkpoint import saved_steps
    from mspan_jax.train.loop import TrainingDivergedError, train_and_evaluate
    from mspan_jax.train.preemption import Preempted

    try:
        train_and_evaluate(config, _WORKDIR.value)
    except TrainingDivergedError as e:
        cli.fail(str(e), code=1)
    except Preempted as e:  # SIGTERM: saved; 128 + SIGTERM, as a shell reports a run it ended
        print(e, file=sys.stderr, flush=True)
        sys.exit(143)
    except KeyboardInterrupt:
        steps = saved_steps(_WORKDIR.value)
        cli.fail(f"interrupted; run the same command again to resume from step {steps[-1]} in "
                 f"{_WORKDIR.value}" if steps else "interrupted before the first checkpoint; nothing "
                 "was saved", code=130)


if __name__ == "__main__":
    cli.run(main)
