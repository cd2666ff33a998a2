"""MSPAN-IR grayscale Gaussian denoising (the paper's "Gaussian denoising" table, gray part).

    python scripts/train.py --config configs/denoise_gray.py:25 --workdir runs/dn_gray25

The text after ':' is the noise level: 15, 25 or 50, or `blind` (sigma per patch from [0, 55],
validated at 25); no ':' means 25. The model takes and returns one channel (in/out_channels = 1):
the DIV2K HR images are converted to gray (MATLAB rgb2gray) before the noise. Validation: Set12,
noise seeded per image. Where to get the data: docs/restoration.md.
"""

from mspan_jax.config_base import noise_level, restoration_config


def get_config(arg=None):
    config = restoration_config(channels=1)
    config.data.noise_sigma, config.data.noise_sigma_range = noise_level(arg)
    config.eval.datasets = ("set12",)
    return config
