"""Runs a file from `export.py --format onnx` with onnxruntime, without JAX's model code.

`OnnxModel` is the session with the file's metadata (model, scale, layout, minimum size);
`ExportedPredictor` is the `inference.Predictor` backed by it or by a `tflite_runtime.TfliteModel`,
which scripts/upscale.py and `Upscaler` use for a `.onnx` / `.tflite` --checkpoint: every input runs
at its own size (the graphs take any), so tiles, self-ensemble and the image handling are the JAX
path's.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from mspan_jax.deploy.tflite_runtime import TfliteModel, is_tflite_file
from mspan_jax.errors import UserError
from mspan_jax.extras import require
from mspan_jax.inference import Predictor


class OnnxFileError(UserError, ValueError):
    """A .onnx --checkpoint that onnxruntime cannot load, or one without export.py's metadata."""


def is_onnx_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".onnx")


def is_exported_file(path: str | os.PathLike) -> bool:
    """A .onnx or .tflite file from export.py, run without the JAX model."""
    return is_onnx_file(path) or is_tflite_file(path)


class OnnxModel:
    """An exported model in an onnxruntime session: `model(x)` maps float32 NHWC (N, H, W, C) in
    [0, 1] to the float32 NHWC output, whatever layout the file takes."""

    runtime = "onnxruntime"

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None):
        require("onnx", f"{path}: running an ONNX file")
        import onnxruntime as ort

        if not os.path.isfile(path):
            raise OnnxFileError(f"{path}: no such ONNX file")
        try:
            self.session = ort.InferenceSession(os.fspath(path), providers=providers
                                                or ort.get_available_providers())
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
            raise OnnxFileError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})"
                                ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "config_model" not in meta:
            raise OnnxFileError(f"{path}: has no mspan-jax metadata (config_model); export it with "
                                "scripts/export.py --format onnx")
        self.path = os.fspath(path)
        self.metadata: dict[str, str] = dict(meta)
        self.model_config: dict[str, Any] = json.loads(meta["config_model"])
        self.layout, self.precision = meta["layout"], meta["precision"]
        self.min_size = int(meta["min_input_size"])
        self.scale = int(self.model_config["scale"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _, h, w, _ = x.shape
        if h < self.min_size or w < self.min_size:
            raise ValueError(f"{self.path}: input {h}x{w} is smaller than the model's minimum "
                             f"{self.min_size}x{self.min_size}")
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "nchw" else x, np.float32)
        (y,) = self.session.run(None, {self.input_name: x})
        return y.transpose(0, 2, 3, 1) if self.layout == "nchw" else y


class ExportedPredictor(Predictor):
    """`Predictor` running an `OnnxModel` or a `TfliteModel`: each input at its own size (not
    padded, no mask)."""

    def __init__(self, model: OnnxModel | TfliteModel):
        super().__init__(model, {}, scale=model.scale, padded=False)
        self.model = model

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ExportedPredictor:
        return cls(TfliteModel(path) if is_tflite_file(path) else OnnxModel(path))

    def _run(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        self._shapes.add(x.shape)
        return self.model(x)
