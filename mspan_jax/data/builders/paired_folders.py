"""Paired LQ/GT folders for restoration (real denoising such as SIDD, deraining such as Rain100L/H),
as a tfds builder, plus the pairing rule the training pipeline shares.

Layout (one builder config per dataset; the split folders that exist become splits):

    <manual_dir>/<config>/train/LQ/...   <manual_dir>/<config>/train/GT/...
    <manual_dir>/<config>/test/LQ/...    <manual_dir>/<config>/test/GT/...

Files pair by relative folder + *normalized stem*: lower-cased, with the role words `noisy, gt, rain,
rainy, norain, clean, input, target, lq, hq` removed as whole `_`/`-`/`.`-separated tokens. So
`rain-001.png` pairs with `norain-001.png` (Rain100L) and `NOISY_SRGB_010.PNG` with `GT_SRGB_010.PNG`
(SIDD). A file without a partner, or a pair whose sizes differ, is skipped with a warning naming it;
two files with the same key in one folder are an error.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mspan_jax.data.builders.common import LocalBuilder, is_registered
from mspan_jax.data.images import IMAGE_EXTENSIONS, ImageReadError, read_image

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


class PairedFolders(LocalBuilder, skip_registration=is_registered("paired_folders")):
    """Paired LQ/GT restoration images from `manual_dir`; configs sidd, rain100l, rain100h, custom."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n, description=f"LQ/GT pairs from <manual_dir>/{n}")
                       for n in PAIRED_CONFIGS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the pairs in `<manual_dir>/<config>/<split>/LQ/` and `.../GT/` (config: sidd, rain100l, "
        "rain100h or custom; split: train and/or test); matching file names, see docs/data.md."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Paired degraded (LQ) / ground-truth (GT) images for restoration.",
            features=tfds.features.FeaturesDict({
                "name": tfds.features.Text(),
                "lq": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "gt": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            }),
            supervised_keys=("lq", "gt"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(dl_manager.manual_dir) / self.builder_config.name
        splits = {s: self._generate_examples(root / s) for s in SPLITS if (root / s).is_dir()}
        if not splits:
            raise FileNotFoundError(f"{root}: no train/ or test/ folder. "
                                    + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return splits

    def _generate_examples(self, split_dir: Path):
        count = 0
        for key, lq_path, gt_path in pair_files(split_dir / "LQ", split_dir / "GT"):
            pair = read_pair(lq_path, gt_path)
            if pair is not None:
                count += 1
                yield key, {"name": key, "lq": pair[0], "gt": pair[1]}
        if count == 0:
            raise ValueError(f"{split_dir}: every LQ/GT pair was skipped")
