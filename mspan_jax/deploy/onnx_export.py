"""A model with its weights as an ONNX file that runs at any input size (scripts/export.py).

The graph takes float32 images in [0, 1], NCHW (what onnxruntime and TensorRT users expect) or
NHWC, with symbolic batch, height and width from the model's minimum size up (MSPA's 4x4 pooling:
4; ESA's: 15), and gives the model's float32 output (unclipped). MSPA's pooled sizes and its
bilinear resize's source taps (PyTorch's align_corners=False, `layers.resize_bilinear`) are
computed in the graph from the input's shape (`jaxpr_onnx`), so the same arithmetic as JAX's
runs at every size; no size is baked in. `precision="float16"` computes in float16 (weights
stored as float16) with float32 input and output, for runtimes with float16 kernels.

The file's metadata (`metadata_props`) names the model, scale, parameter count, layout,
precision, minimum size, the project version and the full `config.model`, which
`onnx_runtime.OnnxModel` reads back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx

from mspan_jax.deploy.jaxpr_onnx import DEFAULT_OPSET, to_onnx
from mspan_jax.deploy.model_fn import input_spec, metadata, model_function

INPUT_NAME, OUTPUT_NAME = "lr", "sr"


def export_onnx(model_config: Mapping[str, Any], variables: Mapping[str, Any], *,
                layout: str = "nchw", precision: str = "float32",
                opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The checked ONNX model (`onnx.checker`, full) of a model config and its variables."""
    fn = model_function(model_config, variables, layout, precision)
    name = f"{model_config['name']}_x{model_config['scale']}"
    proto = to_onnx(fn, input_spec(model_config, layout), input_name=INPUT_NAME,
                    output_name=OUTPUT_NAME, opset=opset, graph_name=name)
    proto.doc_string = (f"{name} super-resolution ({precision}, {layout.upper()}): float32 input "
                        "in [0, 1] of any batch and size from min_input_size up; exported by mspan-jax")
    onnx.helper.set_model_props(proto, metadata(model_config, variables, layout, precision))
    onnx.checker.check_model(proto, full_check=True)
    return proto

