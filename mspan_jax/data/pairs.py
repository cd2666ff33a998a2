"""LR/HR evaluation pairs from image folders (the tfds benchmark loader returns the same `EvalPair`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from mspan_jax.data.images import IMAGE_EXTENSIONS, list_images, read_image
from mspan_jax.data.imresize import bicubic_downscale, modcrop


@dataclasses.dataclass(frozen=True)
class EvalPair:
    """One test image: uint8 (h, w, 3) LR and its uint8 HR, modcropped to (scale h, scale w, 3)."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


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
                      lr_dir: str | os.PathLike | None = None) -> list[EvalPair]:
    """Pairs for every HR image in hr_dir (sorted by name), HR modcropped to a multiple of `scale`.

    LR is MATLAB bicubic of the HR (`bicubic_downscale`) unless lr_dir is given; then each HR stem
    is matched to `<stem>x{scale}.<ext>` or `<stem>.<ext>` there and its size is checked.
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
    pairs = []
    for hr_path in hr_paths:
        hr = modcrop(read_image(hr_path), scale)
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
    return pairs
