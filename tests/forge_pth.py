"""Crafted PyTorch weight files, written without torch: a small pickle assembler (the opcodes that
torch.save emits, plus memo references and BUILD) and the zip / legacy containers around it. The
tests of the .pth reader's limits and the structure-aware fuzz (tests/test_fuzz_readers.py,
benchmarks/fuzz_readers.py) build their files with it."""

from __future__ import annotations

import dataclasses
import io
import pickle
import struct
import zipfile
from typing import Any


@dataclasses.dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclasses.dataclass(frozen=True)
class Reduce:
    """`callable(*args)`."""
    callable: Any
    args: tuple


@dataclasses.dataclass(frozen=True)
class PersId:
    """A persistent id (torch's storage records)."""
    pid: Any


@dataclasses.dataclass(frozen=True)
class Put:
    """`value`, also stored in memo slot `index`."""
    index: int
    value: Any


@dataclasses.dataclass(frozen=True)
class Get:
    """The value in memo slot `index` (the same object again)."""
    index: int


@dataclasses.dataclass(frozen=True)
class Build:
    """`obj` with the BUILD opcode applied with `state` (setstate / __dict__ update)."""
    obj: Any
    state: Any


def _encode(value: Any, out: io.BytesIO) -> None:
    w = out.write
    if value is None:
        w(b"N")
    elif value is True or value is False:
        w(b"\x88" if value else b"\x89")
    elif isinstance(value, int):
        if -(2 ** 31) <= value < 2 ** 31:
            w(b"J" + struct.pack("<i", value))
        else:
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            w(b"\x8a" + bytes([len(raw)]) + raw)
    elif isinstance(value, float):
        w(b"G" + struct.pack(">d", value))
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        w(b"X" + struct.pack("<I", len(raw)) + raw)
    elif isinstance(value, bytes):
        w(b"C" + bytes([len(value)]) + value if len(value) < 256 else
          b"B" + struct.pack("<I", len(value)) + value)
    elif isinstance(value, tuple):
        w(b"(")
        for v in value:
            _encode(v, out)
        w(b"t")
    elif isinstance(value, list):
        w(b"](")
        for v in value:
            _encode(v, out)
        w(b"e")
    elif isinstance(value, dict):
        w(b"}(")
        for k, v in value.items():
            _encode(k, out)
            _encode(v, out)
        w(b"u")
    elif isinstance(value, Global):
        w(b"c" + value.module.encode() + b"\n" + value.name.encode() + b"\n")
    elif isinstance(value, Reduce):
        _encode(value.callable, out)
        _encode(value.args, out)
        w(b"R")
    elif isinstance(value, PersId):
        _encode(value.pid, out)
        w(b"Q")
    elif isinstance(value, Put):
        _encode(value.value, out)
        w(b"r" + struct.pack("<I", value.index))
    elif isinstance(value, Get):
        w(b"j" + struct.pack("<I", value.index))
    elif isinstance(value, Build):
        _encode(value.obj, out)
        _encode(value.state, out)
        w(b"b")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """A protocol-2 pickle of `value` (plain values and the nodes above)."""
    out = io.BytesIO()
    out.write(b"\x80\x02")
    _encode(value, out)
    out.write(b".")
    return out.getvalue()


def storage(key: str, numel: int, kind: str = "FloatStorage") -> PersId:
    return PersId(("storage", Global("torch", kind), key, "cpu", numel))


def tensor(store: Any, offset: int, size: tuple, stride: tuple) -> Reduce:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""
    return Reduce(Global("torch._utils", "_rebuild_tensor_v2"),
                  (store, offset, tuple(size), tuple(stride), False,
                   Reduce(Global("collections", "OrderedDict"), ())))


def zip_file(pickled: bytes, storages: dict[str, bytes], *, prefix: str = "archive/",
             compress: bool = False, byteorder: bytes | None = b"little") -> bytes:
    """torch.save's zip layout around a pickle and raw storage bytes."""
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", method) as archive:
        archive.writestr(prefix + "data.pkl", pickled)
        if byteorder is not None:
            archive.writestr(prefix + "byteorder", byteorder)
        for key, raw in storages.items():
            archive.writestr(f"{prefix}data/{key}", raw)
    return out.getvalue()


def legacy_file(pickled: bytes, storages: dict[str, tuple[int, bytes]]) -> bytes:
    """torch.save's legacy layout: header pickles, the object's pickle, the key list, then each
    storage as (element count, bytes)."""
    header = (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    parts = [pickle.dumps(h, protocol=2) for h in header]
    parts += [pickled, pickle.dumps(list(storages), protocol=2)]
    parts += [struct.pack("<q", count) + raw for count, raw in storages.values()]
    return b"".join(parts)
