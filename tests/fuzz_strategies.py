"""Structure-aware fuzz cases for the readers of untrusted files, as hypothesis strategies: files built
from their structure (pickles of tensors, memo references, BUILD and foreign globals inside
torch.save's zip and legacy layouts; safetensors headers; PNG chunks with valid CRCs and BMP
headers), some then byte-mutated, so that the cases get past the first checks and reach the paths
that allocate. Hypothesis seeds a Random per case and a generator here builds the file from it
(drawing each field through hypothesis cost ~12 ms a case, several times the read). Shared by the
short seeded pass in tests/test_fuzz_readers.py and the long run in benchmarks/fuzz_readers.py."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import forge_pth as forge
import numpy as np
from hypothesis import strategies as st
from PIL import Image

from mspan_jax.convert.torch_io import ConversionError, read_state_dict
from mspan_jax.data.images import ImageReadError, read_image

STORAGE_KINDS = ["FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage",
                 "ByteStorage", "BoolStorage", "NoSuchStorage"]
KEYS = ["0", "1", "2"]
HUGE = [2**16, 2**31 - 1, 2**32, 2**40, 2**62, 2**63 - 1]
FOREIGN = [forge.Global("os", "system"), forge.Global("builtins", "eval"),
           forge.Global("numpy", "frombuffer"), forge.Global("torch", "Tensor")]


def _dim(r: random.Random) -> int:
    """Sizes, strides and counts: mostly small, sometimes huge (the allocation paths)."""
    return r.choice(HUGE) if r.random() < 0.1 else r.randint(0, 6)


def _global(r: random.Random) -> forge.Global:
    kind = r.randrange(4)
    if kind == 0:
        return forge.Global(r.choice(["torch", "torch.cuda"]), r.choice(STORAGE_KINDS))
    if kind == 1:
        return forge.Global("torch._utils", r.choice(["_rebuild_tensor", "_rebuild_tensor_v2",
                                                      "_rebuild_parameter"]))
    return forge.Global("collections", "OrderedDict") if kind == 2 else r.choice(FOREIGN)


def _tensor(r: random.Random) -> Any:
    numel = r.choice(HUGE) if r.random() < 0.1 else r.randint(0, 48)
    store: Any = forge.PersId(("storage", forge.Global("torch", r.choice(STORAGE_KINDS)),
                               r.choice(KEYS), "cpu", numel))
    if r.random() < 0.15:  # malformed storage records
        store = forge.PersId(r.choice([("storage",), "x", ("module", 1),
                                       ("storage", _global(r), r.choice(KEYS), None, numel)]))
    ndim = r.randint(0, 3)
    size = tuple(_dim(r) for _ in range(ndim))
    stride = tuple(_dim(r) for _ in range(ndim + (r.random() < 0.1)))
    return forge.tensor(store, _dim(r) if r.random() < 0.3 else 0, size, stride)


def _value(r: random.Random, depth: int) -> Any:
    """A pickled value: tensors, plain values, memo references, BUILD, REDUCE, foreign globals."""
    kind = r.randrange(12) if depth < 4 else r.randrange(5)
    if kind <= 1:
        return _tensor(r)
    if kind == 2:
        return r.choice([None, True, -1, 7, 2**40, "k", 1.5])
    if kind == 3:
        return forge.Get(r.randint(0, 4))
    if kind == 4:
        return _global(r) if r.random() < 0.3 else _tensor(r)
    children = [_value(r, depth + 1) for _ in range(r.randint(0, 4))]
    if kind == 5:
        return children
    if kind == 6:
        return {f"k{i}": v for i, v in enumerate(children)}
    if kind == 7:
        return tuple(children)
    if kind == 8:
        return forge.Put(r.randint(0, 3), children if r.random() < 0.5 else _value(r, depth + 1))
    if kind == 9:
        state = {r.choice(["dtype", "name", "x", "__defaults__"]): v for v in children}
        return forge.Build(_global(r), (None, state) if r.random() < 0.5 else state)
    if kind == 10:
        return forge.Reduce(_global(r), tuple(children))
    return [forge.Put(0, _tensor(r)), *[forge.Get(0)] * r.randint(1, 50)]


def _pickled(r: random.Random) -> bytes:
    top = _value(r, 0)
    return forge.dumps(top if isinstance(top, dict) or r.random() < 0.1 else {"w": top})


def _mutated(r: random.Random, data: bytes) -> bytes:
    """`data` as is (half the time), with a few bytes set, or truncated."""
    kind = r.random()
    if kind < 0.5 or not data:
        return data
    if kind < 0.7:
        return data[:r.randrange(len(data))]
    buf = bytearray(data)
    for _ in range(r.randint(1, 4)):
        buf[r.randrange(len(buf))] = r.randrange(256)
    return bytes(buf)


def pth_zip(r: random.Random) -> bytes:
    storages = {key: r.randbytes(r.choice([0, 4, 24, 96, 200]))
                for key in r.sample(KEYS, r.randint(0, 3))}
    data = forge.zip_file(_pickled(r), storages, prefix=r.choice(["archive/", "", "a/b/"]),
                          compress=r.random() < 0.5, byteorder=r.choice([b"little", b"big", b"?", None]))
    return _mutated(r, data)


def pth_legacy(r: random.Random) -> bytes:
    storages = {key: (_dim(r) if r.random() < 0.5 else r.randint(0, 48), r.randbytes(r.randint(0, 200)))
                for key in r.sample(KEYS, r.randint(0, 3))}
    return _mutated(r, forge.legacy_file(_pickled(r), storages))


def safetensors_file(r: random.Random) -> bytes:
    header: dict[str, Any] = {}
    offset = 0
    for name in r.sample(["a", "b", "c", "w.weight"], r.randint(0, 3)):
        shape = [_dim(r) for _ in range(r.randint(0, 3))]
        n = r.randint(0, 64) if r.random() < 0.8 else _dim(r)
        start = r.choice([offset, offset, 0, 2**40])
        header[name] = {"dtype": r.choice(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3",
                                           "X"]),
                        "shape": shape, "data_offsets": [start, start + n]}
        offset = start + n
    if r.random() < 0.3:
        header["__metadata__"] = {"format": r.choice(["pt", "np", ""])}
    raw = json.dumps(header).encode()
    length = r.choice([len(raw), len(raw), len(raw), 0, 2**40, len(raw) + 7])
    return _mutated(r, struct.pack("<Q", length) + raw + r.randbytes(r.randint(0, 256)))


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
        ">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_file(r: random.Random) -> bytes:
    """A PNG from chunks with valid CRCs: IHDR (any size, bit depth, colour type), IDAT (zlib of
    random bytes, or of up to 1 MB of zeros), optional PLTE, IEND."""
    width = r.randint(1, 64) if r.random() < 0.8 else _dim(r)
    height = r.randint(1, 64) if r.random() < 0.8 else _dim(r)
    colour = r.choice([0, 2, 3, 4, 6, 5])
    ihdr = struct.pack(">IIBBBBB", width % 2**32, height % 2**32, r.choice([1, 2, 4, 8, 16, 3]),
                       colour, 0, 0, r.choice([0, 0, 1]))
    raw = bytes(r.randint(0, 1 << 20)) if r.random() < 0.05 else r.randbytes(r.randint(0, 512))
    chunks = [_chunk(b"IHDR", ihdr)]
    if colour == 3 or r.random() < 0.2:
        chunks.append(_chunk(b"PLTE", r.randbytes(r.choice([0, 3, 48, 769]))))
    chunks += [_chunk(b"IDAT", zlib.compress(raw, 1)), _chunk(b"IEND", b"")]
    return _mutated(r, b"\x89PNG\r\n\x1a\n" + b"".join(chunks))


def bmp_file(r: random.Random) -> bytes:
    """A BMP with a random (often inconsistent) header over random pixel bytes."""
    def side() -> int:
        return r.randint(-8, 64) if r.random() < 0.8 else min(_dim(r), 2**31 - 1)

    pixels = r.randbytes(r.randint(0, 512))
    info = struct.pack("<IiiHHIIiiII", 40, side(), side(), 1, r.choice([1, 4, 8, 16, 24, 32, 0, 7]),
                       r.choice([0, 1, 2, 3]), len(pixels), 2835, 2835, r.choice([0, 2, 256, 2**31]), 0)
    head = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return _mutated(r, head + info + pixels)


def pil_file(r: random.Random, fmt: str) -> bytes:
    """A small real JPEG or TIFF (random size, mode and pixels), byte-mutated."""
    mode = r.choice(["RGB", "L", "I;16"] if fmt == "TIFF" else ["RGB", "L"])
    h, w = r.randint(1, 24), r.randint(1, 24)
    dtype = np.uint16 if mode == "I;16" else np.uint8
    pixels = np.frombuffer(r.randbytes(h * w * 3 * np.dtype(dtype).itemsize), dtype)
    pixels = pixels[:h * w * 3].reshape(h, w, 3) if mode == "RGB" else pixels[:h * w].reshape(h, w)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return _mutated(r, out.getvalue())


def image_file(r: random.Random) -> tuple[str, bytes]:
    kind = r.randrange(4)
    if kind == 0:
        return ".png", png_file(r)
    if kind == 1:
        return ".bmp", bmp_file(r)
    return (".jpg", pil_file(r, "JPEG")) if kind == 2 else (".tif", pil_file(r, "TIFF"))


# parser: (suffix, generator of a case from a Random, reader, its one-line error)
Parser = tuple[str, Callable[[random.Random], Any], Callable[[Path], Any], type[Exception]]
PARSERS: dict[str, Parser] = {
    "pth_zip": (".pth", pth_zip, read_state_dict, ConversionError),
    "pth_legacy": (".pth", pth_legacy, read_state_dict, ConversionError),
    "safetensors": (".safetensors", safetensors_file, read_state_dict, ConversionError),
    "image": (".img", image_file, read_image, ImageReadError),
}


def strategy(parser: str) -> st.SearchStrategy:
    """The hypothesis strategy of `parser`'s cases: a Random that hypothesis seeds (reproducible
    with @seed), from which the generator builds the file."""
    return st.randoms(use_true_random=True).map(PARSERS[parser][1])


def check(folder: Path, parser: str, data: bytes | tuple[str, bytes]) -> str | None:
    """Writes one case and reads it: None when it reads or fails with the reader's one-line error,
    else the finding."""
    suffix, _, read, allowed = PARSERS[parser]
    if isinstance(data, tuple):
        suffix, data = data
    path = folder / f"case{suffix}"
    path.write_bytes(data)
    try:
        read(path)
    except allowed as e:
        if "\n" in str(e):
            return f"two-line error: {str(e)[:300]!r}"
        if "MemoryError" in str(e):  # refused only by running out of (limited) memory
            return f"ran out of memory: {str(e)[:300]}"
    except Exception as e:  # noqa: BLE001 - the finding itself
        return f"{type(e).__name__}: {e}"[:300]
    return None
