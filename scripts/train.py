"""Train MSPAN or IMDN: `python scripts/train.py --config configs/x4.py --workdir DIR`.

Any config key can be overridden, e.g. `--config.train.batch_size=32 --config.train.num_steps=1000`.
A workdir that holds checkpoints is resumed (same data order and optimizer state). Multi-host
(TPU pod slices, GPU clusters): pass --multihost on every host (jax.distributed auto-detects the
cluster), or --coordinator_address/--num_processes/--process_id explicitly. See docs/training.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from mspan_jax import cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (TensorBoard events) start-up noise

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events and eval_results.json "
                               "go here (local path or gs://); a workdir with checkpoints is resumed.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (auto-detected "
                               "cluster: TPU pod slice, SLURM, ...) before anything else.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a "
                                   "multi-process run without auto-detection (implies --multihost).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (with "
                                      "--coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index (with --coordinator_address).")


def _config_file(argv: Sequence[str]) -> str | None:
    """The --config value in argv (either `--config X` or `--config=X`), before absl loads it."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flag parsing, with a bad flag, config file or config override reported as one line."""
    path = _config_file(argv)
    if path is not None and not os.path.isfile(path.split(":", 1)[0]):
        cli.fail(f"--config {path}: no such file; use one of configs/*.py")
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        cli.fail(str(e).strip().splitlines()[0])
    except (AttributeError, KeyError) as e:  # config_flags: an override names no key of the config
        key = str(e).strip("'\"")
        cli.fail(f"unknown config key {key!r} in a --config.* override; see {path} and "
                 "mspan_jax/config_base.py for the keys")
    except Exception as e:  # the config file itself failed to import (syntax error, bad import)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        cli.fail(f"--config {path}: cannot load it ({type(e).__name__}: {detail})")


def initialize_distributed() -> None:
    """Starts jax.distributed when asked to, before any JAX computation."""
    if _COORDINATOR.value:
        import jax

        if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
            cli.fail("--coordinator_address needs --num_processes and --process_id")
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    elif _MULTIHOST.value:
        import jax

        jax.distributed.initialize()


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {list(argv[1:])}; flags are given as --name=value")
    if _CONFIG.value is None:
        cli.fail("--config is required, e.g. --config configs/quickstart.py")
    if not _WORKDIR.value:
        cli.fail("--workdir is required: where checkpoints and logs go (e.g. /tmp/q or gs://bucket/run)")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep orbax's INFO lines off the progress output
    try:
        config = _CONFIG.value
        config.train  # noqa: B018 (a config file that failed to import raises here)
    except OSError as e:
        cli.fail(f"--config: {' '.join(str(e).split())}")
    initialize_distributed()

    from mspan_jax.train.loop import TrainingDivergedError, train_and_evaluate

    try:
        train_and_evaluate(config, _WORKDIR.value)
    except TrainingDivergedError as e:
        cli.fail(str(e), code=1)
    except cli.USER_ERRORS as e:
        cli.fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    except KeyboardInterrupt:
        cli.fail(f"interrupted; run the same command again to resume from {_WORKDIR.value}", code=130)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
