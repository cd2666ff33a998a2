"""tfds's own DIV2K builder (`div2k/bicubic_x{2,3,4}`), prepared by this package: what
`tfds build div2k --config bicubic_x4` would write (same name, configs, version, features and
examples; `tfds.builder("div2k/bicubic_x4", data_dir=...)` reads it), without tfds' command line,
which needs apache_beam, nor its default code path, which needs importlib_resources (neither is a
dependency of tensorflow-datasets 4.9).

With the four zips of the DIV2K site in `manual_dir` (`DIV2K_train_HR.zip`, `DIV2K_valid_HR.zip`,
`DIV2K_{train,valid}_LR_bicubic_X{s}.zip`), tfds extracts those; otherwise tfds downloads them
(~4.2 GB at x4) from the URLs of its builder. `scripts/prepare_data.py --sets=div2k` runs it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

TFDS_DIV2K = tfds.builder_cls("div2k")
SCALES = (2, 3, 4)


def zip_name(url: str) -> str:
    """The file name of one of tfds' DIV2K URLs (as the DIV2K site names its zips)."""
    return url.rsplit("/", 1)[1]


class _LocalZips:
    """A download manager whose `download_and_extract` extracts local copies of the URLs' zips
    (the rest is the real manager's)."""

    def __init__(self, dl_manager: tfds.download.DownloadManager, folder: Path):
        self._dl, self._folder = dl_manager, folder

    def download_and_extract(self, urls: dict[str, str]) -> dict[str, Any]:
        return self._dl.extract({key: self._folder / zip_name(url) for key, url in urls.items()})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dl, name)


class Div2k(TFDS_DIV2K, skip_registration=True):
    """tfds' `div2k` builder, reading the zips from `manual_dir` when all four are there."""

    name = "div2k"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: DIV2K_train_HR.zip, DIV2K_valid_HR.zip and DIV2K_{train,valid}_LR_bicubic_X<s>.zip "
        "from https://data.vision.ee.ethz.ch/cvl/DIV2K/ in manual_dir; else tfds downloads them.")

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """tfds' own builder file, found without importlib_resources: the checksums.tsv beside it
        verifies a download."""
        return epath.Path(inspect.getfile(TFDS_DIV2K))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        try:
            manual = Path(dl_manager.manual_dir)
        except AssertionError:  # no manual_dir given, or an empty one
            manual = None
        urls = self.builder_config.download_urls.values()
        if manual is not None and all((manual / zip_name(u)).is_file() for u in urls):
            return super()._split_generators(_LocalZips(dl_manager, manual))
        return super()._split_generators(dl_manager)


def div2k_builder(scale: int, data_dir: str) -> Div2k:
    """The `div2k/bicubic_x{scale}` builder writing into the local folder `data_dir`."""
    return Div2k(config=f"bicubic_x{scale}", data_dir=data_dir)
