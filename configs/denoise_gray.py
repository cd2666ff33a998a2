"""MSPAN-IR grayscale Gaussian denoising: the MSPAN paper's "Gaussian denoising" table (gray, as
DuRN's, whose protocol it follows) at 30 / 50 / 70, and the DnCNN levels 15 / 25.

    python scripts/train.py --config configs/denoise_gray.py:50 --workdir runs/dn_gray50 \
        --config.data.manual_dir=../shared/data

The text after ':' is the noise level: 30, 50 or 70 (the paper's table), 15 or 25, or `blind` (sigma
per patch from [0, 55], validated at 25); no ':' means 25. The model takes and returns one channel
(in/out_channels = 1): the DIV2K HR images are converted to gray (MATLAB rgb2gray) before the noise.
Validation: at 30 / 50 / 70, BSD68 gray (CBSD68 through rgb2gray, reachable from ../shared/data; the
paper's and DuRN's own test set is the 200 BSD500 test images, docs/restoration.md); at 15 / 25 /
blind, Set12. Noise seeded per image. Where to get the data: docs/restoration.md.
"""

from mspan_jax.config_base import PAPER_NOISE_LEVELS, noise_level, restoration_config


def get_config(arg=None):
    config = restoration_config(channels=1)
    config.data.noise_sigma, config.data.noise_sigma_range = noise_level(arg)
    paper_level = not config.data.noise_sigma_range and config.data.noise_sigma in PAPER_NOISE_LEVELS
    config.eval.datasets = ("cbsd68",) if paper_level else ("set12",)
    return config
