"""Optional dependencies (the extras in pyproject.toml): one check, and one error naming the extra.

The core (`pip install -e .`) trains, evaluates on image folders, upscales and converts weights with
neither TensorFlow nor PyTorch. The tfds builders (benchmark sets, paired folders, tfds DIV2K) need
`[tfds]`: tensorflow-datasets encodes and reads their examples through TensorFlow. The PyTorch
reference model behind `--verify` needs `[torch]`; scripts/visualize_mspa.py's figure `[figures]`
(matplotlib); the ONNX export and running a .onnx file `[onnx]` (onnx, onnxruntime); the TFLite
export and running a .tflite file `[tflite]` (TensorFlow's converter, LiteRT's interpreter). A gs://
workdir, checkpoint or data_dir needs `[gcs]` (gcsfs, the client etils.epath uses for buckets;
mspan_jax/storage.py).
"""

from __future__ import annotations

import importlib.util

from mspan_jax.errors import UserError

EXTRAS: dict[str, tuple[str, ...]] = {
    "tfds": ("tensorflow_datasets", "tensorflow"),
    "torch": ("torch",),
    "figures": ("matplotlib",),
    "gcs": ("gcsfs",),
    "onnx": ("onnx", "onnxruntime"),
    "tflite": ("tensorflow", "ai_edge_litert"),
}


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(extra: str, purpose: str) -> None:
    """Raises MissingExtraError (one line: what needs it, the missing modules, the pip command)
    unless every module of `extra` is installed. Looks the modules up without importing them."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"{purpose}: needs the [{extra}] extra ({', '.join(missing)} not "
                                f"installed); pip install -e '.[{extra}]'")
