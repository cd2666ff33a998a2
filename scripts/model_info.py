"""Parameter count, mult-adds for a 1280x720 SR output, and the module tree of a config's model.

  python scripts/model_info.py --config configs/x4.py [--json]
  python scripts/model_info.py --config configs/x2.py --config.model.attention=ca

Mult-adds are an exact analytic count, traced with jax.eval_shape (nothing is compiled or
allocated), in the two conventions of the MSPAN paper's tables (`complexity.count_ops`): `macs`
(multiply-adds of every conv: the IMDN rows) and `macs_with_bias` (plus one add per bias and the
pooling ops: the MSPAN rows). Where 1280 or 720 is not a multiple of the scale (x3) the LR side is
rounded up (427x240), and the floor count (426x240) is given beside it. When the config is one the
paper prints (MSPAN x2/x3/x4; MSPAN x2 with attention none/ca/esa; IMDN x2/x3/x4), the paper's
figures are printed beside ours with ok / miss (`mspan_jax.models.paper_counts`, the rows of each
model's spec). For the paper's MSPAN-IR (configs/denoise_gray.py, denoise_real.py, derain.py) it is
the restoration tables' params figure, printed "8.3x10^-5" there and read as 8.3 x 10^5
(docs/restoration.md); mult-adds are then for a 1280x720 input, which the tables do not print.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.models.complexity import (
    SR_OUTPUT_HW,
    abstract_variables,
    count_ops,
    count_params,
    sr_input_shape,
)
from mspan_jax.models.paper_counts import (
    mult_adds_ok,
    paper_row,
    params_ok,
    restoration_row,
    verdict,
)
from mspan_jax.models.registry import get_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/x4.py; "
                                          "override keys with e.g. --config.model.attention=ca.")
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


def model_info(model_config: Any) -> dict[str, Any]:
    """Params, both mult-add counts (and the floor-LR ones where the LR side is rounded up), and
    the paper's figures with ok / miss when the config is one of its rows."""
    model = get_model(model_config)
    scale = int(model_config.scale)
    shape = sr_input_shape(scale, model_config.in_channels)
    n_params = count_params(abstract_variables(model, shape)["params"])
    ops = count_ops(model, shape)
    info: dict[str, Any] = {
        "model": model_config.name,
        "scale": scale,
        "params": n_params,
        "macs": ops["macs"],
        "macs_g": round(ops["macs"] / 1e9, 2),
        "macs_with_bias": ops["macs_with_bias"],
        "macs_with_bias_g": round(ops["macs_with_bias"] / 1e9, 2),
        "macs_counted": "analytic: macs = multiply-adds of every convolution; macs_with_bias = "
                        "those + one add per bias + pooling ops",
        "output_hw": [shape[1] * scale, shape[2] * scale],
        "input_shape_nhwc": list(shape),
    }
    if "attention" in model_config:
        info["attention"] = model_config.attention
    floor_shape = sr_input_shape(scale, model_config.in_channels, round_up=False)
    if floor_shape != shape:
        floor = count_ops(model, floor_shape)
        info.update(macs_lr_floor=floor["macs"], macs_with_bias_lr_floor=floor["macs_with_bias"],
                    input_shape_nhwc_lr_floor=list(floor_shape))
    row = paper_row(model_config)
    if row is not None:
        ours = info[row.convention]
        paper = {"row": row.label, "table": row.table, "params_k": row.params_k,
                 "params": verdict(params_ok(row, n_params)), "mult_adds_g": row.mult_adds_g,
                 "convention": row.convention, "mult_adds": verdict(mult_adds_ok(row, ours))}
        if floor_shape != shape:
            paper["mult_adds_lr_floor"] = verdict(mult_adds_ok(row, info[f"{row.convention}_lr_floor"]))
        info["paper"] = paper
    ir_row = restoration_row(model_config)
    if ir_row is not None:
        info["paper"] = {"row": ir_row.label, "table": ir_row.tables, "params_printed": ir_row.printed,
                         "params_figure": ir_row.mantissa * 10**ir_row.exponent,
                         "params": verdict(ir_row.ok(n_params))}
    return info


def print_table(info: dict[str, Any]) -> None:
    """The human-readable summary of `model_info`."""
    scale, shape = info["scale"], info["input_shape_nhwc"]
    h, w = SR_OUTPUT_HW
    attention = f" (attention {info['attention']})" if "attention" in info else ""
    print(f"model      {info['model']} x{scale}{attention}")
    print(f"params     {info['params']:,}")
    if scale == 1:
        print(f"mult-adds  {info['macs'] / 1e9:.2f} G  (multiply-adds of every conv; a {shape[2]}x"
              f"{shape[1]} input, restoration keeps the size)")
    else:
        print(f"mult-adds  {info['macs'] / 1e9:.2f} G  (multiply-adds of every conv; LR input "
              f"{shape[2]}x{shape[1]} -> SR {shape[2] * scale}x{shape[1] * scale}, the papers' "
              f"{w}x{h} convention)")
    print(f"           {info['macs_with_bias'] / 1e9:.2f} G  with one add per bias and the pooling "
          "ops (the MSPAN rows' convention)")
    if "input_shape_nhwc_lr_floor" in info:
        fh, fw = info["input_shape_nhwc_lr_floor"][1:3]
        print(f"           at the floor LR {fw}x{fh}: {info['macs_lr_floor'] / 1e9:.2f} G, "
              f"{info['macs_with_bias_lr_floor'] / 1e9:.2f} G with bias adds and pooling")
    paper = info.get("paper")
    if paper is not None and "params_printed" in paper:
        print(f"\npaper      {paper['row']}:")
        print(f"  params     {paper['params_printed']}  ours {info['params']:,} "
              f"({info['params'] / 1e5:.3f} x 10^5)  {paper['params']}")
    elif paper is not None:
        key = paper["convention"]
        print(f"\npaper      {paper['row']}, {paper['table']}:")
        printed_params, printed_macs = f"{paper['params_k']}K", f"{paper['mult_adds_g']:.1f} G"
        print(f"  params     {printed_params:<9} ours {info['params']:,}  {paper['params']}")
        print(f"  mult-adds  {printed_macs:<9} ours {info[key] / 1e9:.3f} G ({key}, "
              f"{shape[2]}x{shape[1]})  {paper['mult_adds']}")
        if "mult_adds_lr_floor" in paper:
            fh, fw = info["input_shape_nhwc_lr_floor"][1:3]
            print(f"                       ours {info[f'{key}_lr_floor'] / 1e9:.3f} G ({key}, "
                  f"{fw}x{fh})  {paper['mult_adds_lr_floor']}")
            if paper["mult_adds"] == "miss" and paper["mult_adds_lr_floor"] == "ok":
                print("  the printed figure fits the floor LR only (mspan_jax/models/mspan.py)")


def main(argv: Sequence[str]) -> None:
    config = _CONFIG.value
    info = model_info(config.model)
    if _JSON.value:
        print(json.dumps(info))
        return
    print_table(info)
    model = get_model(config.model)
    params = abstract_variables(model, tuple(info["input_shape_nhwc"]))["params"]
    print("\nmodule tree (params):")
    for path, n in module_tree(params, _DEPTH.value):
        indent = "  " * path.count("/")
        name = path.rsplit("/", 1)[-1]
        print(f"  {indent}{name:<{28 - len(indent)}} {n:>10,}  {100 * n / info['params']:5.1f}%")


if __name__ == "__main__":
    cli.run(main)
