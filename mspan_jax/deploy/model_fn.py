"""The exported function of a model and its weights, and the metadata every export format stores
(`onnx_export`, `tflite_export`): format-neutral, no ONNX or TensorFlow import."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import export

from mspan_jax.checkpoints.params import model_config_dict
from mspan_jax.models.complexity import count_params
from mspan_jax.models.registry import get_model, min_input_size

LAYOUTS = ("nchw", "nhwc")
PRECISIONS = ("float32", "float16")


def model_function(model_config: Mapping[str, Any], variables: Mapping[str, Any], layout: str,
                   precision: str = "float32") -> Callable[[jax.Array], jax.Array]:
    """x -> the model's output, both float32 in `layout`; the weights are closed over (constants
    of a traced program), cast to float16 with the compute for `precision` float16."""
    if layout not in LAYOUTS or precision not in PRECISIONS:
        raise ValueError(f"layout {layout!r} / precision {precision!r}: choose from {LAYOUTS} / "
                         f"{PRECISIONS}")
    cfg = dict(model_config)
    cfg["dtype"] = precision
    model = get_model(cfg)

    def run(x: jax.Array) -> jax.Array:
        if layout == "nchw":
            x = jnp.transpose(x, (0, 2, 3, 1))
        y = model.apply(variables, x).astype(jnp.float32)
        return jnp.transpose(y, (0, 3, 1, 2)) if layout == "nchw" else y

    return run


def input_spec(model_config: Mapping[str, Any], layout: str) -> jax.ShapeDtypeStruct:
    """float32 input of symbolic batch, height and width (each side at least the model's minimum)."""
    m = min_input_size(get_model(model_config))
    b, h, w = export.symbolic_shape("batch, height, width",
                                    constraints=(f"height >= {m}", f"width >= {m}"))
    c = int(model_config.get("in_channels", 3))
    return jax.ShapeDtypeStruct((b, c, h, w) if layout == "nchw" else (b, h, w, c), jnp.float32)


def project_version() -> str:
    """The installed mspan-jax version (from the package metadata: importing `mspan_jax` here would
    close an import circle through `Upscaler`)."""
    try:
        return importlib.metadata.version("mspan-jax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def metadata(model_config: Mapping[str, Any], variables: Mapping[str, Any], layout: str,
             precision: str) -> dict[str, str]:
    """The key/value metadata stored in the file."""
    cfg = model_config_dict(model_config)
    return {
        "model": str(cfg["name"]), "scale": str(cfg["scale"]),
        "in_channels": str(cfg.get("in_channels", 3)), "params": str(count_params(variables)),
        "layout": layout, "precision": precision,
        "min_input_size": str(min_input_size(get_model(model_config))),
        "input_range": "0..1 float32, output unclipped float32",
        "producer": f"mspan-jax {project_version()}", "config_model": json.dumps(cfg),
    }
