"""tfds builders prepare from a manual_dir the tests make (tiny images, data_dir in tmp_path)."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import random_rgb, require_tfds, save_png

from mspan_jax.data import datasets, pairs
from mspan_jax.data.degradations import blur_downsample
from mspan_jax.data.imresize import bicubic_downscale, modcrop

tfds = require_tfds()
from mspan_jax.data.builders import benchmarks  # noqa: E402


def test_set5_builder_converts_files_and_reloads(tmp_path):
    hr_dir = tmp_path / "manual" / "Set5" / "HR"
    save_png(hr_dir / "a.png", random_rgb(24, 36, 0))
    save_png(hr_dir / "b_odd.png", random_rgb(25, 38, 1))  # not divisible by 2: cropped, with a warning
    save_png(hr_dir / "c_gray.png", random_rgb(24, 24, 2)[..., 0])  # converted, with a warning
    save_png(hr_dir / "d_rgba.png", np.dstack([random_rgb(24, 24, 3), np.full((24, 24), 255, np.uint8)]))
    save_png(hr_dir / "e_16bit.png", (random_rgb(24, 24, 4)[..., 0].astype(np.uint16) * 257))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = datasets.load_benchmark("set5", 2, data_dir=tmp_path / "data",
                                        manual_dir=tmp_path / "manual")
    messages = "\n".join(str(w.message) for w in caught)
    for name in ("b_odd.png", "c_gray.png", "d_rgba.png", "e_16bit.png"):
        assert name in messages, f"no warning names {name}:\n{messages}"
    assert [p.name for p in pairs] == ["a", "b_odd", "c_gray", "d_rgba", "e_16bit"]
    for p in pairs:
        assert p.hr.shape[0] % 2 == 0 and p.hr.shape[1] % 2 == 0
        np.testing.assert_array_equal(p.lr, bicubic_downscale(p.hr, 2))
    np.testing.assert_array_equal(pairs[0].hr, random_rgb(24, 36, 0))
    np.testing.assert_array_equal(pairs[1].hr, modcrop(random_rgb(25, 38, 1), 2))
    # Prepared: reading again needs no manual_dir; re-importing does not register twice.
    again = datasets.load_benchmark("set5", 2, data_dir=tmp_path / "data")
    assert [p.name for p in again] == [p.name for p in pairs]
    importlib.reload(benchmarks)
    assert tfds.builder_cls("set5") is not None


@pytest.mark.parametrize("problem, needle", [
    ("tiny", "a_tiny.png: a 3x3 image is too small for scale 2"),
    ("corrupt", "a_corrupt.png"),
    ("missing", "holds 4"),
    ("extra", "holds 6"),
])
def test_a_standard_set_is_whole_or_fails_in_one_line(tmp_path, problem, needle):
    hr_dir = tmp_path / "manual" / "Set5" / "HR"
    for i in range(4 if problem == "missing" else 5):
        save_png(hr_dir / f"img{i}.png", random_rgb(24, 24, i))
    if problem == "tiny":
        save_png(hr_dir / "a_tiny.png", random_rgb(3, 3, 5))
    elif problem == "corrupt":
        (hr_dir / "a_corrupt.png").write_bytes(b"\x89PNG not really")
    elif problem == "extra":
        save_png(hr_dir / "extra.png", random_rgb(24, 24, 9))
    if problem in ("tiny", "corrupt"):
        (hr_dir / "img0.png").unlink()  # the bad file takes a good one's place: 5 files
    with pytest.raises(benchmarks.IncompleteSetError) as e:
        datasets.load_benchmark("set5", 2, data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    message = str(e.value)
    assert message.startswith("set5: the set has 5 images but ") and needle in message, message
    assert "\n" not in message
    assert not tfds.builder("set5/bi_x2", data_dir=str(tmp_path / "data")).is_prepared()


def test_a_set_prepared_incomplete_is_refused(tmp_path, monkeypatch):
    for i in range(5):
        save_png(tmp_path / "manual" / "Set5" / "HR" / f"img{i}.png", random_rgb(24, 24, i))
    assert len(datasets.load_benchmark("set5", 3, data_dir=tmp_path / "data",
                                       manual_dir=tmp_path / "manual")) == 5
    monkeypatch.setitem(benchmarks.EXPECTED_IMAGES, "set5", 6)  # as if an older version skipped one
    with pytest.raises(benchmarks.IncompleteSetError, match=r"set5: the set has 6 images but .*"
                       r"bi_x3.* was prepared with 5; delete that folder"):
        datasets.load_benchmark("set5", 3, data_dir=tmp_path / "data")


def test_bd_config_and_alias_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(benchmarks.EXPECTED_IMAGES, "b100", 1)  # one image stands for the 100
    # images directly in the folder
    save_png(tmp_path / "manual" / "BSD100" / "x.png", random_rgb(24, 30, 6))
    builder = benchmarks.B100(data_dir=str(tmp_path / "data"), config="bd_x3")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
    (ex,) = tfds.as_numpy(builder.as_dataset(split="test"))
    np.testing.assert_array_equal(ex["lr"], blur_downsample(random_rgb(24, 30, 6), 3))


def test_missing_files_give_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Set14/HR has no images.*docs/data.md") as e:
        datasets.load_benchmark("set14", 4, data_dir=tmp_path / "data", manual_dir=tmp_path / "nope")
    assert "\n" not in str(e.value) and "--download" in str(e.value)
    with pytest.raises(FileNotFoundError, match="Manga109") as e:
        datasets.load_benchmark("manga109", 4, data_dir=tmp_path / "data", manual_dir=tmp_path)
    assert "download" not in str(e.value)
    with pytest.raises(ValueError, match="unknown dataset 'set6'"):
        datasets.load_benchmark("set6", 4)
    with pytest.raises(ValueError, match="scales"):
        datasets.load_benchmark("set5", 5)


def test_download_path_finds_benchmark_tar_layout(tmp_path, monkeypatch):
    monkeypatch.setitem(benchmarks.EXPECTED_IMAGES, "urban100", 1)  # one image stands for the 100
    extracted = tmp_path / "extracted"
    save_png(extracted / "benchmark" / "Urban100" / "HR" / "img_001.png", random_rgb(24, 24, 7))
    calls = []

    def fake_download_and_extract(self, url):
        calls.append(url)
        return extracted

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", fake_download_and_extract)
    pairs = datasets.load_benchmark("urban100", 4, data_dir=tmp_path / "data",
                                    manual_dir=tmp_path / "empty", download=True)
    assert calls == [benchmarks.EDSR_BENCHMARK_URL]
    assert [p.name for p in pairs] == ["img_001"] and pairs[0].lr.shape == (6, 6, 3)


def test_skimage_holdout_pairs():
    pairs = datasets.load_benchmark("skimage_holdout", 3)
    assert [p.name for p in pairs] == ["chelsea", "coffee"]
    for p in pairs:
        assert p.hr.shape[0] == 3 * p.lr.shape[0] and p.hr.shape[1] == 3 * p.lr.shape[1]


def test_pair_key_matches_rain_and_sidd_names():
    key = pairs.pair_key
    assert key(Path("rain-001.png")) == key(Path("norain-001.png")) == "001"
    assert key(Path("s1/NOISY_SRGB_010.PNG")) == key(Path("s1/GT_SRGB_010.PNG")) == "s1/srgb_010"
    assert key(Path("raindrop_3.png")) == "raindrop_3"  # only whole tokens are role words


def test_paired_folders_builder(tmp_path):
    root = tmp_path / "manual" / "rain100l" / "test"
    for i in range(3):
        save_png(root / "LQ" / f"rain-{i:03d}.png", random_rgb(16, 20, i))
        save_png(root / "GT" / f"norain-{i:03d}.png", random_rgb(16, 20, 10 + i))
    save_png(root / "LQ" / "rain-009.png", random_rgb(16, 20, 9))  # no partner: skipped
    save_png(root / "GT" / "norain-002.png", random_rgb(16, 24, 12))  # size differs from its LQ: skipped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = datasets.load_paired("rain100l", "test", data_dir=tmp_path / "data",
                                     manual_dir=tmp_path / "manual")
    messages = "\n".join(str(w.message) for w in caught)
    assert "rain-009.png" in messages and "rain-002.png" in messages
    assert [p.name for p in pairs] == ["000", "001"]
    np.testing.assert_array_equal(pairs[1].lr, random_rgb(16, 20, 1))  # lr = LQ, hr = GT
    np.testing.assert_array_equal(pairs[1].hr, random_rgb(16, 20, 11))
    assert tfds.builder("paired_folders/rain100l", data_dir=str(tmp_path / "data")).is_prepared()
    with pytest.raises(FileNotFoundError, match=r"sidd/test has no LQ/ and GT/ folders") as e:
        datasets.load_paired("sidd", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    assert "\n" not in str(e.value)


def test_set5_bi_matches_the_published_matlab_lr(set5_dir, tmp_path):
    """BI made at build time is bit-identical to IMDN's MATLAB-made Set5 LR images."""
    from mspan_jax.data.images import read_image

    pairs = datasets.load_benchmark("set5", 4, data_dir=tmp_path, manual_dir=set5_dir.parent)
    assert len(pairs) == 5
    for pair in pairs:
        lr = read_image(set5_dir / "LR_bicubic" / "X4" / f"{pair.name}x4.bmp")
        np.testing.assert_array_equal(pair.lr, lr)
        hr = read_image(set5_dir / "HR" / f"{pair.name}.bmp")
        np.testing.assert_array_equal(pair.hr, modcrop(hr, 4))


def test_restoration_validation_set_is_noisy_gt_and_reproducible():
    pairs = datasets.load_restoration_set("skimage_holdout", 25.0)
    again = datasets.load_restoration_set("skimage_holdout", 25.0)
    assert [p.name for p in pairs] == ["chelsea", "coffee"]
    for p, q in zip(pairs, again, strict=True):
        assert p.lr.shape == p.hr.shape and p.lr.dtype == np.float32  # float noise, not clipped
        np.testing.assert_array_equal(p.lr, q.lr)  # the same LQ every run
        noise = p.lr.astype(float) * 255 - p.hr.astype(float)
        assert abs(noise.std() - 25.0) < 0.5
    with pytest.raises(ValueError, match="validates on a denoising set .* or a paired set"):
        datasets.load_restoration_set("set5", 25.0)


def test_mspan_ir_training_validates_on_noisy_inputs():
    from mspan_jax.config_base import sr_config
    from mspan_jax.models import get_model
    from mspan_jax.train.validation import Validator

    config = sr_config("mspan_ir", 1)
    config.eval.datasets = ("skimage_holdout",)
    config.data.noise_sigma = 15.0
    validator = Validator(config, get_model(config.model))
    pairs = validator.suite.sets["skimage_holdout"].pairs
    assert all(np.abs(p.lr * 255.0 - p.hr).mean() > 5 for p in pairs)
    # The baseline at scale 1 scores the noisy input itself, here on Y (sr_config's metric), where
    # the colour noise of sigma 15 has std 15 |Y_WEIGHTS| / 255.
    from mspan_jax.metrics import Y_WEIGHTS

    sigma_y = 15.0 * float(np.linalg.norm(Y_WEIGHTS)) / 255.0
    want = 20 * np.log10(255.0 / sigma_y)
    assert validator.suite.baselines["input"]["skimage_holdout"].psnr == pytest.approx(want, abs=0.1)


def test_dn_super_resolution_validates_and_evaluates_at_the_configured_sigma(tmp_path):
    """SR with DN trains at config.data.noise_sigma, so its validation / evaluation LR must carry that
    sigma, not a fixed 30: the bundled photos and an HR folder make it at the sigma asked for; the tfds
    sets, whose DN inputs are built at 30, refuse another sigma in one line."""
    from mspan_jax.data.degradations import DN_SIGMA, bicubic, degrade, seed_for_name

    for p in datasets.load_benchmark("skimage_holdout", 2, "DN", noise_sigma=10.0):
        want = degrade(p.hr, 2, "DN", sigma=10.0, seed=seed_for_name(p.name))
        np.testing.assert_array_equal(p.lr, want)
        assert np.std(p.lr.astype(np.float64) - bicubic(p.hr, 2)) < 12  # ~10, not ~30
    save_png(tmp_path / "hr" / "a.png", random_rgb(24, 30, 0))
    (pair,) = pairs.load_folder_pairs(tmp_path / "hr", 2, degradation="DN", noise_sigma=10.0)
    np.testing.assert_array_equal(pair.lr, degrade(pair.hr, 2, "DN", sigma=10.0,
                                                   seed=seed_for_name("a")))
    (pair,) = pairs.load_folder_pairs(tmp_path / "hr", 2)  # BI: MATLAB bicubic, as before
    np.testing.assert_array_equal(pair.lr, bicubic_downscale(pair.hr, 2))
    with pytest.raises(ValueError, match=rf"set5: its tfds DN inputs are built at noise sigma "
                                         rf"{DN_SIGMA:g}, not 10;") as e:
        datasets.load_benchmark("set5", 2, "DN", noise_sigma=10.0, data_dir=tmp_path / "tfds",
                                manual_dir=tmp_path / "none")
    assert "\n" not in str(e.value)


def test_dn_super_resolution_training_validates_at_its_noise_sigma():
    from mspan_jax.config_base import sr_config
    from mspan_jax.data.degradations import degrade, seed_for_name
    from mspan_jax.train.validation import Validator

    config = sr_config("mspan", 2)
    config.eval.datasets = ("skimage_holdout",)
    config.data.degradation, config.data.noise_sigma = "DN", 10.0
    for p in Validator(config, model=None).suite.sets["skimage_holdout"].pairs:
        np.testing.assert_array_equal(p.lr, degrade(p.hr, 2, "DN", sigma=10.0,
                                                    seed=seed_for_name(p.name)))


@pytest.mark.slow
def test_prepare_data_builds_tfds_div2k_from_the_zips(tmp_path):
    """scripts/prepare_data.py --sets=div2k with the DIV2K zips in --manual-dir: tfds' own
    div2k/bicubic_x4 is prepared (what `tfds build div2k` would write) and tfds reads it back."""
    from conftest import div2k_zips, run_script

    zips = div2k_zips(tmp_path / "zips", train=3, valid=1)
    data = tmp_path / "tfds"
    proc = run_script("prepare_data.py", "--sets=div2k", "--scale=4", f"--data-dir={data}",
                      f"--manual-dir={zips}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"prepared in {data / 'div2k' / 'bicubic_x4'}" in proc.stdout
    builder = tfds.builder("div2k/bicubic_x4", data_dir=str(data))
    assert builder.is_prepared()
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["validation"].num_examples == 1
    examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert {ex["hr"].shape for ex in examples} == {(48, 48, 3)}
    assert {ex["lr"].shape for ex in examples} == {(12, 12, 3)}

    # The `div2k` training source reads it, each of two processes its own part (the official LR).
    from mspan_jax.config_base import sr_config
    from mspan_jax.data.input_pipeline import load_train_images
    from mspan_jax.data.train_spec import resolve_spec

    config = sr_config("mspan", 4)
    config.data.source, config.data.data_dir, config.data.num_workers = "div2k", str(data), 0
    config.train.batch_size, config.data.hr_patch_size = 2, 32
    parts = [load_train_images(resolve_spec(config, p, 2), verbose=False) for p in range(2)]
    assert sorted(len(images) for images in parts) == [1, 2]
    lr = sorted(ex["lr"].tobytes() for ex in examples)
    assert sorted(im.source.tobytes() for images in parts for im in images) == lr


def test_div2k_builder_downloads_tfds_urls_without_the_zips(tmp_path):
    """Without the zips in manual_dir the builder asks tfds' download manager for tfds' own URLs."""
    from mspan_jax.data.builders.div2k import div2k_builder

    asked = {}

    class Manager:
        manual_dir = str(tmp_path)  # empty: nothing to extract

        def download_and_extract(self, urls):
            asked.update(urls)
            return {key: str(tmp_path / key) for key in urls}

    div2k_builder(3, str(tmp_path / "data"))._split_generators(Manager())
    assert asked == {"train_lr_url": f"{DIV2K_URL}DIV2K_train_LR_bicubic_X3.zip",
                     "valid_lr_url": f"{DIV2K_URL}DIV2K_valid_LR_bicubic_X3.zip",
                     "train_hr_url": f"{DIV2K_URL}DIV2K_train_HR.zip",
                     "valid_hr_url": f"{DIV2K_URL}DIV2K_valid_HR.zip"}


DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
