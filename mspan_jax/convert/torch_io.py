"""Reading PyTorch weight files into `dict[str, np.ndarray]` without unpickling code.

`.safetensors` files are read with `safetensors.numpy` (no torch needed); anything else is read
with `torch.load(..., map_location="cpu", weights_only=True)`, which handles both the legacy
(pre-1.6) serialization, e.g. the official IMDN files saved from CUDA, and the zip format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Keys under which common training scripts nest the state_dict (tried in this order).
WRAPPER_KEYS = ("state_dict", "model", "params", "params_ema")
# Prefixes added by torch.nn.DataParallel / DistributedDataParallel.
STRIP_PREFIXES = ("module.",)


class ConversionError(ValueError):
    """A weight file cannot be read or does not fit the model it is converted for."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(error).__name__


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state_dict with DataParallel's `module.` prefixes removed from every key."""
    out = {}
    for key, value in state_dict.items():
        for prefix in STRIP_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _load_torch(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise ConversionError(f"{path}: reading PyTorch files needs torch; run "
                              "`pip install -e .[torch]` or convert the file to .safetensors") from None
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ConversionError(f"{path}: not a PyTorch checkpoint (neither the zip nor the legacy pickle "
                              "format); expected a .pth/.pt file or a .safetensors file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (zip), EOFError (truncated), ...
        text = str(e)
        if "Unsupported global" in text:
            raise ConversionError(f"{path}: holds pickled Python objects besides tensors; refusing to "
                                  "unpickle code (save a plain state_dict instead)") from None
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip() or text
        detail = detail.splitlines()[0][:200] if detail.strip() else ""
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint, truncated or damaged "
                              f"({type(e).__name__}: {detail})") from None


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError for bad headers, truncated data, unknown dtypes
        raise ConversionError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None


def _unwrap(obj: Any, path: Path) -> Mapping[str, Any]:
    """The innermost state_dict of a raw dict or a {'state_dict' | 'model' | 'params': ...} wrapper."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            return obj
        obj = inner
    return obj


def _to_numpy(value: Any) -> np.ndarray | None:
    """A tensor or array as a numpy array (bfloat16 widened to float32); None for other values."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "dtype"):  # a torch.Tensor
        import torch

        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    return None


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`{torch key: array}` of a .pth/.pt (legacy or zip) or .safetensors file, `module.` stripped.

    Raises ConversionError (one line naming the file) for a missing, unreadable, truncated or
    non-checkpoint file, or one that holds no tensors.
    """
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file")
    if not path.is_file():
        raise ConversionError(f"{path}: is not a file")
    if path.suffix == ".safetensors":
        obj: Any = _load_safetensors(path)
    else:
        obj = _load_torch(path)
    state = _unwrap(obj, path)
    arrays, other = {}, []
    for key, value in state.items():
        array = _to_numpy(value)
        if array is None:
            other.append(str(key))
        else:
            arrays[str(key)] = array
    if not arrays:
        raise ConversionError(f"{path}: holds no tensors (keys: {', '.join(sorted(other)[:8])})")
    if other:
        raise ConversionError(f"{path}: state_dict has non-tensor entries {sorted(other)[:8]}; save "
                              "model.state_dict() alone")
    return strip_prefixes(arrays)
