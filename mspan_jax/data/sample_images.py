"""Natural colour photos bundled inside the scikit-image wheel (no download), for quick training runs.

Only images whose files ship in the wheel are used (`skimage.data.astronaut` etc.); the ones that need
`pooch` and a download (`eagle`, `lily`, ...) are not. Two photos are held out for validation
(`skimage_holdout` in `datasets.load_benchmark`); the rest train (`config.data.source = "skimage"`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from mspan_jax.data.images import read_image
from mspan_jax.errors import ConfigError

# name -> how to get it from skimage.data (stereo_motorcycle returns (left, right, disparity)).
_LOADERS = {
    "astronaut": lambda d: d.astronaut(),
    "rocket": lambda d: d.rocket(),
    "motorcycle_left": lambda d: d.stereo_motorcycle()[0],
    "motorcycle_right": lambda d: d.stereo_motorcycle()[1],
    "hubble_deep_field": lambda d: d.hubble_deep_field(),
    "chelsea": lambda d: d.chelsea(),
    "coffee": lambda d: d.coffee(),
}
SAMPLE_PREFIX = "skimage:"  # `--image skimage:chelsea` names a bundled photo in the scripts
TRAIN_NAMES: tuple[str, ...] = (
    "astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
)
HOLDOUT_NAMES: tuple[str, ...] = ("chelsea", "coffee")


@functools.cache
def load_sample_image(name: str) -> np.ndarray:
    """One bundled photo as a read-only uint8 HxWx3 array."""
    if name not in _LOADERS:
        raise ConfigError(f"unknown sample image {name!r}; choose one of {sorted(_LOADERS)}")
    import skimage.data

    img = np.asarray(_LOADERS[name](skimage.data))
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"skimage sample {name!r} is {img.dtype} {img.shape}, expected uint8 HxWx3")
    img = np.ascontiguousarray(img)
    img.setflags(write=False)
    return img


def sample_images(split: str) -> list[tuple[str, np.ndarray]]:
    """`(name, uint8 HxWx3)` for split "train" or "holdout", in a fixed order."""
    names = {"train": TRAIN_NAMES, "holdout": HOLDOUT_NAMES}.get(split)
    if names is None:
        raise ValueError(f"sample image split must be 'train' or 'holdout', got {split!r}")
    return [(n, load_sample_image(n)) for n in names]


def read_image_or_sample(spec: str) -> tuple[str, np.ndarray]:
    """`(name, uint8 HxWx3)` of an image file, or of a bundled photo given as `skimage:NAME`."""
    if spec.startswith(SAMPLE_PREFIX):
        name = spec[len(SAMPLE_PREFIX):]
        return name, np.array(load_sample_image(name))
    return Path(spec).stem, read_image(spec)
