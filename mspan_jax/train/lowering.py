"""The train step and the inference function as abstract programs: lowered with `jax.export` for
other platforms (TPU, CUDA) from any machine, and scanned for what would tie them to the CPU.

Nothing here allocates the model: the state and the batch are `jax.eval_shape`d, so the full-size
MSPAN x4 lowers in seconds on a laptop. `tests/test_lowering.py` keeps both programs free of CPU-only
pieces; `benchmarks/memory.py` compiles the train step for the CPU to print XLA's memory estimate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax import export
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

from mspan_jax.models.registry import get_model, min_input_size
from mspan_jax.train import sharding
from mspan_jax.train.state import TrainState, create_optimizer, create_train_state
from mspan_jax.train.step import StepFn, make_train_step
from mspan_jax.train.warm_start import seeded_params

# custom_call targets that every backend implements (sharding annotations and export's own shape
# checks). Anything else (lapack_*, ducc_fft, xla_python_cpu_callback, ...) exists on one platform only.
PORTABLE_CUSTOM_CALLS = frozenset({
    "Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape", "shape_assertion",
    "annotate_device_placement",
})
_CUSTOM_CALL = re.compile(r'custom_call\s*@([\w.$-]+)|call_target_name\s*=\s*"([^"]+)"')


def abstract_mesh(num_devices: int) -> AbstractMesh:
    """The loop's 1-D 'data' mesh (`sharding.create_mesh`) of `num_devices` devices, which need not
    exist here."""
    return AbstractMesh((num_devices,), (sharding.DATA_AXIS,))


def abstract_train_inputs(config: ml_collections.ConfigDict, mesh: Mesh | AbstractMesh,
                          batch_size: int, lr_size: int) -> tuple[TrainState, dict[str, Any]]:
    """ShapeDtypeStructs of the loop's TrainState (replicated over `mesh`) and of one global batch
    of `batch_size` LR patches of `lr_size` (split over the 'data' axis), as the loop feeds them."""
    model = get_model(config.model)
    optimizer = create_optimizer(config.train)
    params = jax.eval_shape(lambda: seeded_params(config, model))
    state = jax.eval_shape(lambda p: create_train_state(p, optimizer.tx, config.train.ema_decay), params)
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(sharding.DATA_AXIS))
    state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), state)
    s, c = config.model.scale, config.model.in_channels
    batch = {"lr": jax.ShapeDtypeStruct((batch_size, lr_size, lr_size, c), jnp.float32, sharding=split),
             "hr": jax.ShapeDtypeStruct((batch_size, lr_size * s, lr_size * s, c), jnp.float32,
                                        sharding=split)}
    return state, batch


def train_step(config: ml_collections.ConfigDict, mesh: Mesh | AbstractMesh) -> StepFn:
    """The loop's jitted, sharded train step (`make_train_step`) for `config` over `mesh`."""
    model = get_model(config.model)
    return make_train_step(config.train, model.apply, create_optimizer(config.train), mesh)


def export_train_step(config: ml_collections.ConfigDict, platforms: Sequence[str], *,
                      num_devices: int = 8, batch_size: int = 16, lr_size: int = 48) -> export.Exported:
    """`jax.export` of the train step over `num_devices` (abstract) devices for `platforms`."""
    mesh = abstract_mesh(num_devices)
    state, batch = abstract_train_inputs(config, mesh, batch_size, lr_size)
    return export.export(train_step(config, mesh), platforms=tuple(platforms))(state, batch)


def export_abstract_inference(model_config: ml_collections.ConfigDict,
                              platforms: Sequence[str]) -> export.Exported:
    """`jax.export` of `(variables, x) -> model.apply(variables, x)` with abstract variables and x of
    symbolic (batch, height, width), as scripts/export.py exports it (there the variables are
    constants of the program; the operations are the same)."""
    model = get_model(model_config)
    m = min_input_size(model)
    x = jnp.zeros((1, 2 * m, 2 * m, model_config.in_channels), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0, impl="rbg"), x))
    b, h, w = export.symbolic_shape("b, h, w", constraints=(f"h >= {m}", f"w >= {m}"))
    spec = jax.ShapeDtypeStruct((b, h, w, model_config.in_channels), jnp.float32)
    return export.export(jax.jit(model.apply), platforms=tuple(platforms))(variables, spec)


def custom_call_targets(program: export.Exported | str) -> set[str]:
    """Every custom_call target named in `program` (an Exported or StableHLO text)."""
    text = program if isinstance(program, str) else program.mlir_module()
    return {a or b for a, b in _CUSTOM_CALL.findall(text)}


def non_portable_parts(program: export.Exported | str) -> list[str]:
    """What ties `program` (an Exported or StableHLO text) to one platform: custom calls outside
    PORTABLE_CUSTOM_CALLS and host callbacks (jax lowers pure_callback / io_callback / debug.print
    to custom calls named *callback*), sorted; empty when the program is portable."""
    foreign = custom_call_targets(program) - PORTABLE_CUSTOM_CALLS
    return sorted(f"host callback {t}" if "callback" in t else f"custom_call {t}" for t in foreign)


def train_step_cost(config: ml_collections.ConfigDict, *, batch_size: int = 16,
                    lr_size: int = 48) -> dict[str, float]:
    """XLA's cost analysis of the train step lowered for one device (no compile): `flops` and
    `bytes` (operand bytes read and written by every op of the unfused program, an upper bound on
    memory traffic, since fusion keeps intermediates on chip) per step of `batch_size` LR patches."""
    mesh = sharding.create_mesh(jax.devices()[:1])
    state, batch = abstract_train_inputs(config, mesh, batch_size, lr_size)
    cost = train_step(config, mesh).lower(state, batch).cost_analysis()
    return {"flops": float(cost["flops"]), "bytes": float(cost["bytes accessed"])}


def roofline_steps_per_sec(cost: dict[str, float], peak_flops: float, bytes_per_sec: float) -> float:
    """Steps/s of one chip that did nothing but `cost`'s work at its peak FLOP rate and memory
    bandwidth: 1 / max(flops / peak, bytes / bandwidth)."""
    return 1.0 / max(cost["flops"] / peak_flops, cost["bytes"] / bytes_per_sec)
