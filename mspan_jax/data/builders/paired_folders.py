"""Paired LQ/GT folders for restoration (real denoising such as SIDD, deraining such as Rain100L/H),
as a tfds builder. The pairing rule, which the training pipeline shares, is `pairs.pair_files`.

Layout (one builder config per dataset; the split folders that exist become splits):

    <manual_dir>/<config>/train/LQ/...   <manual_dir>/<config>/train/GT/...
    <manual_dir>/<config>/test/LQ/...    <manual_dir>/<config>/test/GT/...
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from mspan_jax.data.builders.common import LocalBuilder, is_registered
from mspan_jax.data.pairs import PAIRED_CONFIGS, SPLITS, pair_files, read_pair
from mspan_jax.errors import DataError


class PairedFolders(LocalBuilder, skip_registration=is_registered("paired_folders")):
    """Paired LQ/GT restoration images from `manual_dir`; configs sidd, rain100l, rain100h, polyu,
    didmdn, custom."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n, description=f"LQ/GT pairs from <manual_dir>/{n}")
                       for n in PAIRED_CONFIGS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the pairs in `<manual_dir>/<config>/<split>/LQ/` and `.../GT/` (config: sidd, rain100l, "
        "rain100h, polyu, didmdn or custom; split: train and/or test); matching file names, see "
        "docs/data.md."
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
            raise DataError(f"{split_dir}: every LQ/GT pair was skipped")
