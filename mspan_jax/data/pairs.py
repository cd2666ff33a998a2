"""Pairs from image folders: LR/HR evaluation pairs (the tfds benchmark loader returns the same
`EvalPair`), and the LQ/GT pairing rule of restoration folders (the `paired_folders` tfds builder and
the training pipeline share it; docs/data.md).

LQ/GT files pair by relative folder + *normalized stem*: lower-cased, with the role words `noisy, gt,
rain, rainy, norain, clean, input, target, lq, hq` removed as whole `_`/`-`/`.`-separated tokens. So
`rain-001.png` pairs with `norain-001.png` (Rain100L) and `NOISY_SRGB_010.PNG` with `GT_SRGB_010.PNG`
(SIDD). A file without a partner, or a pair whose sizes differ, is skipped with a warning naming it;
two files with the same key in one folder are an error.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

import numpy as np

from mspan_jax.data.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from mspan_jax.data.imresize import bicubic_downscale, modcrop


@dataclasses.dataclass(frozen=True)
class EvalPair:
    """One test image: uint8 (h, w, 3) LR and its uint8 HR, modcropped to (scale h, scale w, 3)."""

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
    raise ValueError(f"{lr_dir}: no LR image for {stem!r} (looked for {stem}x{scale}.png/.bmp/... "
                     f"and {stem}.png/...)")


def load_folder_pairs(hr_dir: str | os.PathLike, scale: int,
                      lr_dir: str | os.PathLike | None = None, *,
                      skip_unusable: bool = False) -> list[EvalPair]:
    """Pairs for every HR image in hr_dir (sorted by name), HR modcropped to a multiple of `scale`.

    LR is MATLAB bicubic of the HR (`bicubic_downscale`) unless lr_dir is given; then each HR stem
    is matched to `<stem>x{scale}.<ext>` or `<stem>.<ext>` there and its size is checked.
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
            raise ValueError(f"{lr_dir}: LR folder does not exist or is not a folder")
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
            lr = bicubic_downscale(hr, scale)
        else:
            lr_path = _find_lr(lr_dir, lr_files, hr_path.stem, scale)
            lr = read_image(lr_path)
            if (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape[:2]:
                raise ValueError(f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]} but x{scale} of it does "
                                 f"not match the modcropped HR {hr_path.name} "
                                 f"({hr.shape[1]}x{hr.shape[0]})")
        pairs.append(EvalPair(name=hr_path.stem, lr=lr, hr=hr))
    if unusable and not pairs:
        raise unusable[0]
    return pairs


_ROLE_WORDS = ("noisy", "gt", "rain", "rainy", "norain", "clean", "input", "target", "lq", "hq")
_ROLE_TOKEN = re.compile(r"(?:^|(?<=[_\-.]))(?:" + "|".join(_ROLE_WORDS) + r")(?=$|[_\-.])")
SPLITS = ("train", "test")
PAIRED_CONFIGS = ("sidd", "rain100l", "rain100h", "custom")


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
            raise ValueError(f"{path} and {keyed[key]} have the same pairing key {key!r}; rename one")
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
        raise ValueError(f"{lq_dir} and {gt_dir}: no LQ/GT pairs found (file names must match, see "
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
