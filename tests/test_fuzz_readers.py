"""A seeded mutation fuzz of the three readers of untrusted files: the .pth reader (the official
IMDN x4 checkpoint, zip format, and a legacy-format save), the .safetensors reader and the image
reader (PNG, BMP, JPEG, 16-bit TIFF). Each mutated file must either read or fail with the reader's
one-line error (ConversionError / ImageReadError); any other exception, or a read slower than a few
seconds, is a finding. The mutations (bit flips, bytes set to boundary values, truncation, a
chunk duplicated or zeroed) come from numpy's seeded RNG, so a failure reproduces from its seed.

Then a short seeded pass of the structure-aware fuzz (tests/fuzz_strategies.py: generated pickles,
zip and legacy layouts, safetensors headers, PNG chunks, BMP headers), whose long run is
benchmarks/fuzz_readers.py (figures in docs/reliability.md)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared, require_torch
from PIL import Image

from mspan_jax.convert.torch_io import ConversionError, read_state_dict
from mspan_jax.data.images import ImageReadError, read_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the readers' conversion notes
CASES = 60  # mutations per seed file
SLOW_S = 10.0
BOUNDARY = [0x00, 0x01, 0x7F, 0x80, 0xFF]


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = int(rng.integers(5))
    if kind == 0:  # flip a few bits
        for i in rng.integers(0, len(buf), int(rng.integers(1, 9))):
            buf[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # boundary values, favouring the header where lengths and offsets live
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(0, min(len(buf), 4096) if rng.random() < 0.7 else len(buf)))
            buf[i] = BOUNDARY[int(rng.integers(len(BOUNDARY)))]
    elif kind == 2:  # truncated
        del buf[int(rng.integers(0, len(buf))):]
    elif kind == 3:  # a chunk duplicated in place
        i, n = int(rng.integers(0, len(buf))), int(rng.integers(1, 256))
        buf[i:i] = buf[i:i + n]
    else:  # a chunk zeroed
        i, n = int(rng.integers(0, len(buf))), int(rng.integers(1, 512))
        buf[i:i + n] = bytes(len(buf[i:i + n]))
    return bytes(buf)


def _fuzz(seed_file: Path, read, allowed: type[Exception], tmp_path: Path, seed: int) -> None:
    original = seed_file.read_bytes()
    read(seed_file)  # the seed itself reads
    rng = np.random.default_rng(seed)
    findings = []
    for case in range(CASES):
        path = tmp_path / f"case{case}{seed_file.suffix}"
        path.write_bytes(_mutate(original, rng))
        start = time.perf_counter()
        try:
            read(path)
        except allowed as e:
            assert "\n" not in str(e), (case, str(e))
        except Exception as e:  # noqa: BLE001 - the finding itself
            findings.append(f"case {case}: {type(e).__name__}: {e}"[:300])
        if time.perf_counter() - start > SLOW_S:
            findings.append(f"case {case}: took {time.perf_counter() - start:.1f}s")
        path.unlink()
    assert not findings, f"seed {seed} of {seed_file.name}:\n" + "\n".join(findings)


def test_fuzz_pth_reader_official_checkpoint(tmp_path):
    _fuzz(require_shared("weights/IMDN_x4.pth"), read_state_dict, ConversionError, tmp_path, seed=1)


def test_fuzz_pth_reader_legacy_format(tmp_path):
    torch = require_torch()
    path = tmp_path / "legacy.pth"
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.zeros(4)}, path,
               _use_new_zipfile_serialization=False)
    _fuzz(path, read_state_dict, ConversionError, tmp_path, seed=2)


def test_fuzz_safetensors_reader(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    rng = np.random.default_rng(0)
    save_file({"conv.weight": rng.standard_normal((4, 3, 3, 3), np.float32),
               "conv.bias": np.zeros(4, np.float32)}, str(path))
    _fuzz(path, read_state_dict, ConversionError, tmp_path, seed=3)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".jpg", ".tif"])
def test_fuzz_image_reader(tmp_path, suffix):
    rng = np.random.default_rng(4)
    path = tmp_path / f"seed{suffix}"
    if suffix == ".tif":  # 16-bit RGB, the reader's own decoding path
        Image.fromarray(rng.integers(0, 65536, (24, 32), dtype=np.uint16)).save(path)
    else:
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    _fuzz(path, read_image, ImageReadError, tmp_path, seed=5)


STRUCTURED_CASES = 150  # per parser; the long run: benchmarks/fuzz_readers.py


@pytest.mark.slow
@pytest.mark.parametrize("parser", ["pth_zip", "pth_legacy", "safetensors", "image"])
def test_structure_aware_fuzz_short_seeded_pass(tmp_path, parser):
    import fuzz_strategies
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    findings = []

    @hypothesis_seed(29)
    @settings(max_examples=STRUCTURED_CASES, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(fuzz_strategies.strategy(parser))
    def case(data):
        start = time.perf_counter()
        finding = fuzz_strategies.check(tmp_path, parser, data)
        if finding is None and time.perf_counter() - start > SLOW_S:
            finding = f"took {time.perf_counter() - start:.1f}s"
        if finding is not None:
            findings.append(finding)

    case()
    assert not findings, "\n".join(findings[:10])
