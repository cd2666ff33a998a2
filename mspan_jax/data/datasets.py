"""Evaluation sets as `EvalPair` lists: the SR benchmarks and the denoising sets through their tfds
builders, paired restoration folders, and the held-out scikit-image photos.

    pairs = load_benchmark("set5", 4)                      # BI x4, prepared on first use
    pairs = load_benchmark("urban100", 3, "BD", manual_dir="~/sr_data")
    pairs = load_paired("rain100l", "test", manual_dir="~/ir_data")   # restoration: lr = LQ, hr = GT
    pairs = load_restoration_set("cbsd68", 25.0, manual_dir="~/ir_data")  # clean + seeded noise
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mspan_jax.data.degradations import DEGRADATIONS, DN_SIGMA, degrade, seed_for_name
from mspan_jax.data.imresize import modcrop
from mspan_jax.data.pairs import PAIRED_CONFIGS, SPLITS, EvalPair, noisy_pairs, to_channels
from mspan_jax.data.sample_images import sample_images
from mspan_jax.errors import ConfigError, DataError
from mspan_jax.extras import require
from mspan_jax.storage import local_tfds_dir

# tensorflow_datasets and the builders are imported only where a tfds set is loaded: the core
# install (no [tfds] extra) validates on "skimage_holdout" and evaluates image folders.

# What a restoration (scale 1) model validates and evaluates on: clean sets that get seeded noise (the
# keys of builders.benchmarks.DENOISING_SETS, and the bundled photos) and paired LQ/GT sets.
DENOISING_SET_NAMES = ("cbsd68", "kodak24", "mcmaster", "set12", "bsd68")
NOISE_SETS = (*DENOISING_SET_NAMES, "skimage_holdout")
RESTORATION_SETS = (*NOISE_SETS, *PAIRED_CONFIGS)


def _check_args(name: str, scale: int, degradation: str) -> tuple[str, str]:
    key = str(name).lower()
    if key in RESTORATION_SETS and key != "skimage_holdout":
        raise ConfigError(f"{key} is a restoration (denoising / deraining) set; evaluate a restoration "
                          "model on it (configs/denoise_color.py, configs/derain.py, ...)")
    deg = str(degradation).upper()
    if deg not in DEGRADATIONS:
        raise ConfigError(f"unknown degradation {degradation!r}; choose one of {list(DEGRADATIONS)}")
    if key == "skimage_holdout":
        return key, deg
    require("tfds", f"dataset {name!r} (a tfds builder; an image folder needs no extra)")
    from mspan_jax.data.builders.benchmarks import BENCHMARKS, SCALES

    if key not in BENCHMARKS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {[*BENCHMARKS, 'skimage_holdout']}")
    if scale not in SCALES:
        raise ConfigError(f"{key} is built for scales {list(SCALES)}, got scale {scale!r}")
    return key, deg


def skimage_holdout_pairs(scale: int, degradation: str = "BI", noise_sigma: float = DN_SIGMA
                          ) -> list[EvalPair]:
    """The held-out scikit-image photos, HR modcropped and LR made by `degradation` (DN: noise of std
    `noise_sigma`, seeded per image name)."""
    pairs = []
    for name, img in sample_images("holdout"):
        hr = modcrop(img, scale)
        lr = degrade(hr, scale, degradation, sigma=noise_sigma, seed=seed_for_name(name))
        pairs.append(EvalPair(name=name, lr=lr, hr=hr))
    return pairs


def load_benchmark(name: str, scale: int, degradation: str = "BI",
                   data_dir: str | os.PathLike | None = None,
                   manual_dir: str | os.PathLike | None = None,
                   download: bool = False, noise_sigma: float = DN_SIGMA) -> list[EvalPair]:
    """An evaluation set as `EvalPair`s sorted by image name.

    name: "set5" | "set14" | "b100" | "urban100" | "manga109" (tfds builders, prepared into `data_dir`
    on first use from the HR images in `manual_dir`, see docs/data.md) or "skimage_holdout".
    `data_dir` / `manual_dir` None or "": tfds's defaults.
    download: when `manual_dir` lacks the set, fetch EDSR's benchmark.tar instead (Set5/Set14/B100/
    Urban100). Raises FileNotFoundError with one line saying where to put missing files, and
    benchmarks.IncompleteSetError when a standard set does not hold exactly its `EXPECTED_IMAGES`, all
    usable.
    noise_sigma: the DN noise std (0..255), config.data.noise_sigma of a DN model. The tfds sets' DN
    inputs are built at `DN_SIGMA` (30), so they refuse another sigma (ValueError, one line);
    "skimage_holdout" makes its inputs at any sigma.
    """
    key, deg = _check_args(name, scale, degradation)
    data_dir, manual_dir = data_dir or None, manual_dir or None  # "" (a config's unset value) = default
    if key == "skimage_holdout":
        return skimage_holdout_pairs(scale, deg, noise_sigma)
    if deg == "DN" and float(noise_sigma) != DN_SIGMA:
        raise ConfigError(f"{key}: its tfds DN inputs are built at noise sigma {DN_SIGMA:g}, not "
                         f"{float(noise_sigma):g}; validate this DN model on 'skimage_holdout' or an HR "
                         f"folder (made at any sigma), or set config.data.noise_sigma={DN_SIGMA:g}")
    import tensorflow_datasets as tfds

    from mspan_jax.data.builders.benchmarks import BENCHMARKS

    cls = BENCHMARKS[key]
    data_dir = local_tfds_dir(data_dir, f"{key}/{deg.lower()}_x{scale}")  # gs://: a local copy
    builder = cls(data_dir=None if data_dir is None else os.fspath(Path(data_dir).expanduser()),
                  config=f"{deg.lower()}_x{scale}")
    how = " (or pass download=True / --download)" if cls.DOWNLOAD_URL else ""
    _prepare_from_manual(builder, key, cls.FOLDER_NAMES, manual_dir, "HR", how, "docs/data.md",
                         download=download and bool(cls.DOWNLOAD_URL))
    dataset = builder.as_dataset(split="test", shuffle_files=False)
    pairs = [EvalPair(name=ex["name"].decode("utf-8"), lr=ex["lr"], hr=ex["hr"])
             for ex in tfds.as_numpy(dataset)]
    _check_whole(key, len(pairs), builder)
    return sorted(pairs, key=lambda p: p.name)


def _check_whole(key: str, count: int, builder) -> None:
    """benchmarks.IncompleteSetError when a prepared standard set holds another number of images than
    its `EXPECTED_IMAGES` (prepared by a version that skipped files)."""
    from mspan_jax.data.builders import benchmarks

    expected = benchmarks.EXPECTED_IMAGES.get(key)
    if expected is not None and count != expected:
        raise benchmarks.IncompleteSetError(benchmarks.incomplete_set_message(
            key, expected, f"{builder.data_dir} was prepared with {count}; delete that folder "
            "to prepare it again"))


def _prepare_from_manual(builder, key: str, folder_names: tuple[str, ...],
                         manual_dir: str | os.PathLike | None, what: str, how: str, doc: str,
                         download: bool = False) -> None:
    """Prepares tfds `builder` on first use from `<manual_dir>/<folder>` (tfds's manual folder when
    None); FileNotFoundError in one line when the folder is missing and nothing can be downloaded."""
    if builder.is_prepared():
        return
    import tensorflow_datasets as tfds

    from mspan_jax.data.builders.benchmarks import find_hr_folder

    manual = (Path(manual_dir).expanduser() if manual_dir is not None
              else Path(builder.data_dir_root) / "downloads" / "manual")
    if find_hr_folder(manual, folder_names) is None and not download:
        raise FileNotFoundError(
            f"{key} is not prepared in {builder.data_dir_root} and {manual}/{folder_names[0]}"
            f"{'/' + what if what == 'HR' else ''} has no images: put the {folder_names[0]} "
            f"{what} images there{how}; see {doc}")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))


def load_clean_set(name: str, data_dir: str | os.PathLike | None = None,
                   manual_dir: str | os.PathLike | None = None) -> list[tuple[str, np.ndarray]]:
    """`(image name, clean uint8 (H, W, C))` of a denoising set, sorted by name: "skimage_holdout"
    (the held-out bundled photos) or a tfds denoising builder (cbsd68, kodak24, mcmaster: RGB;
    set12, bsd68: gray, C = 1), prepared on first use from `<manual_dir>/<Folder>/`."""
    if name == "skimage_holdout":
        return sample_images("holdout")
    if name not in DENOISING_SET_NAMES:
        raise ConfigError(f"unknown denoising set {name!r}; choose one of {list(NOISE_SETS)}")
    require("tfds", f"denoising set {name!r} (a tfds builder; an image folder needs no extra)")
    import tensorflow_datasets as tfds

    from mspan_jax.data.builders.benchmarks import DENOISING_SETS

    cls = DENOISING_SETS[name]
    data_dir = local_tfds_dir(data_dir, f"{name}/clean")  # gs://: a local copy
    builder = cls(data_dir=os.fspath(Path(data_dir).expanduser()) if data_dir else None)
    _prepare_from_manual(builder, name, cls.FOLDER_NAMES, manual_dir or None, "clean", "",
                         "docs/restoration.md")
    dataset = builder.as_dataset(split="test", shuffle_files=False)
    images = [(ex["name"].decode("utf-8"), ex["clean"]) for ex in tfds.as_numpy(dataset)]
    _check_whole(name, len(images), builder)
    return sorted(images, key=lambda item: item[0])


def load_paired(name: str, split: str = "test", data_dir: str | os.PathLike | None = None,
                manual_dir: str | os.PathLike | None = None) -> list[EvalPair]:
    """A paired restoration set (tfds `paired_folders/<name>`: sidd, rain100l, rain100h, polyu,
    didmdn, custom) as `EvalPair(name, lr=LQ, hr=GT)` sorted by name, prepared on first use from
    `<manual_dir>/<name>/<split>/{LQ,GT}/` (docs/data.md)."""
    if name not in PAIRED_CONFIGS:
        raise ConfigError(f"unknown paired set {name!r}; choose one of {list(PAIRED_CONFIGS)}")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {list(SPLITS)}, got {split!r}")
    require("tfds", f"paired set {name!r} (a tfds builder)")
    import tensorflow_datasets as tfds

    from mspan_jax.data.builders.paired_folders import PairedFolders

    data_dir = local_tfds_dir(data_dir, f"paired_folders/{name}")  # gs://: a local copy
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
        raise DataError(f"paired set {name} was prepared without a {split!r} split "
                        f"(has {sorted(builder.info.splits)})")
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    pairs = [EvalPair(name=ex["name"].decode("utf-8"), lr=ex["lq"], hr=ex["gt"])
             for ex in tfds.as_numpy(dataset)]
    return sorted(pairs, key=lambda p: p.name)


def load_restoration_set(name: str, noise_sigma: float, *, gray_noise: bool = False,
                         channels: int = 3, data_dir: str | os.PathLike | None = None,
                         manual_dir: str | os.PathLike | None = None) -> list[EvalPair]:
    """A validation / test set for MSPAN-IR (scale 1) as `EvalPair(name, lr=LQ, hr=GT)`.

    A paired set (`load_paired`, its test split), or a clean set (`load_clean_set`: "skimage_holdout",
    cbsd68, kodak24, mcmaster, set12, bsd68) with seeded Gaussian noise of std `noise_sigma`
    (`pairs.noisy_pairs`: the same noisy input on every run). `channels`: 3, or 1 for a grayscale
    model (colour images converted by MATLAB rgb2gray before the noise).
    """
    if name in PAIRED_CONFIGS:
        return [EvalPair(name=p.name, lr=to_channels(p.lr, channels, name),
                         hr=to_channels(p.hr, channels, name))
                for p in load_paired(name, "test", data_dir=data_dir, manual_dir=manual_dir)]
    if name not in NOISE_SETS:
        raise ConfigError(f"restoration (scale 1) validates on a denoising set {list(NOISE_SETS)} or a "
                          f"paired set {list(PAIRED_CONFIGS)}, got {name!r}; set config.eval.datasets")
    return noisy_pairs(load_clean_set(name, data_dir=data_dir, manual_dir=manual_dir), noise_sigma,
                       channels=channels, gray_noise=gray_noise, set_name=name)
