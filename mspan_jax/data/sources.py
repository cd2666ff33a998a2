"""The training images of a source (`config.data.source`), before decoding: one loader per image in a
fixed order, and this process's shard of them.

A loader (an HR file [+ its LR file], an in-memory photo, an LQ/GT pair) is a small picklable value
sent to the decoding worker processes; called, it reads its files and returns (name, target uint8,
premade source uint8 | None, origin for messages), or None to skip (it warned). `inputs()` names what
it reads for the decoded-image cache's key. The tfds `div2k` source is decoded by tf.data instead
(`div2k_tfds`).

Sharding: process `p` of `P` keeps a contiguous, even slice of the sorted list (tfds' `even_splits`
rule; `tfds.split_for_jax_process` for `div2k`): disjoint, covering.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging as absl_logging

from mspan_jax.data.images import ImageReadError, list_images, read_image
from mspan_jax.data.pairs import pair_files, read_pair
from mspan_jax.data.sample_images import sample_images
from mspan_jax.data.train_spec import PipelineSpec
from mspan_jax.errors import DataError
from mspan_jax.extras import require
from mspan_jax.storage import local_tfds_dir


def shard_bounds(num_items: int, process_index: int, process_count: int) -> tuple[int, int]:
    """`[start, stop)` of this process's contiguous slice: the first `n % P` processes get one more item,
    as `tfds.even_splits(drop_remainder=False)` splits. Slices are disjoint and cover all items."""
    base, extra = divmod(num_items, process_count)
    start = process_index * base + min(process_index, extra)
    return start, start + base + (process_index < extra)


def shard(items: Sequence[Any], process_index: int, process_count: int) -> list[Any]:
    """This process's slice of `items` (see `shard_bounds`)."""
    start, stop = shard_bounds(len(items), process_index, process_count)
    return list(items[start:stop])


# (name, target uint8, premade source uint8 | None, origin for messages), or None: skipped (it warned).
LoadedItem = "tuple[str, np.ndarray, np.ndarray | None, str] | None"


def _read_or_skip(path: Path) -> np.ndarray | None:
    try:
        return read_image(path)
    except ImageReadError as e:
        warnings.warn(f"skipped: {e}", stacklevel=3)
        return None


def _file_stamp(path: Path | None) -> list:
    if path is None:
        return []
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


@dataclasses.dataclass(frozen=True)
class _HRLoader:
    """An HR image file, with its premade LR file when there is one."""

    path: Path
    lr_path: Path | None = None

    def __call__(self) -> LoadedItem:
        hr = _read_or_skip(self.path)
        lr = None if hr is None or self.lr_path is None else _read_or_skip(self.lr_path)
        if hr is None or (self.lr_path is not None and lr is None):
            return None
        return self.path.stem, hr, lr, str(self.path)

    def inputs(self) -> list:
        return _file_stamp(self.path) + _file_stamp(self.lr_path)


@dataclasses.dataclass(frozen=True)
class _ArrayLoader:
    """An image already in memory (the bundled scikit-image photos)."""

    name: str
    img: np.ndarray

    def __call__(self) -> LoadedItem:
        return self.name, self.img, None, f"skimage.data {self.name}"

    def inputs(self) -> list:
        return [self.name, list(self.img.shape), zlib.crc32(np.ascontiguousarray(self.img).data)]


@dataclasses.dataclass(frozen=True)
class _PairedLoader:
    """An LQ/GT pair of files of a restoration folder (target GT, source LQ)."""

    key: str
    lq_path: Path
    gt_path: Path

    def __call__(self) -> LoadedItem:
        pair = read_pair(self.lq_path, self.gt_path)
        return None if pair is None else (self.key, pair[1], pair[0], f"{self.lq_path} / {self.gt_path}")

    def inputs(self) -> list:
        return [self.key] + _file_stamp(self.lq_path) + _file_stamp(self.gt_path)


Loader = _HRLoader | _ArrayLoader | _PairedLoader


_DIV2K_NAME = re.compile(r"^(\d{4})$")


def _div2k_folder_loaders(spec: PipelineSpec) -> list[Loader]:
    """DIV2K_train_HR images numbered within `image_range` (+ DIV2K_train_LR_bicubic/X{s} for BI)."""
    root = Path(spec.train_dir).expanduser()
    hr_dir = root / "DIV2K_train_HR" if (root / "DIV2K_train_HR").is_dir() else root
    lr_dir = root / "DIV2K_train_LR_bicubic" / f"X{spec.scale}"
    use_lr = spec.degradation == "BI" and not spec.restoration and lr_dir.is_dir()
    first, last = spec.image_range
    loaders = []
    for path in list_images(hr_dir):
        m = _DIV2K_NAME.match(path.stem)
        if m is None or not first <= int(m.group(1)) <= last:
            continue
        lr_path = None
        if use_lr:
            lr_path = next((p for p in (lr_dir / f"{path.stem}x{spec.scale}{path.suffix}",
                                        lr_dir / f"{path.stem}x{spec.scale}.png") if p.is_file()), None)
            if lr_path is None:
                raise FileNotFoundError(f"{lr_dir}: no LR image for {path.name} "
                                        f"(expected {path.stem}x{spec.scale}.png)")
        loaders.append(_HRLoader(path, lr_path))
    if not loaders:
        raise DataError(f"{hr_dir}: no DIV2K images numbered {first:04d}-{last:04d} "
                         "(names like 0001.png; see docs/data.md)")
    return loaders


def source_loaders(spec: PipelineSpec) -> list[Loader]:
    """All loaders of the source in a fixed order (sorted names), before sharding."""
    if spec.source == "skimage":
        return [_ArrayLoader(name, img) for name, img in sample_images("train")]
    if spec.source == "folder":
        return [_HRLoader(p) for p in list_images(Path(spec.train_dir).expanduser())]
    if spec.source == "div2k_folder":
        return _div2k_folder_loaders(spec)
    if spec.source == "paired":
        root = Path(spec.train_dir).expanduser()
        return [_PairedLoader(k, lq, gt) for k, lq, gt in pair_files(root / "LQ", root / "GT")]
    raise AssertionError(spec.source)


def div2k_tfds(spec: PipelineSpec) -> tuple[Any, Any, str]:
    """(builder, this process's split, config name) of tfds `div2k/bicubic_x{s}` train (0001-0800).
    The split is tfds' object (its str() is no split spec tfds parses)."""
    require("tfds", "config.data.source='div2k' (tfds DIV2K)")
    import tensorflow_datasets as tfds

    config = f"bicubic_x{spec.scale if spec.scale in (2, 3, 4) else 4}"
    data_dir = local_tfds_dir(spec.data_dir, f"div2k/{config}")  # gs://: a local copy
    # tfds warns through absl about the unprepared folder it is about to report ("Variant folder
    # ... has no dataset_info.json"), before the one line below says what to do: keep it quiet.
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        builder = tfds.builder(f"div2k/{config}", data_dir=data_dir)
    finally:
        absl_logging.set_verbosity(level)
    if not builder.is_prepared() and spec.restoration:  # a denoiser needs clean images only
        raise FileNotFoundError(
            f"a restoration model trains on clean images only, and tfds DIV2K (its HR) is not prepared "
            f"in {builder.data_dir_root}: give any folder of clean photos with "
            "--config.data.source=folder --config.data.train_dir=DIR, or DIV2K_train_HR with "
            "source=div2k_folder; see docs/restoration.md")
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"tfds div2k/{config} is not prepared in {spec.data_dir or builder.data_dir_root}: "
            f"prepare it with `python scripts/prepare_data.py --sets=div2k --scale={config[-1]} "
            "--data-dir=<dir>` (~4 GB download) or use config.data.source='div2k_folder'; "
            "see docs/data.md")
    split = tfds.split_for_jax_process("train", process_index=spec.process_index,
                                       process_count=spec.process_count)
    return builder, split, config


def div2k_tfds_items(spec: PipelineSpec, builder: Any, split: Any, config: str
                      ) -> Iterator[tuple[str, np.ndarray, np.ndarray | None, str]]:
    """The examples of `split`, decoded by tf.data (in parallel, in TensorFlow's threads)."""
    import tensorflow_datasets as tfds

    use_lr = spec.degradation == "BI" and not spec.restoration and spec.scale in (2, 3, 4)
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    for k, example in enumerate(tfds.as_numpy(dataset)):
        # tfds' div2k has no file-name feature: name the examples by their place in this shard.
        name = f"div2k/{config} train, shard {spec.process_index + 1}/{spec.process_count}, #{k}"
        yield name, example["hr"], example["lr"] if use_lr else None, name
