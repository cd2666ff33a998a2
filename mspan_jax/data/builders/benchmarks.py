"""tfds builders for the SR benchmark sets (Set5, Set14, B100, Urban100, Manga109) and the Gaussian
denoising sets (CBSD68, Kodak24, McMaster, Set12, BSD68).

Each builder reads the HR images from `manual_dir` and makes the LR images at build time, one builder
config per degradation and scale: `bi_x2` ... `dn_x4` (`degradations.degrade`: BI, BD, DN). The HR
stored is cropped to a multiple of the scale, so `lr.shape == hr.shape // s` always. Split: "test".

    builder = Set5(data_dir=..., config="bi_x4")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))

Set5, Set14, B100 and Urban100 can instead be fetched from EDSR's public `benchmark.tar` (about 200 MB,
HR + LR_bicubic) when `manual_dir` lacks them; Manga109 is only distributed on request
(http://www.manga109.org), so it is manual only. `datasets.load_benchmark` is the usual entry point.

The denoising sets store only the clean images (config `clean`): the noise is added when a set is
loaded (`datasets.load_restoration_set`), at the sigma asked for, seeded per image name. Like the SR
sets they are whole-or-fail (`EXPECTED_IMAGES`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mspan_jax.data.builders.common import LocalBuilder, is_registered
from mspan_jax.data.degradations import (
    DEGRADATIONS,
    DN_SEED,
    DN_SIGMA,
    degrade,
    rgb_to_gray,
    seed_for_name,
)
from mspan_jax.data.images import ImageReadError, list_images, read_image
from mspan_jax.data.imresize import modcrop
from mspan_jax.data.pairs import read_hr
from mspan_jax.errors import DataError

SCALES = (2, 3, 4)
EDSR_BENCHMARK_URL = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
# The number of images of each standard set, by builder name. A set is scored whole or not at all:
# building fails on a missing, extra, unreadable or too-small image, so a published-style mean can
# never silently cover fewer images. A builder whose name is absent here skips bad files instead.
EXPECTED_IMAGES: dict[str, int] = {
    "set5": 5, "set14": 14, "b100": 100, "urban100": 100, "manga109": 109,
    # denoising sets (clean images; noise added at load time)
    "cbsd68": 68, "kodak24": 24, "mcmaster": 18, "set12": 12, "bsd68": 68,
}


class IncompleteSetError(DataError):
    """A standard benchmark set does not hold exactly its images, all usable."""


def incomplete_set_message(name: str, expected: int, problem: str) -> str:
    """The one line for a set that is not whole: its name, expected count and what is wrong."""
    return (f"{name}: the set has {expected} images but {problem}; scores on part of a set are not "
            "comparable to published ones, so restore the missing or damaged files (docs/data.md)")


class BenchmarkConfig(tfds.core.BuilderConfig):
    """One degradation at one scale: name `<degradation>_x<scale>`, e.g. `bd_x3`."""

    def __init__(self, *, degradation: str, scale: int, **kwargs: Any):
        super().__init__(
            name=f"{degradation.lower()}_x{scale}",
            description=f"HR cropped to a multiple of {scale}; LR made by {degradation} x{scale}.",
            **kwargs,
        )
        self.degradation = degradation
        self.scale = scale


def benchmark_configs() -> list[BenchmarkConfig]:
    """The 9 configs: BI/BD/DN x scales 2/3/4."""
    return [BenchmarkConfig(degradation=d, scale=s, version=tfds.core.Version("1.0.0"))
            for d in DEGRADATIONS for s in SCALES]


def find_hr_folder(root: Path, folder_names: tuple[str, ...]) -> Path | None:
    """`<root>/<name>/HR` (EDSR / IMDN layout), else `<root>/<name>` holding files; first found."""
    for name in folder_names:
        for candidate in (root / name / "HR", root / name):
            if candidate.is_dir() and any(
                p.is_file() and not p.name.startswith(".") for p in candidate.iterdir()
            ):
                return candidate
    return None


def degraded_pairs(hr_dir: Path, scale: int, degradation: str, dn_sigma: float = DN_SIGMA,
                   dn_seed: int = DN_SEED, *,
                   skip_unusable: bool = True) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """`(name, hr, lr)` for every readable image of `hr_dir`: HR modcropped, LR made by `degradation`.

    Non-RGB-8-bit files are converted by `read_image` (warning naming the file); corrupt files and
    images smaller than 2 x scale are skipped with a warning naming the file, or raise ImageReadError
    when not `skip_unusable`; HR not divisible by the scale is cropped (warning naming the file)."""
    for path in list_images(hr_dir):
        try:
            hr = read_hr(path, scale)
        except ImageReadError as e:
            if not skip_unusable:
                raise
            warnings.warn(f"skipped: {e}", stacklevel=2)
            continue
        if hr.shape[0] % scale or hr.shape[1] % scale:
            warnings.warn(f"{path}: {hr.shape[1]}x{hr.shape[0]} is not divisible by {scale}; "
                          "HR cropped to a multiple of the scale (modcrop)", stacklevel=2)
            hr = modcrop(hr, scale)
        lr = degrade(hr, scale, degradation, sigma=dn_sigma, seed=seed_for_name(path.stem, dn_seed))
        yield path.stem, np.ascontiguousarray(hr), lr


class _Benchmark(LocalBuilder, skip_registration=True):
    """Shared by the five sets; a subclass names its folders and optional download."""

    FOLDER_NAMES: tuple[str, ...] = ()
    DOWNLOAD_URL: str | None = None  # a tar whose `benchmark/<FOLDER>/HR` holds the HR images
    BUILDER_CONFIGS = benchmark_configs()
    VERSION = tfds.core.Version("1.0.0")

    @classmethod
    def manual_instructions(cls) -> str:
        folder = cls.FOLDER_NAMES[0]
        source = (f"or let the builder download EDSR's benchmark.tar ({cls.DOWNLOAD_URL})"
                  if cls.DOWNLOAD_URL else "the set is distributed on request only")
        return (f"Put the {folder} HR images (PNG, BMP, JPEG, ...) in `<manual_dir>/{folder}/HR/` "
                f"(also accepted: `<manual_dir>/{folder}/`, folder names {list(cls.FOLDER_NAMES)}); "
                f"file names are free, the stem becomes the image name. {source}. See docs/data.md.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=f"{self.FOLDER_NAMES[0]} SR benchmark, LR made at build time.",
            features=tfds.features.FeaturesDict({
                "name": tfds.features.Text(),
                "hr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "lr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            }),
            supervised_keys=("lr", "hr"),
        )

    def _hr_dir(self, dl_manager: tfds.download.DownloadManager) -> Path:
        try:
            manual = Path(dl_manager.manual_dir)
        except AssertionError:  # manual_dir missing or empty
            manual = None
        found = find_hr_folder(manual, self.FOLDER_NAMES) if manual is not None else None
        if found is not None:
            return found
        if self.DOWNLOAD_URL is None:
            raise FileNotFoundError(f"{self.name}: no HR images under manual_dir {manual}. "
                                    + self.manual_instructions())
        root = Path(dl_manager.download_and_extract(self.DOWNLOAD_URL))
        found = find_hr_folder(root / "benchmark", self.FOLDER_NAMES) or find_hr_folder(
            root, self.FOLDER_NAMES)
        if found is None:
            raise FileNotFoundError(f"{self.name}: {self.DOWNLOAD_URL} extracted to {root} without a "
                                    f"{self.FOLDER_NAMES[0]}/HR folder")
        return found

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"test": self._generate_examples(self._hr_dir(dl_manager))}

    def _generate_examples(self, hr_dir: Path):
        cfg = self.builder_config
        expected = EXPECTED_IMAGES.get(self.name)
        if expected is not None:
            found = len(list_images(hr_dir))
            if found != expected:
                raise IncompleteSetError(incomplete_set_message(self.name, expected,
                                                                f"{hr_dir} holds {found}"))
        count = 0
        try:
            for name, hr, lr in degraded_pairs(hr_dir, cfg.scale, cfg.degradation,
                                               skip_unusable=expected is None):
                count += 1
                yield name, {"name": name, "hr": hr, "lr": lr}
        except ImageReadError as e:  # raised only for a set with an expected count
            raise IncompleteSetError(incomplete_set_message(self.name, expected, str(e))) from None
        if count == 0:
            raise DataError(f"{hr_dir}: no usable images for {self.name} (all were skipped)")


_INSTRUCTIONS_NOTE = "See docs/data.md for the folder layout."


class Set5(_Benchmark, skip_registration=is_registered("set5")):
    """Set5 (Bevilacqua et al. 2012): 5 images."""

    FOLDER_NAMES = ("Set5",)
    DOWNLOAD_URL = EDSR_BENCHMARK_URL
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Set5: `<manual_dir>/Set5/HR/*.png|bmp`. " + _INSTRUCTIONS_NOTE


class Set14(_Benchmark, skip_registration=is_registered("set14")):
    """Set14 (Zeyde et al. 2010): 14 images."""

    FOLDER_NAMES = ("Set14",)
    DOWNLOAD_URL = EDSR_BENCHMARK_URL
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Set14: `<manual_dir>/Set14/HR/*.png|bmp`. " + _INSTRUCTIONS_NOTE


class B100(_Benchmark, skip_registration=is_registered("b100")):
    """B100 (BSD100, Martin et al. 2001): 100 images."""

    name = "b100"
    FOLDER_NAMES = ("B100", "BSD100", "BSDS100")
    DOWNLOAD_URL = EDSR_BENCHMARK_URL
    MANUAL_DOWNLOAD_INSTRUCTIONS = "B100: `<manual_dir>/B100/HR/*.png`. " + _INSTRUCTIONS_NOTE


class Urban100(_Benchmark, skip_registration=is_registered("urban100")):
    """Urban100 (Huang et al. 2015): 100 images."""

    FOLDER_NAMES = ("Urban100",)
    DOWNLOAD_URL = EDSR_BENCHMARK_URL
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Urban100: `<manual_dir>/Urban100/HR/*.png`. " + _INSTRUCTIONS_NOTE


class Manga109(_Benchmark, skip_registration=is_registered("manga109")):
    """Manga109 (Matsui et al. 2017): 109 images; manual download only."""

    FOLDER_NAMES = ("Manga109",)
    DOWNLOAD_URL = None
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Manga109: request the images at http://www.manga109.org and put the 109 HR images in "
        "`<manual_dir>/Manga109/HR/`. " + _INSTRUCTIONS_NOTE
    )


BENCHMARKS: dict[str, type[_Benchmark]] = {
    "set5": Set5, "set14": Set14, "b100": B100, "urban100": Urban100, "manga109": Manga109,
}


# ----------------------------------------------------------------------------- denoising sets
class _DenoisingSet(LocalBuilder, skip_registration=True):
    """Clean test images of a Gaussian denoising benchmark, read whole from `manual_dir` (image count:
    `EXPECTED_IMAGES`); a subclass names its folders and whether it is grayscale."""

    FOLDER_NAMES: tuple[str, ...] = ()
    GRAY: bool = False  # grayscale set: stored as (H, W, 1)
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="clean", description="The clean images.")]

    @classmethod
    def manual_instructions(cls) -> str:
        folder = cls.FOLDER_NAMES[0]
        return (f"Put the {EXPECTED_IMAGES[cls.name]} {folder} images in `<manual_dir>/{folder}/` (also "
                f"accepted: `<manual_dir>/{folder}/HR/`, folder names {list(cls.FOLDER_NAMES)}); "
                "see docs/restoration.md for where to get them.")

    def _info(self) -> tfds.core.DatasetInfo:
        channels = 1 if self.GRAY else 3
        return self.dataset_info_from_configs(
            description=f"{self.FOLDER_NAMES[0]} denoising benchmark: clean images, noise added at "
                        "load time.",
            features=tfds.features.FeaturesDict({
                "name": tfds.features.Text(),
                "clean": tfds.features.Image(shape=(None, None, channels), encoding_format="png"),
            }),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        try:
            manual = Path(dl_manager.manual_dir)
        except AssertionError:  # manual_dir missing or empty
            manual = None
        found = find_hr_folder(manual, self.FOLDER_NAMES) if manual is not None else None
        if found is None:
            raise FileNotFoundError(f"{self.name}: no images under manual_dir {manual}. "
                                    + self.manual_instructions())
        return {"test": self._generate_examples(found)}

    def _generate_examples(self, folder: Path):
        paths, expected = list_images(folder), EXPECTED_IMAGES[self.name]
        if len(paths) != expected:
            raise IncompleteSetError(incomplete_set_message(self.name, expected,
                                                            f"{folder} holds {len(paths)}"))
        for path in paths:
            with warnings.catch_warnings():  # a gray set's gray files are expected
                if self.GRAY:
                    warnings.filterwarnings("ignore", message=".*grayscale image converted to RGB")
                try:
                    img = read_image(path)
                except ImageReadError as e:
                    raise IncompleteSetError(incomplete_set_message(self.name, expected, str(e))) \
                        from None
            yield path.stem, {"name": path.stem, "clean": rgb_to_gray(img) if self.GRAY else img}


class CBSD68(_DenoisingSet, skip_registration=is_registered("cbsd68")):
    """CBSD68: the 68 colour BSD test images of Roth & Black's BSD68 split (481x321)."""

    name = "cbsd68"
    FOLDER_NAMES = ("CBSD68",)
    MANUAL_DOWNLOAD_INSTRUCTIONS = "CBSD68: `<manual_dir>/CBSD68/*.png`. " + _INSTRUCTIONS_NOTE


class Kodak24(_DenoisingSet, skip_registration=is_registered("kodak24")):
    """Kodak24: the 24 Kodak PhotoCD images (768x512)."""

    name = "kodak24"
    FOLDER_NAMES = ("Kodak24", "Kodak")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Kodak24: `<manual_dir>/Kodak24/kodim*.png`. " + _INSTRUCTIONS_NOTE


class McMaster(_DenoisingSet, skip_registration=is_registered("mcmaster")):
    """McMaster: 18 colour crops (500x500) of the McMaster demosaicking set."""

    name = "mcmaster"
    FOLDER_NAMES = ("McMaster", "McMaster18")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "McMaster: `<manual_dir>/McMaster/*.tif|png`. " + _INSTRUCTIONS_NOTE


class Set12(_DenoisingSet, skip_registration=is_registered("set12")):
    """Set12: DnCNN's 12 grayscale test images (256x256 and 512x512)."""

    name = "set12"
    FOLDER_NAMES = ("Set12",)
    GRAY = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Set12: `<manual_dir>/Set12/*.png`. " + _INSTRUCTIONS_NOTE


class BSD68(_DenoisingSet, skip_registration=is_registered("bsd68")):
    """BSD68: the grayscale versions of CBSD68's 68 images (DnCNN's test set)."""

    name = "bsd68"
    FOLDER_NAMES = ("BSD68",)
    GRAY = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = "BSD68: `<manual_dir>/BSD68/*.png`. " + _INSTRUCTIONS_NOTE


DENOISING_SETS: dict[str, type[_DenoisingSet]] = {
    "cbsd68": CBSD68, "kodak24": Kodak24, "mcmaster": McMaster, "set12": Set12, "bsd68": BSD68,
}
