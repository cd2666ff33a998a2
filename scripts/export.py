"""Serializes a trained or converted model's inference function with `jax.export`.

  python scripts/export.py --checkpoint weights/mspan_x4 --out mspan_x4.jaxexport

The file holds the StableHLO of `x -> model.apply(params, x)` with the parameters inside, for
float32 NHWC input in [0, 1] of symbolic batch, height and width (every model here is fully
convolutional, with a pixel shuffle, so any H, W works from the model's minimum on: 1, or 4 with
MSPA's pooling, 15 with ESA's), giving
float32 (N, scale H, scale W, C) output (unclipped, as the model's). It runs with jax alone, without
this package or flax:

  from jax import export
  exported = export.deserialize(open("mspan_x4.jaxexport", "rb").read())
  sr = exported.call(lr)  # lr: float32 (N, H, W, 3) in [0, 1]

--platforms lowers for several backends at once (e.g. cpu,cuda,tpu), so one file serves them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from absl import flags
from jax import export
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.checkpoints.resolve import load_model
from mspan_jax.errors import ConfigError
from mspan_jax.files import check_output_file, write_bytes_atomic
from mspan_jax.models.registry import min_input_size

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (default: the model the "
                                           "checkpoint records), e.g. configs/x4.py.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params checkpoint or training workdir.")
_OUT = flags.DEFINE_string("out", None, "The serialized function, e.g. model.jaxexport.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cpu"], "Backends to lower for: cpu, cuda, rocm, tpu.")
flags.mark_flags_as_required(["checkpoint", "out"])

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def export_model(model, variables, in_channels: int, platforms: Sequence[str]) -> export.Exported:
    """`jax.export` of `x -> model.apply(variables, x)` for float32 (b, h, w, in_channels), all
    three symbolic (h, w at least the model's `min_input_size`); the variables become constants of
    the exported program."""
    def infer(x: jax.Array) -> jax.Array:
        return model.apply(variables, x)

    m = min_input_size(model)
    b, h, w = export.symbolic_shape("b, h, w", constraints=(f"h >= {m}", f"w >= {m}"))
    spec = jax.ShapeDtypeStruct((b, h, w, in_channels), jnp.float32)
    return export.export(jax.jit(infer), platforms=tuple(platforms))(spec)


def main(argv: Sequence[str]) -> None:
    check_output_file(_OUT.value, "--out")
    loaded = load_model(_CHECKPOINT.value, _CONFIG.value)
    config = loaded.config
    platforms = [p.lower() for p in _PLATFORMS.value]
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown or not platforms:
        raise ConfigError(f"--platforms {','.join(_PLATFORMS.value)}: choose from {','.join(PLATFORMS)}")
    exported = export_model(loaded.model, loaded.variables, int(config.model.in_channels), platforms)
    data = exported.serialize()
    write_bytes_atomic(_OUT.value, bytes(data))
    (arg,), out = exported.in_avals, exported.out_avals[0]
    print(f"wrote {_OUT.value} ({len(data) / 1e6:.1f} MB): {config.model.name} x{config.model.scale}, "
          f"{arg.str_short()} in [0, 1] -> {out.str_short()}, platforms {','.join(platforms)}")


if __name__ == "__main__":
    cli.run(main)
