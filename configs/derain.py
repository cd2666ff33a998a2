"""MSPAN-IR rain-streak removal on paired rainy / clean images.

    python scripts/train.py --config configs/derain.py --workdir runs/derain_didmdn \
        --config.data.train_dir=~/ir_data/didmdn/train --config.data.manual_dir=~/ir_data
    python scripts/train.py --config configs/derain.py:rain100l --workdir runs/derain_l \
        --config.data.train_dir=~/ir_data/rain100l/train --config.data.manual_dir=~/ir_data

The text after ':' names the benchmark: `didmdn` (default; the MSPAN paper's "rain-streak removal"
table, which follows DuRN: DID-MDN's 12,000 training and 1,200 test pairs, Zhang & Patel 2018),
`rain100l` or `rain100h`. The training pairs are its `train/` folder (`<train_dir>/LQ/` rainy,
`<train_dir>/GT/` clean, matched by name: `rain-001.png` <-> `norain-001.png`; DID-MDN's side-by-side
images are split into LQ/GT by scripts/prepare_restoration_data.py) and validation is the tfds
`paired_folders/<set>` test split from `<manual_dir>/<set>/test/{LQ,GT}/`. PSNR / SSIM on the Y
channel, as the deraining literature reports them (MATLAB's Y here; DuRN's is OpenCV's, see
docs/restoration.md). Data: docs/restoration.md.
"""

from mspan_jax.config_base import restoration_config
from mspan_jax.errors import ConfigError

DERAIN_SETS = ("didmdn", "rain100l", "rain100h")


def get_config(arg=None):
    name = "didmdn" if arg is None or str(arg).strip() == "" else str(arg).strip().lower()
    if name not in DERAIN_SETS:
        raise ConfigError(f"deraining set {arg!r}: use one of {list(DERAIN_SETS)}, e.g. "
                          "--config configs/derain.py:rain100h")
    config = restoration_config(channels=3, task="derain")
    config.data.source = "paired"
    config.eval.datasets = (name,)
    config.eval.y_channel = True
    return config
