"""A model with its weights as a TFLite file that runs at any input size (scripts/export.py
--format tflite).

The model's jaxpr, traced with symbolic batch, height and width, becomes TensorFlow ops
(`jaxpr_tf`) that TensorFlow's converter turns into TFLite builtins only (no Flex / select-TF
ops, so the plain LiteRT interpreter runs it). The input is float32 NHWC in [0, 1] with batch,
height and width left free (-1 in the signature: `interpreter.resize_tensor_input` then
`allocate_tensors` for each size, from the model's minimum up); the output float32 NHWC,
unclipped. `precision="float16"` stores the weights as float16 (the converter's float16
quantization): a CPU interpreter dequantizes them to float32 once, a GPU delegate computes in
float16. The model metadata (`model_fn.metadata`) is a JSON buffer named "mspan_jax" in the
flatbuffer's metadata table, which `tflite_runtime` reads back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema_fb
from tensorflow.lite.tools import flatbuffer_utils

from mspan_jax.deploy.jaxpr_tf import to_tf_function
from mspan_jax.deploy.model_fn import input_spec, metadata, model_function
from mspan_jax.deploy.tflite_runtime import METADATA_NAME


def with_metadata(data: bytes, values: Mapping[str, str]) -> bytes:
    """The TFLite flatbuffer `data` with `values` as a JSON buffer named METADATA_NAME."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    buffer = schema_fb.BufferT()
    buffer.data = list(json.dumps(dict(values), sort_keys=True).encode())
    model.buffers.append(buffer)
    entry = schema_fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def export_tflite(model_config: Mapping[str, Any], variables: Mapping[str, Any], *,
                  precision: str = "float32") -> bytes:
    """The TFLite flatbuffer of a model config and its variables (NHWC, symbolic sizes)."""
    if precision not in ("float32", "float16"):
        raise ValueError(f"precision {precision!r}: choose float32 or float16")
    fn = model_function(model_config, variables, "nhwc")
    name = f"{model_config['name']}_x{model_config['scale']}"
    function = to_tf_function(fn, input_spec(model_config, "nhwc"), name=name)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()],
                                                                function)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    data = converter.convert()
    return with_metadata(data, metadata(model_config, variables, "nhwc", precision))
