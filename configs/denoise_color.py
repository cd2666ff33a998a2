"""MSPAN-IR colour Gaussian denoising (the paper's "Gaussian denoising" table, colour part).

    python scripts/train.py --config configs/denoise_color.py:25 --workdir runs/dn_color25
    python scripts/train.py --config configs/denoise_color.py:blind --workdir runs/dn_color_blind

The text after ':' is the noise level: 15, 25 or 50 (one model per level, as DnCNN-S / FFDNet tables
report), or `blind` (sigma drawn per patch from [0, 55], DnCNN-B style; validated at sigma 25). No
':' means 25. Training: fresh noise on every 128x128 patch of the DIV2K HR images (tfds `div2k`, or
`--config.data.source=div2k_folder --config.data.train_dir=...`); validation: CBSD68 with noise seeded
per image, scored on RGB. Where to get the data: docs/restoration.md.
"""

from mspan_jax.config_base import noise_level, restoration_config


def get_config(arg=None):
    config = restoration_config(channels=3)
    config.data.noise_sigma, config.data.noise_sigma_range = noise_level(arg)
    config.eval.datasets = ("cbsd68",)
    return config
