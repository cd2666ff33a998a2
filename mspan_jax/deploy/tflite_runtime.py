"""Runs a file from `export.py --format tflite` with LiteRT's interpreter (ai-edge-litert), without
JAX's model code: `TfliteModel` is the interpreter with the file's metadata; `upscale.py` and
`Upscaler` run it through `onnx_runtime.ExportedPredictor`, as they run a .onnx file.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from mspan_jax.errors import UserError
from mspan_jax.extras import require

METADATA_NAME = "mspan_jax"  # the flatbuffer metadata entry tflite_export writes


class TfliteFileError(UserError, ValueError):
    """A .tflite --checkpoint that LiteRT cannot load, or one without export.py's metadata."""


def is_tflite_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".tflite")


def read_metadata(data: bytes) -> dict[str, str] | None:
    """The "mspan_jax" metadata JSON of a TFLite flatbuffer; None when it has none."""
    from ai_edge_litert.schema_py_generated import Model

    model = Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


class TfliteModel:
    """An exported model in LiteRT's interpreter: `model(x)` maps float32 NHWC (N, H, W, C) in
    [0, 1] to the float32 NHWC output, the input resized to each new shape."""

    runtime = "LiteRT"

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        require("tflite", f"{path}: running a TFLite file")
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise TfliteFileError(f"{path}: no such TFLite file")
        with open(path, "rb") as f:
            data = f.read()
        try:
            meta = read_metadata(data)
            self.interpreter = Interpreter(model_content=data, num_threads=num_threads)
        except Exception as e:  # noqa: BLE001 - flatbuffers / LiteRT raise their own types
            raise TfliteFileError(f"{path}: LiteRT cannot load it ({str(e).splitlines()[0][:200]})"
                                  ) from None
        if meta is None or "config_model" not in meta:
            raise TfliteFileError(f"{path}: has no mspan-jax metadata (config_model); export it with "
                                  "scripts/export.py --format tflite")
        self.path = os.fspath(path)
        self.metadata: dict[str, str] = meta
        self.model_config: dict[str, Any] = json.loads(meta["config_model"])
        self.precision = meta["precision"]
        self.min_size = int(meta["min_input_size"])
        self.scale = int(self.model_config["scale"])
        (self._input,), (self._output,) = (self.interpreter.get_input_details(),
                                           self.interpreter.get_output_details())
        self._shape: tuple[int, ...] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _, h, w, _ = x.shape
        if h < self.min_size or w < self.min_size:
            raise ValueError(f"{self.path}: input {h}x{w} is smaller than the model's minimum "
                             f"{self.min_size}x{self.min_size}")
        if x.shape != self._shape:
            self.interpreter.resize_tensor_input(self._input["index"], x.shape, strict=True)
            self.interpreter.allocate_tensors()
            self._shape = x.shape
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(x, np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"])
