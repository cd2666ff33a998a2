"""Reading PyTorch weight files into `dict[str, np.ndarray]` without PyTorch and without running code.

`.safetensors` files are read with `safetensors.numpy`; `.pth`/`.pt` files, in both torch.save
formats (the zip format of PyTorch >= 1.6 and the legacy pickle stream, e.g. the official IMDN files
saved from CUDA), through an allow-list unpickler that rebuilds only dicts, OrderedDicts, tensors and
storages, into numpy arrays of the stored dtype (bfloat16 as `ml_dtypes.bfloat16`). Any other global
in the pickle is refused, before it is imported, as a code-bearing object.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

import ml_dtypes
import numpy as np

from mspan_jax.errors import UserError, first_line

# Keys under which common training scripts nest the state_dict (tried in this order). BasicSR saves
# {'params': ..., 'params_ema': ...}: the EMA weights come first, as BasicSR's own testing uses them.
WRAPPER_KEYS = ("state_dict", "model", "params_ema", "params")
# Prefixes added by torch.nn.DataParallel / DistributedDataParallel.
STRIP_PREFIXES = ("module.",)


class ConversionError(UserError, ValueError):
    """A weight file cannot be read or does not fit the model it is converted for."""


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state_dict with DataParallel's `module.` prefixes removed from every key."""
    out = {}
    for key, value in state_dict.items():
        for prefix in STRIP_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


# PyTorch storage classes -> the numpy dtype of their elements. bfloat16 stays bfloat16
# (ml_dtypes, JAX's own; exact), and conversion casts every parameter to float32 afterwards.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64), "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16), "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001
# The most bytes one .pth read may materialize (storages read plus the tensors cut from them, about
# twice the file), and so the largest zip member it inflates: the largest real SR checkpoints are
# ~170 MB (EDSR x4, 43M float32 parameters) and ~330 MB (BasicSR's HAT-L with params and params_ema),
# i.e. ~660 MB read; a file needing more is refused in one line (raise it with `max_bytes`, e.g.
# convert_torch_weights.py --max_pth_mb).
DEFAULT_MAX_BYTES = 1 << 30


class _CodeBearing(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class _Damaged(pickle.UnpicklingError):
    """The pickle is well formed but its tensors do not fit their storages."""


class _TooLarge(pickle.UnpicklingError):
    """Reading the file would materialize more bytes than allowed."""


class _StorageType(NamedTuple):
    """A storage class of the allow-list. A tuple: the pickle BUILD opcode cannot rewrite it (no
    `__dict__`, read-only fields), so no file can change what later loads in this process see."""
    name: str
    dtype: np.dtype


class _Callable(NamedTuple):
    """An allow-listed function, wrapped as a tuple for the same reason (a function's `__dict__`
    and `__defaults__` are writable by BUILD)."""
    function: Any

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


class _Budget:
    """The bytes one read may still materialize (`DEFAULT_MAX_BYTES`)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = self.left = int(max_bytes)

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise _TooLarge(f"{what} needs {nbytes:,} bytes, beyond the limit of {self.max_bytes:,} "
                            "bytes materialized per file")
        self.left -= nbytes


@dataclasses.dataclass
class _Storage:
    """One storage: `numel` elements of `dtype`; `data` is filled when its bytes are read."""
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor to cut from its storage once every storage is read (the legacy format stores the
    bytes after the pickle)."""
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
    """torch._utils._rebuild_tensor(_v2) for a storage, offset, size and stride (the rest, i.e.
    requires_grad, backward hooks and metadata, does not change the values)."""
    if not isinstance(storage, _Storage):
        raise _Damaged(f"a tensor built from a {type(storage).__name__}, not a storage")
    ints = (storage_offset, *tuple(size), *tuple(stride))
    if not all(isinstance(v, int) and v >= 0 for v in ints) or len(tuple(size)) != len(tuple(stride)):
        raise _Damaged(f"a tensor with offset {storage_offset!r}, size {size!r}, stride {stride!r}")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """torch._utils._rebuild_parameter(_with_state): an nn.Parameter is its tensor."""
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,  # a type: BUILD cannot set its attributes
    ("torch._utils", "_rebuild_tensor"): _Callable(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Callable(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Callable(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Callable(_rebuild_parameter),
    **{(module, name): _StorageType(name, dtype)
       for module in ("torch", "torch.cuda") for name, dtype in STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Rebuilds only dicts, OrderedDicts, tensors and storages; any other global is refused before
    it is imported, so no code in the file ever runs."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage], read_storage: Any = None):
        super().__init__(file)
        self._storages = storages
        self._read_storage = read_storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _CodeBearing(f"global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
            raise _CodeBearing(f"persistent object {kind!r}")
        storage_type, key, _location, numel, *view = pid[1:]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise _Damaged(f"storage record {pid[:5]!r}"[:200])
        if view and view[0] is not None:
            raise _Damaged("storage views (files of PyTorch < 0.4) are not supported")
        key = str(key)
        if key not in self._storages:
            storage = _Storage(key, storage_type.dtype, numel)
            if self._read_storage is not None:
                storage.data = self._read_storage(storage)
            self._storages[key] = storage
        return self._storages[key]


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _unpickle(f: io.BytesIO, storages: dict[str, _Storage], read_storage: Any = None) -> Any:
    """The next pickle of `f` through the allow-list, after a scan of its opcodes: a length that
    claims more bytes than are left, or a memo index beyond the opcodes seen (pickle numbers its
    memo entries in order), is refused before the C unpickler would allocate for it (an index of
    6e8 in a 30-byte file made it allocate and clear 5 GB)."""
    start = f.tell()
    for count, (op, arg, _) in enumerate(pickletools.genops(f)):
        if op.name in _MEMO_PUTS and not 0 <= int(arg) <= count:
            raise _Damaged(f"a memo index {arg} after {count} opcodes")
    f.seek(start)
    return _StateDictUnpickler(f, storages, read_storage).load()


def _materialize(obj: Any, budget: _Budget, memo: dict[int, Any] | None = None) -> Any:
    """The unpickled object with every tensor cut out of its storage as a numpy array (a copy,
    so tensors sharing a storage stay independent). Each object is converted once (`memo`, by id):
    the pickle's own memo can reference one tensor or list many times, which must not multiply
    the memory or the time; the copies count against `budget`."""
    memo = {} if memo is None else memo
    done = memo.get(id(obj))
    if done is not None:
        return done[1]
    if isinstance(obj, _TensorRef):
        out: Any = _cut(obj, budget)
    elif isinstance(obj, dict):
        out = type(obj)()
        memo[id(obj)] = (obj, out)  # (obj kept alive so its id is not reused)
        for k, v in obj.items():
            out[k] = _materialize(v, budget, memo)
    elif isinstance(obj, list):
        out = []
        memo[id(obj)] = (obj, out)
        out.extend(_materialize(v, budget, memo) for v in obj)
    elif isinstance(obj, tuple) and not isinstance(obj, _StorageType | _Callable):
        out = tuple(_materialize(v, budget, memo) for v in obj)
    else:
        return obj
    memo[id(obj)] = (obj, out)
    return out


def _cut(ref: _TensorRef, budget: _Budget) -> np.ndarray:
    """The tensor `ref` as a new array, after checking that it lies inside its storage and has no
    more elements than it (overlapping strides, e.g. 0, would turn a few bytes into gigabytes)."""
    data = ref.storage.data
    if data is None:
        raise _Damaged(f"storage {ref.storage.key} has no data")
    numel = math.prod(ref.size)
    if numel == 0:
        return np.zeros(ref.size, data.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if last >= data.size:
        raise _Damaged(f"a tensor reaches element {last} of storage {ref.storage.key}, which "
                       f"holds {data.size}"[:300])
    if numel > data.size:
        raise _Damaged(f"a tensor of size {ref.size} (stride {ref.stride}) has more elements than "
                       f"its storage {ref.storage.key}, which holds {data.size}"[:300])
    budget.take(numel * data.itemsize, f"tensor of size {ref.size}")
    strides = tuple(s * data.itemsize for s in ref.stride)
    return np.lib.stride_tricks.as_strided(data[ref.offset:], ref.size, strides).copy()


def _from_bytes(raw: bytes | memoryview, dtype: np.dtype, numel: int, byteorder: str) -> np.ndarray:
    """`numel` elements of `dtype` stored in `byteorder` ("<" or ">"), in native order."""
    array = np.frombuffer(raw, dtype.newbyteorder(byteorder), count=numel)
    return array if array.dtype.isnative else array.astype(dtype)


def _member(archive: zipfile.ZipFile, name: str, budget: _Budget) -> bytes:
    """A zip member's bytes, refused before inflating when its recorded size exceeds the budget
    (zipfile stops at the recorded size, so a member cannot inflate beyond it)."""
    budget.take(archive.getinfo(name).file_size, f"zip member {name}"[:200])
    return archive.read(name)


def _load_zip(path: Path, budget: _Budget) -> Any:
    """torch.save's zip format (PyTorch >= 1.6): `<prefix>/data.pkl` + `<prefix>/data/<key>`."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise _Damaged(f"a zip without exactly one data.pkl ({len(pickles)} found)")
        prefix = pickles[0][: -len("data.pkl")]
        # Storages are in the saving machine's order, recorded since PyTorch 2.1 (little before).
        big = (prefix + "byteorder" in names
               and _member(archive, prefix + "byteorder", budget).strip() == b"big")

        def read_storage(storage: _Storage) -> np.ndarray:
            raw = _member(archive, f"{prefix}data/{storage.key}", budget)
            if len(raw) < storage.numel * storage.dtype.itemsize:
                raise _Damaged(f"storage {storage.key} holds {len(raw)} bytes, fewer than its "
                               f"{storage.numel} elements")
            return _from_bytes(raw, storage.dtype, storage.numel, ">" if big else "<")

        pickled = _member(archive, pickles[0], budget)
        obj = _unpickle(io.BytesIO(pickled), {}, read_storage)
    return _materialize(obj, budget)


def _load_legacy(path: Path, budget: _Budget) -> Any:
    """torch.save's legacy format (`_use_new_zipfile_serialization=False`, PyTorch < 1.6): pickles
    of the magic number, protocol and system info, the object, the storage keys; then each
    storage's bytes as an int64 element count and the elements, both little-endian whatever the
    saving machine (torch's writeFileRaw converts)."""
    storages: dict[str, _Storage] = {}
    # Read whole (counted against the budget): the unpickler then reads from memory, where a
    # length field that claims gigabytes gets the bytes that are there, while a file object's
    # read(n) allocates n first. The storages are views of these bytes, not copies.
    budget.take(path.stat().st_size, "the file")
    raw = path.read_bytes()
    f = io.BytesIO(raw)
    header = [_unpickle(f, storages) for _ in range(3)]
    magic, protocol, sys_info = header
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not isinstance(sys_info, dict):
        raise _Damaged("not the legacy torch.save header (magic number, protocol 1001)")
    obj = _unpickle(f, storages)
    keys = _unpickle(f, storages)
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise _Damaged("the storage key list does not match the tensors")
    for key in map(str, keys):
        storage = storages[key]
        count = int.from_bytes(f.read(8), "little")
        if count != storage.numel:
            raise _Damaged(f"storage {key}: {count} elements recorded for {storage.numel}")
        start, nbytes = f.tell(), count * storage.dtype.itemsize
        if start + nbytes > len(raw):
            raise _Damaged(f"storage {key}: {len(raw) - start} bytes for {storage.numel} elements")
        storage.data = _from_bytes(memoryview(raw)[start:start + nbytes], storage.dtype, count, "<")
        f.seek(start + nbytes)
    return _materialize(obj, budget)


def _load_torch(path: Path, max_bytes: int) -> Any:
    """A .pth/.pt file (zip or legacy format) unpickled through the allow-list, tensors as numpy,
    materializing at most `max_bytes`."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        loader = _load_zip
    elif head[:1] == b"\x80":
        loader = _load_legacy
    else:
        raise ConversionError(f"{path}: not a PyTorch checkpoint (neither the zip nor the legacy pickle "
                              "format); expected a .pth/.pt file or a .safetensors file")
    try:
        return loader(path, _Budget(max_bytes))
    except _TooLarge as e:
        raise ConversionError(f"{path}: too large to read ({e}); if the file is trusted, raise the "
                              "limit (convert_torch_weights.py --max_pth_mb)") from None
    except _CodeBearing as e:
        raise ConversionError(f"{path}: holds code-bearing objects ({e}), not only tensors and "
                              "dicts; refusing to unpickle it (save a plain state_dict)") from None
    except Exception as e:  # noqa: BLE001 - UnpicklingError, EOFError (truncated), BadZipFile, KeyError, ...
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint, truncated or damaged "
                              f"({first_line(e, typed=True, limit=200)})") from None


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError: bad headers, truncated data, unknown dtypes
        raise ConversionError(f"{path}: not a readable safetensors file "
                              f"({first_line(e, typed=True, limit=200)})") from None


def _unwrap(obj: Any, path: Path, param_key: str | None) -> tuple[Mapping[str, Any], list[str]]:
    """The innermost state_dict of a raw dict or a {'state_dict' | 'model' | 'params_ema' | 'params':
    ...} wrapper, and the keys walked to it. `param_key` names the top-level entry to take instead."""
    walked: list[str] = []
    if param_key is not None:
        if not isinstance(obj, Mapping) or not isinstance(obj.get(param_key), Mapping):
            have = sorted(str(k) for k, v in obj.items() if isinstance(v, Mapping)) if isinstance(
                obj, Mapping) else []
            raise ConversionError(f"{path}: has no {param_key!r} entry (entries holding tensors: "
                                  f"{have or 'none'})")
        obj, walked = obj[param_key], [param_key]
    for _ in range(3):
        if not isinstance(obj, Mapping):
            raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            return obj, walked
        obj, walked = obj[key], [*walked, key]
    return obj, walked


def _to_numpy(value: Any) -> np.ndarray | None:
    """A tensor (already a numpy array) as is; None for other values."""
    return value if isinstance(value, np.ndarray) else None


def read_state_dict(path: str | os.PathLike, param_key: str | None = None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
    """`{torch key: array}` of a .pth/.pt (legacy or zip) or .safetensors file, `module.` stripped.

    Raises ConversionError (one line naming the file) for a missing, unreadable, truncated or
    non-checkpoint file, or one that holds no tensors. See `read_weights` for `param_key`.
    """
    return read_weights(path, param_key, max_bytes)[0]


def read_weights(path: str | os.PathLike, param_key: str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """(state_dict, the entry it was taken from, the other top-level entries that hold tensors).

    The entry is '' for a bare state_dict, else the wrapper keys walked, e.g. 'params_ema' for a
    BasicSR file holding both 'params' and 'params_ema' (the EMA is taken unless `param_key` names
    the top-level entry to use, e.g. 'params'). A .pth read materializes at most `max_bytes`
    (`DEFAULT_MAX_BYTES`).
    """
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file")
    if not path.is_file():
        raise ConversionError(f"{path}: is not a file")
    if path.suffix == ".safetensors":
        obj: Any = _load_safetensors(path)
    else:
        obj = _load_torch(path, max_bytes)
    state, walked = _unwrap(obj, path, param_key)
    others = []  # e.g. 'params' beside the 'params_ema' taken: the caller says which was used
    if walked and isinstance(obj, Mapping):
        others = sorted(str(k) for k, v in obj.items() if isinstance(v, Mapping) and k != walked[0])
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
    return strip_prefixes(arrays), "/".join(walked), others
