"""Evaluation sets as `EvalPair` lists: the SR benchmarks through their tfds builders, and the
held-out scikit-image photos.

    pairs = load_benchmark("set5", 4)                      # BI x4, prepared on first use
    pairs = load_benchmark("urban100", 3, "BD", manual_dir="~/sr_data")
    pairs = load_paired("rain100l", "test", manual_dir="~/ir_data")   # restoration: lr = LQ, hr = GT
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mspan_jax.data.degradations import DEGRADATIONS, add_gaussian_noise, degrade, seed_for_name
from mspan_jax.data.imresize import modcrop
from mspan_jax.data.pairs import PAIRED_CONFIGS, SPLITS, EvalPair
from mspan_jax.data.sample_images import sample_images
from mspan_jax.extras import require

# tensorflow_datasets and the builders are imported only where a tfds set is loaded: the core
# install (no [tfds] extra) validates on "skimage_holdout" and evaluates image folders.


def _check_args(name: str, scale: int, degradation: str) -> tuple[str, str]:
    key = str(name).lower()
    deg = str(degradation).upper()
    if deg not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {degradation!r}; choose one of {list(DEGRADATIONS)}")
    if key == "skimage_holdout":
        return key, deg
    require("tfds", f"dataset {name!r} (a tfds builder; an image folder needs no extra)")
    from mspan_jax.data.builders.benchmarks import BENCHMARKS, SCALES

    if key not in BENCHMARKS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {[*BENCHMARKS, 'skimage_holdout']}")
    if scale not in SCALES:
        raise ValueError(f"{key} is built for scales {list(SCALES)}, got scale {scale!r}")
    return key, deg


def skimage_holdout_pairs(scale: int, degradation: str = "BI") -> list[EvalPair]:
    """The held-out scikit-image photos, HR modcropped and LR made by `degradation`."""
    pairs = []
    for name, img in sample_images("holdout"):
        hr = modcrop(img, scale)
        lr = degrade(hr, scale, degradation, seed=seed_for_name(name))
        pairs.append(EvalPair(name=name, lr=lr, hr=hr))
    return pairs


def load_benchmark(name: str, scale: int, degradation: str = "BI",
                   data_dir: str | os.PathLike | None = None,
                   manual_dir: str | os.PathLike | None = None,
                   download: bool = False) -> list[EvalPair]:
    """An evaluation set as `EvalPair`s sorted by image name.

    name: "set5" | "set14" | "b100" | "urban100" | "manga109" (tfds builders, prepared into `data_dir`
    on first use from the HR images in `manual_dir`, see docs/data.md) or "skimage_holdout".
    `data_dir` / `manual_dir` None or "": tfds's defaults.
    download: when `manual_dir` lacks the set, fetch EDSR's benchmark.tar instead (Set5/Set14/B100/
    Urban100). Raises FileNotFoundError with one line saying where to put missing files, and
    benchmarks.IncompleteSetError when a standard set does not hold exactly its `EXPECTED_IMAGES`, all
    usable.
    """
    key, deg = _check_args(name, scale, degradation)
    data_dir, manual_dir = data_dir or None, manual_dir or None  # "" (a config's unset value) = default
    if key == "skimage_holdout":
        return skimage_holdout_pairs(scale, deg)
    import tensorflow_datasets as tfds

    from mspan_jax.data.builders import benchmarks
    from mspan_jax.data.builders.benchmarks import BENCHMARKS, find_hr_folder

    cls = BENCHMARKS[key]
    builder = cls(data_dir=None if data_dir is None else os.fspath(Path(data_dir).expanduser()),
                  config=f"{deg.lower()}_x{scale}")
    if not builder.is_prepared():
        manual = (Path(manual_dir).expanduser() if manual_dir is not None
                  else Path(builder.data_dir_root) / "downloads" / "manual")
        if find_hr_folder(manual, cls.FOLDER_NAMES) is None and not (download and cls.DOWNLOAD_URL):
            how = " (or pass download=True / --download)" if cls.DOWNLOAD_URL else ""
            raise FileNotFoundError(
                f"{key} is not prepared in {builder.data_dir_root} and "
                f"{manual}/{cls.FOLDER_NAMES[0]}/HR has no images: put the {cls.FOLDER_NAMES[0]} HR "
                f"images there{how}; see docs/data.md")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))
    dataset = builder.as_dataset(split="test", shuffle_files=False)
    pairs = [EvalPair(name=ex["name"].decode("utf-8"), lr=ex["lr"], hr=ex["hr"])
             for ex in tfds.as_numpy(dataset)]
    expected = benchmarks.EXPECTED_IMAGES.get(key)
    if expected is not None and len(pairs) != expected:  # prepared by a version that skipped files
        raise benchmarks.IncompleteSetError(benchmarks.incomplete_set_message(
            key, expected, f"{builder.data_dir} was prepared with {len(pairs)}; delete that folder "
            "to prepare it again"))
    return sorted(pairs, key=lambda p: p.name)


def load_paired(name: str, split: str = "test", data_dir: str | os.PathLike | None = None,
                manual_dir: str | os.PathLike | None = None) -> list[EvalPair]:
    """A paired restoration set (tfds `paired_folders/<name>`: sidd, rain100l, rain100h, custom) as
    `EvalPair(name, lr=LQ, hr=GT)` sorted by name, prepared on first use from
    `<manual_dir>/<name>/<split>/{LQ,GT}/` (docs/data.md)."""
    if name not in PAIRED_CONFIGS:
        raise ValueError(f"unknown paired set {name!r}; choose one of {list(PAIRED_CONFIGS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    require("tfds", f"paired set {name!r} (a tfds builder)")
    import tensorflow_datasets as tfds

    from mspan_jax.data.builders.paired_folders import PairedFolders

    builder = PairedFolders(data_dir=os.fspath(Path(data_dir).expanduser()) if data_dir else None,
                            config=name)
    if not builder.is_prepared():
        manual = (Path(manual_dir).expanduser() if manual_dir
                  else Path(builder.data_dir_root) / "downloads" / "manual")
        folder = manual / name / split
        if not ((folder / "LQ").is_dir() and (folder / "GT").is_dir()):
            raise FileNotFoundError(f"paired set {name} is not prepared in {builder.data_dir_root} and "
                                    f"{folder} has no LQ/ and GT/ folders: put the pairs there; "
                                    "see docs/data.md")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))
    if split not in builder.info.splits:
        raise ValueError(f"paired set {name} was prepared without a {split!r} split "
                         f"(has {sorted(builder.info.splits)})")
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    pairs = [EvalPair(name=ex["name"].decode("utf-8"), lr=ex["lq"], hr=ex["gt"])
             for ex in tfds.as_numpy(dataset)]
    return sorted(pairs, key=lambda p: p.name)


def load_restoration_set(name: str, noise_sigma: float, *, gray_noise: bool = False,
                         data_dir: str | os.PathLike | None = None,
                         manual_dir: str | os.PathLike | None = None) -> list[EvalPair]:
    """A validation set for MSPAN-IR (scale 1) as `EvalPair(name, lr=LQ, hr=GT)`.

    A paired set (`load_paired`, its test split), or "skimage_holdout" with Gaussian noise of std
    `noise_sigma` (0..255) added to each photo, seeded per image name so every run sees the same LQ.
    """
    if name in PAIRED_CONFIGS:
        return load_paired(name, "test", data_dir=data_dir, manual_dir=manual_dir)
    if name != "skimage_holdout":
        raise ValueError(f"restoration (scale 1) validates on a paired set {list(PAIRED_CONFIGS)} or "
                         f"'skimage_holdout', got {name!r}; set config.eval.datasets")
    return [EvalPair(name=n, hr=img, lr=add_gaussian_noise(
                img, noise_sigma, np.random.default_rng(seed_for_name(n)), gray=gray_noise))
            for n, img in sample_images("holdout")]
