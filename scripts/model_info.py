"""Parameter count, multiply-adds for a 1280x720 SR output, and the module tree of a config's model.

  python scripts/model_info.py --config configs/x4.py [--json]

Mult-adds are an exact analytic count of every convolution's multiply-adds (the convention of
lightweight-SR papers), traced with jax.eval_shape: nothing is compiled or allocated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.models import get_model
from mspan_jax.models.complexity import (
    SR_OUTPUT_HW,
    abstract_variables,
    count_macs,
    count_params,
    sr_input_shape,
)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/x4.py.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of the table and tree.")
_DEPTH = flags.DEFINE_integer("depth", 2, "Depth of the module tree to print.")
flags.mark_flags_as_required(["config"])


def module_tree(params: dict, depth: int) -> list[tuple[str, int]]:
    """(path, parameter count) rows of the params tree, down to `depth` levels."""
    rows = []

    def walk(node: dict, prefix: str, level: int) -> None:
        for name, child in node.items():
            path = f"{prefix}/{name}" if prefix else name
            n = count_params(child)
            rows.append((path, n))
            has_submodules = isinstance(child, dict) and any(isinstance(v, dict) for v in child.values())
            if has_submodules and level < depth:
                walk(child, path, level + 1)

    walk(params, "", 1)
    return rows


def main(argv: Sequence[str]) -> None:
    config = _CONFIG.value
    model = get_model(config.model)
    scale = int(config.model.scale)
    shape = sr_input_shape(scale, config.model.in_channels)
    params = abstract_variables(model, shape)["params"]
    n_params = count_params(params)
    macs = count_macs(model, shape)
    info = {
        "model": config.model.name,
        "scale": scale,
        "params": n_params,
        "macs": macs,
        "macs_g": round(macs / 1e9, 2),
        "macs_counted": "analytic: multiply-adds of every convolution",
        "output_hw": [shape[1] * scale, shape[2] * scale],
        "input_shape_nhwc": list(shape),
    }
    if _JSON.value:
        print(json.dumps(info))
        return
    h, w = SR_OUTPUT_HW
    print(f"model      {info['model']} x{scale}")
    print(f"params     {n_params:,}")
    print(f"mult-adds  {macs / 1e9:.2f} G  (analytic conv count; LR input {shape[2]}x{shape[1]}"
          f" -> SR {shape[2] * scale}x{shape[1] * scale}, the papers' {w}x{h} convention)")
    print("\nmodule tree (params):")
    for path, n in module_tree(params, _DEPTH.value):
        indent = "  " * path.count("/")
        name = path.rsplit("/", 1)[-1]
        print(f"  {indent}{name:<{28 - len(indent)}} {n:>10,}  {100 * n / n_params:5.1f}%")


if __name__ == "__main__":
    cli.run(main)
