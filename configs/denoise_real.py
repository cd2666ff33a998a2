"""MSPAN-IR real-world denoising on paired noisy / clean sRGB images.

    python scripts/train.py --config configs/denoise_real.py --workdir runs/dn_real \
        --config.data.train_dir=~/ir_data/polyu/train --config.data.manual_dir=~/ir_data
    python scripts/train.py --config configs/denoise_real.py:sidd --workdir runs/dn_sidd \
        --config.data.train_dir=~/ir_data/sidd/train --config.data.manual_dir=~/ir_data

The text after ':' names the benchmark: `polyu` (default; the MSPAN paper's "real-world denoising"
table, which follows DuRN: the PolyU real-world noisy images of Xu et al. 2018, DuRN's 100 test crops
of 512x512) or `sidd` (SIDD-Medium sRGB). Training pairs: `<train_dir>/LQ/` (noisy) and
`<train_dir>/GT/` (clean), matched by file name (`..._real.PNG` <-> `..._mean.PNG`,
`NOISY_SRGB_010.PNG` <-> `GT_SRGB_010.PNG`); validation: the tfds `paired_folders/<set>` test split,
prepared from `<manual_dir>/<set>/test/{LQ,GT}/`, scored on RGB as DuRN and SIDD do. How to lay the
sets out: docs/restoration.md.
"""

from mspan_jax.config_base import restoration_config
from mspan_jax.errors import ConfigError

REAL_NOISE_SETS = ("polyu", "sidd")


def get_config(arg=None):
    name = "polyu" if arg is None or str(arg).strip() == "" else str(arg).strip().lower()
    if name not in REAL_NOISE_SETS:
        raise ConfigError(f"real-noise set {arg!r}: use one of {list(REAL_NOISE_SETS)}, e.g. "
                         "--config configs/denoise_real.py:sidd")
    config = restoration_config(channels=3)
    config.data.source = "paired"
    config.eval.datasets = (name,)
    return config
