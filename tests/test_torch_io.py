"""The PyTorch-free .pth reader (mspan_jax.convert.torch_io) against torch.load(weights_only=True):
the official legacy IMDN file, files written here in both formats and several dtypes, views with
offsets and strides, shared storages, and files carrying code."""

from __future__ import annotations

import collections
import os
import pickle
import time

import forge_pth as forge
import ml_dtypes
import numpy as np
import pytest
from conftest import require_torch

from mspan_jax.convert import ConversionError, read_state_dict
from mspan_jax.convert.torch_io import STORAGE_DTYPES

FORMATS = pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])


def reference(torch, path) -> dict[str, np.ndarray]:
    """torch.load(weights_only=True) of a flat state_dict, `module.` stripped, as numpy (bfloat16 as
    ml_dtypes.bfloat16, bit for bit)."""
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for key, tensor in loaded.items():
        tensor = tensor.detach()
        if tensor.dtype == torch.bfloat16:
            array = tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            array = tensor.numpy()
        out[key.removeprefix("module.")] = array
    return out


def assert_same(read: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(read) == sorted(expected)
    for key, want in expected.items():
        assert read[key].dtype == want.dtype and read[key].shape == want.shape, key
        assert read[key].tobytes() == want.tobytes(), key  # bit for bit, in C order


def test_official_imdn_x4_equals_torch_load(imdn_x4_weights):
    """The legacy, CUDA-saved official file with DataParallel's `module.` prefix."""
    torch = require_torch()
    read = read_state_dict(imdn_x4_weights)
    assert len(read) == 92 and all(v.dtype == np.float32 for v in read.values())
    assert_same(read, reference(torch, imdn_x4_weights))


@FORMATS
def test_dtypes_equal_torch_load(tmp_path, legacy):
    torch = require_torch()
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, generator=gen)
    state = {"fp32": base, "fp16": base.half(), "bf16": base.bfloat16(), "fp64": base.double(),
             "int64": torch.arange(7), "uint8": torch.arange(5, dtype=torch.uint8),
             "bool": base > 0, "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)}
    path = tmp_path / "dtypes.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    read = read_state_dict(path)
    assert read["bf16"].dtype == ml_dtypes.bfloat16 and read["fp16"].dtype == np.float16
    assert_same(read, reference(torch, path))
    assert {str(d) for d in STORAGE_DTYPES.values()} >= {str(v.dtype) for v in read.values()}


@FORMATS
def test_views_and_shared_storages_equal_torch_load(tmp_path, legacy):
    torch = require_torch()
    base = torch.arange(48, dtype=torch.float32).reshape(4, 12)
    state = {
        "base": base,
        "transposed": base.t(),                     # strides (1, 12)
        "every_other": base[:, ::2],                # stride 2
        "offset_block": base[1:3, 4:9],             # storage offset 16, non-contiguous
        "expanded": base[0, :3].expand(5, 3),       # stride 0
        "permuted": base.reshape(2, 2, 3, 4).permute(3, 0, 2, 1),
        "own": torch.ones(2, 2),
        "param": torch.nn.Parameter(base[2].clone()),  # rebuilt through _rebuild_parameter
    }
    path = tmp_path / "views.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    read = read_state_dict(path)
    expected = {k: v.detach().numpy() for k, v in state.items()}
    assert_same(read, expected)
    assert_same(read, reference(torch, path))
    read["base"][:] = -1  # arrays are copies: a write to one does not show in another
    assert read["transposed"][0, 1] == 12


def _legacy_stream(*objects) -> bytes:
    """A legacy-format torch.save stream (magic, protocol, sys info, object), written without torch."""
    header = (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    return b"".join(pickle.dumps(o, protocol=2) for o in (*header, *objects))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_code_bearing_objects_are_refused_naming_the_global(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_stream({"weight": _RunsCode()}, []))
    with pytest.raises(ConversionError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert "holds code-bearing objects" in message and f"global {os.system.__module__}.system" in message
    assert "\n" not in message and not (tmp_path / "pwned").exists()


def test_code_bearing_objects_in_a_zip_file_are_refused(tmp_path, monkeypatch):
    torch = require_torch()
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil_zip.pth"
    torch.save({"weight": torch.zeros(2), "hook": _RunsCode()}, path)
    refused = f"code-bearing objects .global {os.system.__module__}.system"
    with pytest.raises(ConversionError, match=refused):
        read_state_dict(path)
    assert not (tmp_path / "pwned").exists()


@FORMATS
def test_a_tensor_beyond_its_storage_is_refused_not_read(tmp_path, legacy):
    """Sizes and strides come from the file: one that reaches past its storage must not read memory."""
    torch = require_torch()
    storage = torch.zeros(6).untyped_storage()

    class Overreaching:
        def __reduce__(self):
            typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
            return (torch._utils._rebuild_tensor_v2,
                    (typed, 2, (4, 3), (3, 1), False, collections.OrderedDict()))

    path = tmp_path / "w.pth"
    torch.save({"w": Overreaching()}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ConversionError, match="damaged .*reaches element 13 of storage .*which holds 6"):
        read_state_dict(path)


# Hard limits: crafted files (tests/forge_pth.py, no torch needed) that would turn a few bytes
# into gigabytes, or rewrite the reader for later files.
FLOATS = np.arange(6, dtype="<f4").tobytes()


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@FORMATS
def test_overlapping_strides_are_refused_not_expanded(tmp_path, legacy):
    """Stride 0 over a 1-element storage asked for a 4 MB array from a few hundred bytes."""
    pickled = forge.dumps({"w": forge.tensor(forge.storage("0", 1), 0, (1000, 1000), (0, 0))})
    one = np.ones(1, "<f4").tobytes()
    data = (forge.legacy_file(pickled, {"0": (1, one)}) if legacy
            else forge.zip_file(pickled, {"0": one}))
    with pytest.raises(ConversionError, match="damaged .*size \\(1000, 1000\\).* more elements than "
                       "its storage 0, which holds 1") as info:
        read_state_dict(_write(tmp_path, "w.pth", data))
    assert "\n" not in str(info.value)


def test_memo_references_share_one_array(tmp_path):
    """One tensor referenced 200 times through the pickle memo is materialized once."""
    numel = 1 << 18  # 1 MB of float32
    first = forge.Put(0, forge.tensor(forge.storage("0", numel), 0, (numel,), (1,)))
    state = {"k0": first, **{f"k{i}": forge.Get(0) for i in range(1, 200)}}
    path = _write(tmp_path, "w.pth", forge.zip_file(forge.dumps(state), {"0": bytes(4 * numel)}))
    read = read_state_dict(path, max_bytes=3 * 4 * numel)  # storage + one copy; 200 copies would not fit
    assert len(read) == 200 and all(v is read["k0"] for v in read.values())


def test_exponentially_nested_memo_references_are_walked_once(tmp_path):
    """Lists built as L[i] = [L[i-1], L[i-1]] through the memo: 2**21 paths from a few hundred bytes
    (each walked and copied before: seconds and hundreds of MB; depth 40 never ended)."""
    value = forge.Put(0, [forge.tensor(forge.storage("0", 1), 0, (1,), (1,))])
    for i in range(1, 22):
        value = forge.Put(i, [value, forge.Get(i - 1)])
    path = _write(tmp_path, "w.pth", forge.zip_file(forge.dumps({"w": value}), {"0": bytes(4)}))
    start = time.perf_counter()
    with pytest.raises(ConversionError, match="holds no tensors"):
        read_state_dict(path)
    assert time.perf_counter() - start < 2


@FORMATS
def test_bytes_materialized_are_capped(tmp_path, legacy):
    """An 8 MB storage (a few KB compressed in the zip) is refused under a 1 MB limit, before it is
    inflated or read; the default limit reads it."""
    numel = 1 << 21
    pickled = forge.dumps({"w": forge.tensor(forge.storage("0", numel), 0, (numel,), (1,))})
    data = (forge.legacy_file(pickled, {"0": (numel, bytes(4 * numel))}) if legacy
            else forge.zip_file(pickled, {"0": bytes(4 * numel)}, compress=True))
    path = _write(tmp_path, "w.pth", data)
    with pytest.raises(ConversionError, match="too large to read .*beyond the limit of 1,048,576 bytes"
                       ".*--max_pth_mb") as info:
        read_state_dict(path, max_bytes=1 << 20)
    assert "\n" not in str(info.value)
    assert read_state_dict(path)["w"].shape == (numel,)


def test_a_legacy_element_count_is_checked_before_reading(tmp_path):
    pickled = forge.dumps({"w": forge.tensor(forge.storage("0", 6), 0, (6,), (1,))})
    data = forge.legacy_file(pickled, {"0": (1 << 60, FLOATS)})
    with pytest.raises(ConversionError, match="storage 0: 1152921504606846976 elements recorded for 6"):
        read_state_dict(_write(tmp_path, "w.pth", data))


@pytest.mark.parametrize("target", [forge.Global("torch", "FloatStorage"),
                                    forge.Global("torch._utils", "_rebuild_tensor_v2"),
                                    forge.Global("collections", "OrderedDict")])
@pytest.mark.parametrize("state", [{"dtype": "<i1", "__defaults__": (1,)},
                                   (None, {"dtype": "<i1", "name": "x"})])
def test_build_cannot_rewrite_the_allow_list_for_later_files(tmp_path, target, state):
    """BUILD on an allow-listed global (its __dict__, or attributes) fails in one line, and the next
    file still reads as it should."""
    crafted = forge.dumps({"w": forge.Build(target, state)})
    with pytest.raises(ConversionError) as info:
        read_state_dict(_write(tmp_path, "crafted.pth", forge.zip_file(crafted, {})))
    assert "\n" not in str(info.value)
    good = forge.dumps({"w": forge.tensor(forge.storage("0", 6), 0, (2, 3), (3, 1))})
    read = read_state_dict(_write(tmp_path, "good.pth", forge.zip_file(good, {"0": FLOATS})))
    np.testing.assert_array_equal(read["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize("pickled", [
    b"\x80\x02}q\x00X\x01\x00\x00\x00wr\x80\x96\x98\x00N.",  # LONG_BINPUT 10,000,000: an 80 MB memo
    b"\x80\x02}X\xff\xff\xff\xe0w.",  # BINUNICODE of 3.7 GB, 1 byte there
    b"\x80\x02}\x8e\x00\x00\x00\x00\x01\x00\x00\x00w.",  # BINBYTES8 of 4 GB
], ids=["memo-index", "unicode-length", "bytes8-length"])
def test_pickle_lengths_and_memo_indices_cannot_allocate(tmp_path, pickled):
    """Found by benchmarks/fuzz_readers.py: a memo index of 6e8 in a 30-byte legacy file made the C
    unpickler allocate and clear 5 GB, and a length field claiming gigabytes was allocated before
    it was read. Both are refused from a scan of the opcodes."""
    import tracemalloc

    path = _write(tmp_path, "w.pth", forge.legacy_file(pickled, {}))
    tracemalloc.start()
    try:
        with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint") as info:
            read_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value) and peak < 16 << 20, peak
