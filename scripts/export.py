"""Serializes a trained or converted model's inference function: `jax.export` (the default), or
ONNX / TFLite for runtimes without JAX (onnxruntime, TensorRT, LiteRT on Android, ...).

  python scripts/export.py --checkpoint weights/mspan_x4 --out mspan_x4.jaxexport
  python scripts/export.py --checkpoint mspan_x4 --format onnx --out mspan_x4.onnx
  python scripts/export.py --checkpoint IMDN_x4.pth --model imdn --scale 4 --format onnx --out x4.onnx
  python scripts/export.py --checkpoint mspan_x4 --format tflite --out mspan_x4.tflite

--checkpoint takes what upscale.py takes: a params checkpoint, a training workdir, shipped weights by
name, or a PyTorch weight file with --model/--scale.

--format onnx (the [onnx] extra) writes a graph of symbolic batch, height and width (each side at
least the model's minimum), float32 in [0, 1], NCHW (--layout nhwc for NHWC), with the model's name,
scale, parameter count and the project version in its metadata; it is checked with onnx.checker
before it is written, and `upscale.py --checkpoint model.onnx` runs it through onnxruntime.
--precision float16 computes in float16 (float32 input and output); docs/usage.md "Export to ONNX"
gives its PSNR change.

--format tflite (the [tflite] extra: TensorFlow's converter, LiteRT's interpreter) writes TFLite
builtins only, float32 NHWC in [0, 1] with batch, height and width free (-1 in the signature;
resize_tensor_input for each size), the same metadata in a "mspan_jax" metadata buffer; --precision
float16 stores the weights as float16 (docs/usage.md "Export to TFLite").

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
from mspan_jax.checkpoints.resolve import LoadedModel, load_model
from mspan_jax.errors import ConfigError
from mspan_jax.extras import require
from mspan_jax.files import check_output_file, write_bytes_atomic
from mspan_jax.models.registry import min_input_size

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (default: the model the "
                                           "checkpoint records), e.g. configs/x4.py.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params checkpoint or training workdir.")
_OUT = flags.DEFINE_string("out", None, "The serialized function, e.g. model.jaxexport.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cpu"], "Backends to lower for (jaxexport): cpu, cuda, "
                               "rocm, tpu.")
_FORMAT = flags.DEFINE_enum("format", "jaxexport", ["jaxexport", "onnx", "tflite"], "What to write: "
                            "jax.export's serialized StableHLO, ONNX (the [onnx] extra) or TFLite "
                            "(the [tflite] extra).")
_LAYOUT = flags.DEFINE_enum("layout", "nchw", ["nchw", "nhwc"], "Input/output layout of --format onnx "
                            "(TFLite is NHWC).")
_PRECISION = flags.DEFINE_enum("precision", "float32", ["float32", "float16"], "--format onnx: compute "
                               "precision (input and output stay float32); tflite: weight storage.")
_OPSET = flags.DEFINE_integer("opset", 17, "ONNX opset of --format onnx (17: onnxruntime >= 1.13, "
                              "TensorRT >= 8.6).")
_MODEL = flags.DEFINE_string("model", None, "Model of a PyTorch --checkpoint, e.g. imdn.")
_SCALE = flags.DEFINE_integer("scale", None, "Scale of a PyTorch --checkpoint, e.g. 4.")
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


def write_onnx(loaded: LoadedModel) -> None:
    """--format onnx: the checked graph, written atomically."""
    require("onnx", "export.py --format onnx")
    from mspan_jax.deploy.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx

    cfg = loaded.model_config
    if _OPSET.value < 17:
        raise ConfigError(f"--opset {_OPSET.value}: the export needs opset 17 or newer")
    proto = export_onnx(cfg, loaded.variables, layout=_LAYOUT.value, precision=_PRECISION.value,
                        opset=_OPSET.value)
    data = proto.SerializeToString()
    write_bytes_atomic(_OUT.value, data)
    c, s = int(cfg.get("in_channels", 3)), int(cfg.scale)
    shape = ("(batch, {c}, height, width)" if _LAYOUT.value == "nchw"
             else "(batch, height, width, {c})")
    print(f"wrote {_OUT.value} ({len(data) / 1e6:.1f} MB): {cfg.name} x{s}, ONNX opset {_OPSET.value}, "
          f"{_PRECISION.value}; {INPUT_NAME} float32 {shape.format(c=c)} in [0, 1] -> {OUTPUT_NAME} "
          f"float32 {shape.format(c=cfg.get('out_channels', c))} x{s} (height, width >= "
          f"{min_input_size(loaded.model)}); run: python scripts/upscale.py --checkpoint {_OUT.value}")


def write_tflite(loaded: LoadedModel) -> None:
    """--format tflite: the converted flatbuffer with its metadata, written atomically."""
    require("tflite", "export.py --format tflite")
    if (_LAYOUT.present and _LAYOUT.value != "nhwc") or _OPSET.present:
        raise ConfigError("--layout nchw and --opset are --format onnx's: a TFLite file is NHWC")
    from mspan_jax.deploy.tflite_export import export_tflite

    cfg = loaded.model_config
    data = export_tflite(cfg, loaded.variables, precision=_PRECISION.value)
    write_bytes_atomic(_OUT.value, data)
    c, s = int(cfg.get("in_channels", 3)), int(cfg.scale)
    weights = "float16 weights" if _PRECISION.value == "float16" else "float32"
    print(f"wrote {_OUT.value} ({len(data) / 1e6:.1f} MB): {cfg.name} x{s}, TFLite builtins, "
          f"{weights}; float32 (batch, height, width, {c}) in [0, 1] -> float32 (batch, height, "
          f"width, {cfg.get('out_channels', c)}) x{s}, sizes free (height, width >= "
          f"{min_input_size(loaded.model)}; resize_tensor_input)")


def main(argv: Sequence[str]) -> None:
    check_output_file(_OUT.value, "--out")
    if (_MODEL.value is None) != (_SCALE.value is None):
        raise ConfigError("--model and --scale go together (for a PyTorch --checkpoint)")
    model = (_MODEL.value, _SCALE.value) if _MODEL.value is not None else None
    loaded = load_model(_CHECKPOINT.value, _CONFIG.value, model=model)
    if _FORMAT.value != "jaxexport":
        (write_onnx if _FORMAT.value == "onnx" else write_tflite)(loaded)
        return
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
