"""A CPU's cores as the training loop's data-parallel devices: one single-threaded XLA:CPU device per
core, the batch split over them by the loop's own sharding (`train.sharding`).

XLA:CPU runs each op of one device's program on a shared thread pool, and the thin ops of these
models (48-channel convs on 24-48 pixel patches) leave the cores waiting on each other; PyTorch's
OpenMP loses less there. Splitting the batch instead keeps every core on whole programs: on a 2-core
CPU the MSPAN x4 train step took 0.72x the one-device step's wall time, 0.93x PyTorch eager's
(docs/performance.md). Only the CPU backend is affected; a GPU or TPU run ignores these flags.
"""

from __future__ import annotations

import os
import sys

from mspan_jax.data.train_spec import host_cores
from mspan_jax.errors import ConfigError

COUNT_FLAG = "--xla_force_host_platform_device_count"
ONE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"


def cpu_device_count(requested: int, batch_size: int, cores: int) -> int:
    """`requested` (`config.train.cpu_devices`), or for 0 the most devices up to `cores` that split
    `batch_size` evenly; ConfigError for a count that cannot split it."""
    if requested < 0:
        raise ConfigError(f"config.train.cpu_devices={requested} must be 0 (one per core) or a "
                          "device count")
    if requested:
        if batch_size % requested:
            raise ConfigError(f"config.train.cpu_devices={requested} does not divide "
                              f"config.train.batch_size={batch_size}; change one of them")
        return requested
    return max(d for d in range(1, min(cores, batch_size) + 1) if batch_size % d == 0)


def cpu_xla_flags(flags: str, count: int) -> str:
    """`flags` (an XLA_FLAGS value) with `count` single-threaded CPU devices added; unchanged for one
    device or when `flags` name a device count already (the caller's choice, e.g. a multi-process
    test)."""
    if count == 1 or COUNT_FLAG in flags:
        return flags
    return " ".join(filter(None, (flags, f"{COUNT_FLAG}={count}", ONE_THREAD_FLAG)))


def _backend_started() -> bool:
    """Whether JAX has started its backends in this process (XLA_FLAGS are read once, then)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge  # no public API says it; a JAX without it: assume not
    except ImportError:
        return False
    return bool(getattr(xla_bridge, "backends_are_initialized", lambda: False)())


def split_cpu_cores(requested: int, batch_size: int) -> int:
    """Sets XLA_FLAGS for `cpu_device_count(...)` single-threaded CPU devices; must run before JAX
    starts its backend. Returns the count set, or 0 when it changes nothing: `cpu_xla_flags` left
    the flags as they were, or JAX runs already (a script called in-process, as the tests do)."""
    count = cpu_device_count(requested, batch_size, host_cores())
    if _backend_started():
        return 0
    flags = os.environ.get("XLA_FLAGS", "")
    new = cpu_xla_flags(flags, count)
    if new == flags:
        return 0
    os.environ["XLA_FLAGS"] = new
    return count
