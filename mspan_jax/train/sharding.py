"""Device mesh, shardings and global-batch assembly for data-parallel training (no pmap).

One 1-D mesh axis 'data' over every device of every host: the batch is split along it,
params and optimizer state are replicated.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mspan_jax.errors import ConfigError

DATA_AXIS = "data"


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D 'data' mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of params and optimizer state: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: split along its leading (batch) axis across the 'data' axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """This process's share of the global batch; raises unless it splits evenly over devices."""
    if global_batch_size % mesh.size:
        raise ConfigError(f"config.train.batch_size={global_batch_size} must be a multiple of the "
                          f"{mesh.size} devices; change --config.train.batch_size")
    return global_batch_size // jax.process_count()


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles per-process batches (process p holds rows [p*B_local, (p+1)*B_local)) into
    global arrays sharded over the 'data' axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}
