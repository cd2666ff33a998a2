"""Pairs from image folders: LR/HR evaluation pairs (the tfds benchmark loader returns the same
`EvalPair`), the LQ/GT pairing rule of restoration folders (the `paired_folders` tfds builder and
the training pipeline share it; docs/data.md), and restoration test pairs: clean images with seeded
Gaussian noise, or paired LQ/GT folders.

LQ/GT files pair by relative folder + *normalized stem*: lower-cased, with the role words `noisy,
gt, rain, rainy, norain, clean, input, target, lq, hq, real, mean` removed as whole `_`/`-`/`.`-
separated tokens. So `rain-001.png` pairs with `norain-001.png` (Rain100L), `NOISY_SRGB_010.PNG`
with `GT_SRGB_010.PNG` (SIDD) and `Canon80D_print_3_real.PNG` with `Canon80D_print_3_mean.PNG`
(PolyU). A file without a partner, or a pair whose sizes differ, is skipped with a warning naming it;
two files with the same key in one folder are an error.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

import numpy as np

from mspan_jax.data.degradations import DN_SIGMA, add_gaussian_noise, degrade, rgb_to_gray, seed_for_name
from mspan_jax.data.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from mspan_jax.data.imresize import modcrop
from mspan_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class EvalPair:
    """One test image: uint8 (h, w, C) LR and its uint8 HR, modcropped to (scale h, scale w, C); for
    restoration (scale 1) `lr` is the LQ (noisy, rainy) image and `hr` its GT, and a synthetic noisy
    LQ is float32 in [0, 1] units, not clipped (`noisy_pairs`). C: 3, or 1 (gray)."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


def read_hr(path: Path, scale: int) -> np.ndarray:
    """An HR image as uint8 (h, w, 3); ImageReadError (one line naming the file) when it cannot be
    read or is smaller than 2 x scale on a side (too small to make an LR of and score)."""
    hr = read_image(path)
    if min(hr.shape[:2]) < 2 * scale:
        raise ImageReadError(f"{path}: a {hr.shape[1]}x{hr.shape[0]} image is too small for scale "
                             f"{scale} (under {2 * scale} pixels a side); remove it from the folder")
    return hr


def _find_lr(lr_dir: Path, by_name: dict[str, Path], stem: str, scale: int) -> Path:
    """`<stem>x{scale}.<ext>` or `<stem>.<ext>` among lr_dir's files (`by_name`: lower-case name ->
    path), any image extension, any case."""
    for candidate in (f"{stem}x{scale}", stem):
        for ext in IMAGE_EXTENSIONS:
            found = by_name.get(f"{candidate}{ext}".lower())
            if found is not None:
                return found
    raise DataError(f"{lr_dir}: no LR image for {stem!r} (looked for {stem}x{scale}.png/.bmp/... "
                    f"and {stem}.png/...)")


def load_folder_pairs(hr_dir: str | os.PathLike, scale: int,
                      lr_dir: str | os.PathLike | None = None, *,
                      skip_unusable: bool = False, degradation: str = "BI",
                      noise_sigma: float = DN_SIGMA) -> list[EvalPair]:
    """Pairs for every HR image in hr_dir (sorted by name), HR modcropped to a multiple of `scale`.

    LR is made from the HR by `degradation` (BI: MATLAB bicubic; DN: bicubic + noise of std
    `noise_sigma` seeded per image name, as the benchmark builders make it) unless lr_dir is given;
    then each HR stem is matched to `<stem>x{scale}.<ext>` or `<stem>.<ext>` there and its size is
    checked.
    An unreadable or too small HR (`read_hr`) raises ImageReadError, or with `skip_unusable` is
    skipped with a warning naming it (callers then report "N of M images"); when every file is
    unusable the first one's error is raised all the same.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    hr_paths = list_images(hr_dir)
    if lr_dir is not None:
        lr_dir = Path(lr_dir)
        if not lr_dir.is_dir():
            raise DataError(f"{lr_dir}: LR folder does not exist or is not a folder")
        lr_files = {p.name.lower(): p for p in lr_dir.iterdir() if p.is_file()}
    pairs, unusable = [], []
    for hr_path in hr_paths:
        try:
            hr = modcrop(read_hr(hr_path, scale), scale)
        except ImageReadError as e:
            if not skip_unusable:
                raise
            warnings.warn(f"skipped: {e}", stacklevel=2)
            unusable.append(e)
            continue
        if lr_dir is None:
            lr = degrade(hr, scale, degradation, sigma=noise_sigma, seed=seed_for_name(hr_path.stem))
        else:
            lr_path = _find_lr(lr_dir, lr_files, hr_path.stem, scale)
            lr = read_image(lr_path)
            if (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape[:2]:
                raise DataError(f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]} but x{scale} of it does "
                                f"not match the modcropped HR {hr_path.name} "
                                f"({hr.shape[1]}x{hr.shape[0]})")
        pairs.append(EvalPair(name=hr_path.stem, lr=lr, hr=hr))
    if unusable and not pairs:
        raise unusable[0]
    return pairs


def is_folder_set(name: str) -> bool:
    """Whether a `config.eval.datasets` entry names an image folder (a path with a `/`, e.g.
    "../shared/data/Set5") rather than a tfds benchmark ("set5")."""
    return "/" in name or os.sep in name


def load_set_folder(root: str | os.PathLike, scale: int, degradation: str = "BI",
                    noise_sigma: float = DN_SIGMA) -> list[EvalPair]:
    """An SR benchmark laid out as folders, whole: `root/HR` with the published bicubic inputs in
    `root/LR_bicubic/X{scale}` when present and `degradation` is BI (e.g. ../shared/data/Set5), else
    every image of `root` with its LR made by `degradation` (`load_folder_pairs`). Any unreadable or
    too small image raises (no "N of M" for validation)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"validation folder {root} does not exist; fix config.eval.datasets")
    hr_dir = root / "HR" if (root / "HR").is_dir() else root
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    use_lr = str(degradation).upper() == "BI" and lr_dir.is_dir()
    return load_folder_pairs(hr_dir, scale, lr_dir if use_lr else None, degradation=degradation,
                             noise_sigma=noise_sigma)


_ROLE_WORDS = ("noisy", "gt", "rain", "rainy", "norain", "clean", "input", "target", "lq", "hq",
               "real", "mean")  # PolyU: <camera>_<scene>_<i>_real.PNG <-> ..._mean.PNG
_ROLE_TOKEN = re.compile(r"(?:^|(?<=[_\-.]))(?:" + "|".join(_ROLE_WORDS) + r")(?=$|[_\-.])")
SPLITS = ("train", "test")
# polyu and didmdn: the test sets of DuRN's (and so of the MSPAN paper's) real-noise and rain-streak
# tables (docs/restoration.md).
PAIRED_CONFIGS = ("sidd", "rain100l", "rain100h", "polyu", "didmdn", "custom")


def pair_key(relative: Path) -> str:
    """The key that pairs an LQ file with its GT file (see the module docstring)."""
    stem = _ROLE_TOKEN.sub("", relative.stem.lower())
    stem = re.sub(r"[_\-.]{2,}", "_", stem).strip("_-.")
    return (relative.parent / stem).as_posix()


def _keyed_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder does not exist")
    keyed: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        hidden = path.name.startswith(".")
        if not path.is_file() or hidden or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        key = pair_key(path.relative_to(folder))
        if key in keyed:
            raise DataError(f"{path} and {keyed[key]} have the same pairing key {key!r}; rename one")
        keyed[key] = path
    return keyed


def pair_files(lq_dir: str | Path, gt_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """`(key, lq_path, gt_path)` sorted by key; unmatched files are skipped with a warning naming them.
    Raises ValueError when no pair is found."""
    lq, gt = _keyed_files(Path(lq_dir)), _keyed_files(Path(gt_dir))
    for key in sorted(set(lq) ^ set(gt)):
        path = lq.get(key) or gt.get(key)
        warnings.warn(f"skipped: {path}: no partner in {gt_dir if key in lq else lq_dir}", stacklevel=2)
    pairs = [(key, lq[key], gt[key]) for key in sorted(set(lq) & set(gt))]
    if not pairs:
        raise DataError(f"{lq_dir} and {gt_dir}: no LQ/GT pairs found (file names must match, see "
                        "docs/data.md)")
    return pairs


def read_pair(lq_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Both images as uint8 RGB, or None (with a warning naming the file) when unreadable or the sizes
    differ."""
    try:
        lq, gt = read_image(lq_path), read_image(gt_path)
    except ImageReadError as e:
        warnings.warn(f"skipped: {e}", stacklevel=2)
        return None
    if lq.shape != gt.shape:
        warnings.warn(f"skipped: {lq_path}: size {lq.shape[1]}x{lq.shape[0]} differs from {gt_path} "
                      f"({gt.shape[1]}x{gt.shape[0]})", stacklevel=2)
        return None
    return lq, gt


def to_channels(img: np.ndarray, channels: int, set_name: str) -> np.ndarray:
    """A uint8 (H, W, 3|1) image for a model of `channels` inputs: RGB -> gray by MATLAB rgb2gray; a
    gray set for an RGB model is refused (its scores would not be the literature's colour ones)."""
    if channels not in (1, 3):
        raise ConfigError(f"restoration images are RGB (3) or gray (1), got channels={channels}")
    if channels == img.shape[2]:
        return img
    if channels == 1:
        return rgb_to_gray(img)
    raise ConfigError(f"{set_name} is a grayscale set but the model takes {channels} channels; "
                      "evaluate a grayscale model (configs/denoise_gray.py) on it")


def noisy_pairs(images: list[tuple[str, np.ndarray]], noise_sigma: float, *, channels: int = 3,
                gray_noise: bool = False, set_name: str = "") -> list[EvalPair]:
    """`EvalPair(name, lr=noisy, hr=clean)` of clean uint8 images: Gaussian noise of std `noise_sigma`
    (0..255 units) added to the clean image in [0, 1], float32, neither rounded nor clipped (the
    DnCNN / FFDNet test protocol: at sigma 25 the noisy input scores 20log10(255/25) = 20.17 dB), from
    a seed of the image's name (`seed_for_name`), so every run and every model sees the same input."""
    pairs = []
    for name, clean in images:
        clean = to_channels(clean, channels, set_name)
        rng = np.random.default_rng(seed_for_name(name))
        noisy = add_gaussian_noise(clean.astype(np.float32) / 255.0, noise_sigma, rng, gray=gray_noise)
        pairs.append(EvalPair(name=name, hr=clean, lr=noisy))
    return pairs


def load_folder_restoration_pairs(gt_dir: str | os.PathLike, lq_dir: str | os.PathLike | None = None,
                                  *, noise_sigma: float = 25.0, channels: int = 3,
                                  gray_noise: bool = False) -> tuple[list[EvalPair], list[str]]:
    """Restoration pairs of a folder sorted by name, and the names of the files skipped.

    With `lq_dir`: LQ/GT files paired by name (`pair_files`; unmatched files are skipped with a
    warning, and so are unreadable pairs and pairs whose sizes differ, `read_pair`). Without: the
    clean images of `gt_dir` with seeded noise (`noisy_pairs`), unreadable files skipped with a
    warning naming them. When nothing is usable, the first file's error is raised.
    """
    set_name = Path(gt_dir).name
    skipped: list[str] = []
    if lq_dir is None:
        images, errors = [], []
        for path in list_images(gt_dir):
            try:
                images.append((path.stem, read_image(path)))
            except ImageReadError as e:
                warnings.warn(f"skipped: {e}", stacklevel=2)
                errors.append(e)
                skipped.append(path.name)
        if not images:
            raise errors[0]
        return noisy_pairs(images, noise_sigma, channels=channels, gray_noise=gray_noise,
                           set_name=set_name), skipped
    pairs = []
    for key, lq_path, gt_path in pair_files(lq_dir, gt_dir):
        pair = read_pair(lq_path, gt_path)
        if pair is None:
            skipped.append(gt_path.relative_to(gt_dir).as_posix())
            continue
        pairs.append(EvalPair(name=key, lr=to_channels(pair[0], channels, set_name),
                              hr=to_channels(pair[1], channels, set_name)))
    if not pairs:
        raise DataError(f"{lq_dir} and {gt_dir}: no usable LQ/GT pair (see the warnings above)")
    return pairs, skipped
