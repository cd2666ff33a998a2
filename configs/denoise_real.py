"""MSPAN-IR real-world denoising on SIDD-style paired noisy / clean sRGB images.

    python scripts/train.py --config configs/denoise_real.py --workdir runs/dn_real \
        --config.data.train_dir=~/ir_data/sidd/train --config.data.manual_dir=~/ir_data

Training pairs: `<train_dir>/LQ/` (noisy) and `<train_dir>/GT/` (clean), matched by file name
(`NOISY_SRGB_010.PNG` <-> `GT_SRGB_010.PNG`); validation: the tfds `paired_folders/sidd` test split,
prepared from `<manual_dir>/sidd/test/{LQ,GT}/` (e.g. the SIDD validation blocks saved as PNG), scored
on RGB as the SIDD benchmark does. How to lay out SIDD-Medium: docs/restoration.md.
"""

from mspan_jax.config_base import restoration_config


def get_config():
    config = restoration_config(channels=3)
    config.data.source = "paired"
    config.eval.datasets = ("sidd",)
    return config
