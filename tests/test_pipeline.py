"""Training pipeline: aligned crops through augmentation, determinism, resume, sharding, bad input."""

from __future__ import annotations

import warnings
import weakref
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, random_rgb, save_png

from mspan_jax.cli import load_config
from mspan_jax.config_base import sr_config
from mspan_jax.data import input_pipeline
from mspan_jax.data.degradations import degrade
from mspan_jax.data.input_pipeline import (
    BatchSampler,
    augment_pair,
    batch_to_float,
    create_train_iterator,
    device_batch_to_float,
    load_train_images,
)
from mspan_jax.data.sources import shard_bounds
from mspan_jax.data.train_spec import resolve_spec
from mspan_jax.data.workers import SlotArray


def _config(source: str = "folder", train_dir: Path | str = "", scale: int = 2, batch: int = 4,
            model: str = "mspan", workers: int = 0):
    config = sr_config(model, scale)
    config.data.source = source
    config.data.train_dir = str(train_dir)
    config.data.hr_patch_size = 8 * scale
    config.data.num_workers = workers
    config.train.batch_size = batch
    return config


def _batches(config, n: int, **kwargs) -> list[dict[str, np.ndarray]]:
    with create_train_iterator(config, verbose=False, process_index=kwargs.pop("process_index", 0),
                               process_count=kwargs.pop("process_count", 1), **kwargs) as it:
        return [next(it) for _ in range(n)]


@pytest.fixture
def div2k_pattern(tmp_path):
    """A DIV2K-style folder whose HR is its LR with every pixel blown up to an s x s block, so an
    aligned LR/HR patch pair satisfies hr[s*i + a, s*j + b] == lr[i, j] for every a, b."""
    s = 3
    for k in (1, 2, 801):  # 0801 is a validation image: must not be used
        lr = random_rgb(12, 15, k)
        save_png(tmp_path / "DIV2K_train_LR_bicubic" / f"X{s}" / f"{k:04d}x{s}.png", lr)
        save_png(tmp_path / "DIV2K_train_HR" / f"{k:04d}.png", np.repeat(np.repeat(lr, s, 0), s, 1))
    return tmp_path


def test_lr_hr_stay_aligned_through_crop_and_augmentation(div2k_pattern):
    config = _config("div2k_folder", div2k_pattern, scale=3, batch=8)
    for batch in _batches(config, 6):
        lr, hr = batch["lr"], batch["hr"]
        assert lr.shape == (8, 8, 8, 3) and hr.shape == (8, 24, 24, 3)
        assert lr.dtype == hr.dtype == np.uint8  # float32 only on the device (device_batch_to_float)
        blocks = hr.reshape(8, 8, 3, 8, 3, 3)
        np.testing.assert_array_equal(blocks, np.broadcast_to(lr[:, :, None, :, None], blocks.shape))
    spec = resolve_spec(config, 0, 1)
    assert [im.name for im in load_train_images(spec, verbose=False)] == ["0001", "0002"]


def test_augmentation_uses_all_flips_and_transposes():
    lr = np.arange(16).reshape(4, 4, 1)
    variants = {augment_pair(lr, lr, h, v, t)[0].tobytes()
                for h in (0, 1) for v in (0, 1) for t in (0, 1)}
    assert len(variants) == 8


def test_same_seed_same_batches_and_resume_without_replay(tmp_path, monkeypatch):
    for k in range(3):
        save_png(tmp_path / f"im{k}.png", random_rgb(24, 36, k))
    config = _config("folder", tmp_path)
    first = _batches(config, 5)
    again = _batches(config, 5)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["lr"], b["lr"])
        np.testing.assert_array_equal(a["hr"], b["hr"])
    config.seed = 1
    assert not np.array_equal(_batches(config, 1)[0]["hr"], first[0]["hr"])
    config.seed = 0
    built = []
    original = BatchSampler.patches
    monkeypatch.setattr(BatchSampler, "patches",
                        lambda self, step, slots="": built.append(step) or original(self, step, slots))
    resumed = _batches(config, 2, start_step=3)
    np.testing.assert_array_equal(resumed[0]["hr"], first[3]["hr"])
    np.testing.assert_array_equal(resumed[1]["lr"], first[4]["lr"])
    assert min(built) == 3  # steps 0-2 were never assembled


def test_process_shards_are_disjoint_and_cover(tmp_path):
    for n in (1, 7, 8, 800):
        for count in (1, 3, 8):
            bounds = [shard_bounds(n, i, count) for i in range(count)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    for k in range(7):
        save_png(tmp_path / f"im{k}.png", random_rgb(16, 16, k))
    config = _config("folder", tmp_path, batch=6)
    names = [{im.name for im in load_train_images(resolve_spec(config, i, 3), verbose=False)}
             for i in range(3)]
    assert sum(len(s) for s in names) == 7 and set.union(*names) == {f"im{k}" for k in range(7)}
    batch = _batches(config, 1, process_index=1, process_count=3)[0]
    assert batch["lr"].shape == (2, 8, 8, 3)  # B_local = 6 // 3


def test_bad_files_are_converted_or_skipped_with_warnings(tmp_path):
    save_png(tmp_path / "ok.png", random_rgb(24, 24, 0))
    save_png(tmp_path / "gray.png", random_rgb(24, 24, 1)[..., 0])
    save_png(tmp_path / "rgba.png", np.dstack([random_rgb(24, 24, 2), np.zeros((24, 24), np.uint8)]))
    save_png(tmp_path / "deep16.png", random_rgb(24, 24, 3)[..., 0].astype(np.uint16) * 257)
    save_png(tmp_path / "odd.png", random_rgb(25, 27, 4))
    save_png(tmp_path / "odd2.png", random_rgb(25, 25, 6))
    save_png(tmp_path / "small.png", random_rgb(12, 40, 5))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    config = _config("folder", tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = load_train_images(resolve_spec(config, 0, 1), verbose=False)
    messages = "\n".join(str(w.message) for w in caught)
    for name in ("gray.png", "rgba.png", "deep16.png", "odd.png", "small.png", "broken.png"):
        assert name in messages, f"no warning names {name}:\n{messages}"
    # The images modcrop cropped: one warning with their count, not one each.
    cropped = [str(w.message) for w in caught if "modcrop" in str(w.message)]
    assert cropped == [f"2 of 8 training images are not divisible by scale 2; HR cropped to a "
                       f"multiple of it (modcrop), e.g. {tmp_path / 'odd.png'}: 27x25"], cropped
    assert sorted(im.name for im in images) == ["deep16", "gray", "odd", "odd2", "ok", "rgba"]
    odd = next(im for im in images if im.name == "odd")
    assert odd.target.shape == (24, 26, 3) and odd.source.shape == (12, 13, 3)


def test_premade_lr_of_wrong_size_is_skipped(div2k_pattern):
    save_png(div2k_pattern / "DIV2K_train_LR_bicubic" / "X3" / "0002x3.png", random_rgb(11, 15, 0))
    with pytest.warns(UserWarning, match=r"0002.*LR is 15x11"):
        images = load_train_images(resolve_spec(_config("div2k_folder", div2k_pattern, 3), 0, 1),
                                   verbose=False)
    assert [im.name for im in images] == ["0001"]


def test_config_and_folder_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (_config("folder", tmp_path / "missing"), r"config.data.train_dir: .* is not a folder"),
        (_config("nope"), r"config.data.source: 'nope' is not a source"),
        (_config("folder", empty), r"holds no images"),
        (_config("skimage", batch=5), r"config.train.batch_size: 5 is not divisible by the 2 processes; "
                                      r"set it to a multiple of 2"),
        (_config("skimage", batch=0), r"config.train.batch_size: must be an integer >= 1, got 0"),
    ]
    cfg = _config("skimage")
    cfg.data.hr_patch_siz = 4
    cases.append((cfg, r"config.data.hr_patch_siz: unknown key"))
    for spec, name in (("configs/denoise_real.py", "polyu"), ("configs/derain.py:rain100h", "rain100h")):
        cases.append((load_config(str(REPO_ROOT / spec)), rf"config.data.train_dir: source 'paired' "
                      rf"needs the {name} training pairs: .*scripts/prepare_restoration_data.py"))
    cfg = _config("skimage", scale=3)
    cfg.data.hr_patch_size = 16
    cases.append((cfg, r"config.data.hr_patch_size: 16 is not a multiple of model.scale=3; set it to "
                       r"a multiple of 3, e.g. 18"))
    for config, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as e:
            create_train_iterator(config, process_index=0, process_count=2, verbose=False)
        assert "\n" not in str(e.value)
    tiny = tmp_path / "tiny"
    save_png(tiny / "a.png", random_rgb(8, 8, 0))
    with pytest.raises(ValueError, match="every training image was skipped"), \
            pytest.warns(UserWarning, match=r"a\.png: 8x8 is smaller than the 16x16 patch"):
        create_train_iterator(_config("folder", tiny), process_index=0, process_count=1, verbose=False)


def test_div2k_tfds_source_fails_fast_when_not_prepared(tmp_path):
    config = _config("div2k")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"div2k/bicubic_x2 is not prepared .*docs/data.md"):
        create_train_iterator(config, process_index=0, process_count=1, verbose=False)


def test_restoration_noise_and_paired_sources(tmp_path):
    for k in range(2):
        save_png(tmp_path / "clean" / f"c{k}.png", np.full((20, 20, 3), 120, np.uint8))
        save_png(tmp_path / "pairs" / "LQ" / f"rain-{k}.png", random_rgb(20, 20, k))
        save_png(tmp_path / "pairs" / "GT" / f"norain-{k}.png", random_rgb(20, 20, k))  # LQ == GT here
    config = _config("folder", tmp_path / "clean", scale=1, batch=8, model="mspan_ir")
    config.data.noise_sigma = 25.0
    (batch,) = _batches(config, 1)
    assert batch["lr"].shape == batch["hr"].shape == (8, 8, 8, 3)
    assert batch["lr"].dtype == np.float32 and batch["hr"].dtype == np.uint8  # noisy input: float
    batch = batch_to_float(batch)
    assert abs((batch["lr"] - batch["hr"]).std() * 255 - 25) < 2.5
    config.data.source, config.data.train_dir = "paired", str(tmp_path / "pairs")
    (batch,) = _batches(config, 1)
    np.testing.assert_array_equal(batch["lr"], batch["hr"])  # paired crops stay aligned
    with pytest.raises(ValueError, match="'paired' LQ/GT folders are for restoration"):
        resolve_spec(_config("paired", tmp_path / "pairs"), 0, 1)


def test_dn_adds_fresh_noise_per_patch(tmp_path):
    save_png(tmp_path / "flat.png", np.full((32, 32, 3), 128, np.uint8))
    config = _config("folder", tmp_path, batch=8)
    config.data.degradation = "DN"
    config.data.augment = False
    (batch,) = _batches(config, 1)
    residual = batch["lr"].astype(np.float64) - 128  # uint8: the noise rounded and clipped
    assert abs(residual.std() - 30) < 3
    assert not np.array_equal(batch["lr"][0], batch["lr"][1])


def test_skimage_source_gray_output():
    config = _config("skimage", scale=2, batch=2)
    config.model.in_channels = config.model.out_channels = 1
    (batch,) = _batches(config, 1)
    assert batch["lr"].shape == (2, 8, 8, 1) and batch["hr"].shape == (2, 16, 16, 1)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*not divisible by scale:UserWarning")
def test_div2k_tfds_source_reads_through_tfds(monkeypatch, tmp_path):
    """The `div2k` source on tfds' mocked div2k (random images of random sizes): decoded, degraded by BD
    from HR, and cropped; into the same cache and the same grain workers as the other sources. (The
    mock ignores sub-splits, so sharding is covered by the folder tests.)"""
    import tensorflow_datasets as tfds

    config = _config("div2k", scale=2, batch=4)
    config.data.hr_patch_size, config.data.degradation = 4, "BD"
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        images = load_train_images(resolve_spec(config, 0, 1), verbose=False)
        (batch,) = _batches(config, 1)
        config.data.num_workers, config.data.cache_dir = 2, str(tmp_path)
        (from_workers,) = _batches(config, 1)
    np.testing.assert_array_equal(from_workers["hr"], batch["hr"])
    assert len(list(tmp_path.glob("div2k-x2-bd-p1of1.*"))) == 2  # index + data
    assert len(images) == 5 and batch["lr"].shape == (4, 2, 2, 3) and batch["hr"].shape == (4, 4, 4, 3)
    for im in images:
        np.testing.assert_array_equal(im.source, degrade(im.target, 2, "BD"))


def _temp_caches() -> list[Path]:
    """This process's temporary decoded-image files (shared memory or temp folder)."""
    import os
    import tempfile

    return [p for folder in (Path("/dev/shm"), Path(tempfile.gettempdir())) if folder.is_dir()
            for p in folder.glob(f"mspan_jax-decoded-{os.getpid()}-*")]


def _replace(path: Path, content: bytes) -> None:
    """Damages a cache file as a new file moved over it: an iterator that is still prefetching maps
    the old one, and truncating a mapped file in place would end this process with SIGBUS."""
    tmp = path.with_suffix(".damaged")
    tmp.write_bytes(content)
    tmp.replace(path)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_resume_exactly(tmp_path):
    """grain workers (2 processes: decoding, then batches) == in-process, from any start step; the
    worker-decoded images' warnings reach this process; the shared temporary file is gone after."""
    for k in range(3):
        save_png(tmp_path / f"im{k}.png", random_rgb(24, 36, k))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="broken.png"):
        in_process = _batches(_config("folder", tmp_path, workers=0), 6)
    with pytest.warns(UserWarning, match="broken.png"):
        workers = _batches(_config("folder", tmp_path, workers=2), 4, start_step=2)
    for a, b in zip(in_process[2:], workers, strict=True):
        np.testing.assert_array_equal(a["lr"], b["lr"])
        np.testing.assert_array_equal(a["hr"], b["hr"])
        # cut into the worker's reused shared memory, copied out once (the slot is free at once:
        # JAX on CPU would alias a slot its worker refills), still uint8
        assert all(type(b[k]) is np.ndarray and b[k].dtype == np.uint8 for k in b)
    with pytest.warns(UserWarning, match="broken.png"):
        in_slots = _batches(_config("folder", tmp_path, workers=2), 4, start_step=2, copy=False)
    for a, b in zip(in_process[2:], in_slots, strict=True):  # the same batches, read in place
        assert all(isinstance(b[k], SlotArray) and b[k].dtype == np.uint8 for k in b)
        np.testing.assert_array_equal(a["hr"], b["hr"])
    assert _temp_caches() == []


class _Owned(np.ndarray):
    """Stands for a worker's slot: records when the array that owns it is gone."""


def test_batches_in_flight_keep_each_batch_until_its_step_has_finished(monkeypatch):
    """A slot must outlive the step that reads it: JAX on CPU reads a host array in place without
    keeping the array object alive. BatchesInFlight waits for step k - depth before dropping its
    batch, and release_all waits for every held step (a failed one is not re-raised)."""
    waited = []
    monkeypatch.setattr(input_pipeline.jax, "block_until_ready", lambda x: waited.append(x["step"]) or x)
    in_flight = input_pipeline.BatchesInFlight(depth=1)
    alive = []
    for k in range(3):
        batch = {"hr": np.zeros(4, np.uint8).view(_Owned)}
        alive.append(weakref.ref(batch["hr"]))
        in_flight.hold(batch, {"step": k})
        del batch
    assert waited == [0, 1]  # holding step 2 waited for step 1, not for step 2
    assert [ref() is None for ref in alive] == [True, True, False]
    monkeypatch.setattr(input_pipeline.jax, "block_until_ready",
                        lambda x: waited.append(x["step"]) or 1 / 0)
    in_flight.release_all()
    assert waited == [0, 1, 2] and alive[2]() is None


def test_decoded_cache_is_reused_and_rebuilt_when_stale_or_damaged(tmp_path, monkeypatch):
    images = tmp_path / "images"
    for k in range(2):
        save_png(images / f"im{k}.png", random_rgb(24, 36, k))
    config = _config("folder", images)
    plain = _batches(config, 3)
    config.data.cache_dir = str(tmp_path / "cache")
    decoded = []
    real = input_pipeline.prepare_image  # runs on every decoded image, never on a cached one
    monkeypatch.setattr(input_pipeline, "prepare_image",
                        lambda spec, name, *rest: decoded.append(name) or real(spec, name, *rest))

    def run() -> list[dict[str, np.ndarray]]:
        decoded.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a valid cache is used silently
            return _batches(config, 3)

    for batches in (run(), run()):
        for a, b in zip(plain, batches, strict=True):
            np.testing.assert_array_equal(a["hr"], b["hr"])
    assert decoded == []  # the second run mapped the cache instead of decoding
    (index,) = (tmp_path / "cache").glob("*.json")
    (data,) = (tmp_path / "cache").glob("*.u8")

    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    _replace(data, bytes(raw))
    with pytest.warns(UserWarning, match=r"damaged \(im0 fails its CRC-32 check\); decoding"):
        np.testing.assert_array_equal(_batches(config, 1)[0]["hr"], plain[0]["hr"])
    assert len(decoded) == 2
    (data,) = (tmp_path / "cache").glob("*.u8")  # rebuilt; the damaged file is gone
    _replace(data, data.read_bytes()[:-10])
    with pytest.warns(UserWarning, match=r"damaged \(.*\.u8 is \d+ bytes, expected \d+ bytes\)"):
        _batches(config, 1)

    save_png(images / "im2.png", random_rgb(24, 36, 2))  # the source changed: stale
    with pytest.warns(UserWarning, match=r"stale \(built for other inputs, num_inputs\)"):
        _batches(config, 1)
    config.data.hr_patch_size = 12
    with pytest.warns(UserWarning, match=r"stale \(built for other hr_patch\)"):
        _batches(config, 1)
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 1

    index.write_text("my notes")  # not ours: refused, not overwritten
    with pytest.raises(ValueError, match=r"\.json: not a decoded-image cache of mspan_jax .*"
                                         r"delete it or set config.data.cache_dir") as e:
        _batches(config, 1)
    assert "\n" not in str(e.value) and index.read_text() == "my notes"


def test_temporary_cache_of_a_dead_process_is_removed(tmp_path, monkeypatch):
    """A run killed before its workers mapped the shared file leaves it behind; the next start deletes
    it (only files of processes that are gone)."""
    import os
    import subprocess
    import sys
    import tempfile

    from mspan_jax.data import decoded_cache

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(decoded_cache, "_free_bytes", lambda folder: 0)  # no room in /dev/shm
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    left = tmp_path / f"mspan_jax-decoded-{int(dead.stdout)}-0000.u8"
    mine = tmp_path / f"mspan_jax-decoded-{os.getpid()}-0000.u8"
    left.write_bytes(b"x")
    mine.write_bytes(b"x")
    path = decoded_cache.temporary_cache_path(1)
    assert path.parent == tmp_path and not left.exists() and mine.exists()


def test_uint8_batches_become_float_on_the_device_bit_for_bit_and_the_step_is_unchanged():
    """The pipeline's uint8 batch, made float32 inside the jitted step (`device_batch_to_float`), gives
    the values `batch_to_float` gives on the host bit for bit, hence the same train step results."""
    from mspan_jax.models.registry import get_model
    from mspan_jax.train.state import create_optimizer, create_train_state
    from mspan_jax.train.step import make_train_step

    rng = np.random.default_rng(0)
    every_byte = np.arange(256, dtype=np.uint8).reshape(1, 4, 4, 16)
    uint8 = {"lr": rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8),
             "hr": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)}
    on_host = batch_to_float(uint8)
    on_device = jax.jit(device_batch_to_float)(uint8)
    for key in uint8:
        assert on_device[key].dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(on_device[key]).view(np.uint32),
                                      on_host[key].view(np.uint32))
    np.testing.assert_array_equal(np.asarray(jax.jit(device_batch_to_float)(
        {"x": every_byte})["x"]).view(np.uint32), batch_to_float({"x": every_byte})["x"].view(np.uint32))
    noisy = {"lr": rng.normal(0.5, 0.3, (2, 4, 4, 3)).astype(np.float32)}  # float32 passes unchanged
    np.testing.assert_array_equal(np.asarray(jax.jit(device_batch_to_float)(noisy)["lr"]), noisy["lr"])

    config = sr_config("mspan", 2)
    config.model.num_features, config.model.num_blocks, config.model.num_units = 8, 1, 1
    model = get_model(config.model)
    optimizer = create_optimizer(config.train)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))["params"]
    config.train.ema_decay = 0.9
    step = make_train_step(config.train, model.apply, optimizer, donate=False)
    results = [step(create_train_state(params, optimizer.tx, ema_decay=0.9), batch)
               for batch in (uint8, on_host)]
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        # the inputs are bit-identical; the two compilations (uint8 / float32 inputs) may fuse the
        # arithmetic differently: a float32 rounding apart at most (1 ulp of the loss, seen on CPU)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


_SLOT_RUN = """
import sys
import time
sys.path.insert(0, "configs")
from quickstart_denoise import get_config
from mspan_jax.data.input_pipeline import create_train_iterator
from mspan_jax.data.workers import SlotArray

config = get_config()
config.data.num_workers = 2
it = create_train_iterator(config, verbose=False, process_index=0, process_count=1, copy=False)
in_slots = 0
for _ in range(600):
    batch = next(it)
    in_slots += all(isinstance(v, SlotArray) for v in batch.values())
    if _ == 0:
        start = time.perf_counter()
    del batch  # frees its slots
print(it._token, in_slots, len(it._receiver._mapped), time.perf_counter() - start, flush=True)
it.close()
"""


@pytest.mark.slow
def test_synthetic_noise_batches_reuse_their_worker_slots(tmp_path):
    """600 steps of configs/quickstart_denoise.py's pipeline with 2 workers: every batch comes in a
    reused slot (a slot taken per batch and never sent filled all 256 of a worker's by ~300 steps,
    and later batches fell back to grain's slower path), nothing is left in /dev/shm, no leak warning."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _SLOT_RUN], cwd=root, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    token, in_slots, mapped, _ = done.stdout.split()
    assert int(in_slots) == 600
    assert int(mapped) < 100, mapped  # per worker: its flags and the slots of the batches in flight
    assert "leaked" not in done.stderr, done.stderr[-2000:]
    assert list(Path("/dev/shm").glob(f"mspan-slots-{token}-*")) == []


def test_closing_an_iterator_leaves_the_segments_of_another_alone(monkeypatch):
    """Segments carry their iterator's random token: closing one removes only its own unsent ones."""
    from mspan_jax.data import workers

    ours, theirs = workers.new_token(), workers.new_token()
    assert ours != theirs and len(ours) >= 16
    made = [workers._new_segment(64, token) for token in (ours, theirs)]
    try:
        assert all(Path("/dev/shm", shm.name).exists() for shm in made)
        workers.remove_unreceived(ours)
        assert not Path("/dev/shm", made[0].name).exists() and Path("/dev/shm", made[1].name).exists()
    finally:
        for shm in made:
            shm.close()
        made[1].unlink()


def test_close_waits_for_the_batch_being_cut(tmp_path, monkeypatch):
    """In-process batches are cut by grain's prefetch thread: close() returns only once it is done
    (the decoded images it reads may be released right after)."""
    import time

    for k in range(2):
        save_png(tmp_path / f"im{k}.png", random_rgb(24, 36, k))
    real = BatchSampler.patches
    running = []

    def slow(self, step, slots=""):
        running.append(step)
        time.sleep(0.3)
        out = real(self, step, slots)
        running.remove(step)
        return out

    monkeypatch.setattr(BatchSampler, "patches", slow)
    config = _config("folder", tmp_path)
    config.data.prefetch = 1
    it = create_train_iterator(config, verbose=False, process_index=0, process_count=1)
    next(it)
    deadline = time.monotonic() + 5
    while not running and time.monotonic() < deadline:  # the next batch is being cut
        time.sleep(0.01)
    assert running
    it.close()
    assert running == []


@pytest.fixture
def small_shared_memory(tmp_path, monkeypatch, request):
    """decoded_cache's shared memory is a 1 MB tmpfs (root: mounted here; else skipped), the temp
    folder a plain one."""
    import shutil
    import subprocess
    import tempfile

    from mspan_jax.data import decoded_cache

    shm = tmp_path / "shm"
    shm.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(shm)]
    if shutil.which("mount") is None or subprocess.run(command, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(shm)], check=False))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(decoded_cache, "SHARED_MEMORY", shm)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return shm, tmp_path / "tmp"


@pytest.mark.parametrize("expected", [8, 1], ids=["estimated-too-big", "outgrown"])
def test_temporary_decoded_cache_falls_back_to_the_temp_folder(small_shared_memory, expected):
    """Shared memory smaller than the images (Docker's default /dev/shm is 64 MB; here a 1 MB tmpfs):
    the cache goes to the temp folder, placed there from the first image's size times the number of
    images, or moved there when an underestimate runs out of room; the images read back whole."""
    from mspan_jax.data.decoded_cache import CacheWriter, TrainImage

    shm, tmp = small_shared_memory
    images = [TrainImage(f"im{k}", random_rgb(256, 256, k), None) for k in range(8)]  # 192 KB each
    writer = CacheWriter(None, temporary=True, expected_images=expected)
    for image in images:
        writer.add(image)
    decoded = writer.finish()
    try:
        assert decoded.path.parent == tmp and list(shm.iterdir()) == []
        for image, back in zip(images, decoded, strict=True):
            np.testing.assert_array_equal(back.target, image.target)
    finally:
        decoded.release_temporary()
