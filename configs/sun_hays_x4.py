"""The equal-budget comparison of MSPAN with IMDN, and the paper's attention ablation.

Every model trains on the 80 Sun & Hays photos (<shared>/data/Sun_Hays80, where <shared> is
$MSPAN_SHARED_DIR or else ../shared beside the repository, from any working folder:
`config_base.shared_dir`) with the same seed, data order, batch, patch, steps and cosine schedule,
and validates on Set5 x4 (its folder, with the published bicubic LR) at the end. The argument
after ':' picks the model:

    python scripts/train.py --config configs/sun_hays_x4.py:mspan --workdir /tmp/sh/mspan
    python scripts/train.py --config configs/sun_hays_x4.py:imdn --workdir /tmp/sh/imdn \
        --config.seed=1 --config.train.num_steps=30000   # second seed / GPU budget

`mspan` and `imdn` are the two papers' models; the rest are the paper's attention ablation
(`attention_comparison.png`): MSPAN with its block attention replaced (ABLATIONS). The defaults are
a CPU-sized budget (LR patch 24, batch 8, 600 steps); benchmarks/train_compare_gpu.sh overrides
them for the GPU budget.
"""

import ml_collections

from mspan_jax.config_base import shared_dir, sr_config
from mspan_jax.errors import ConfigError

# MSPAN variants of the paper's attention ablation: config.model keys changed from the default.
ABLATIONS: dict[str, dict] = {
    "mspan": {},  # MSPA in every IDDB
    "no_attention": dict(attention="none"),  # the paper's "baseline"
    "ca": dict(attention="ca"),  # RCAN's channel attention
    "esa": dict(attention="esa"),  # RFDN's enhanced spatial attention
}
MODELS = ("imdn", *ABLATIONS)


def get_config(arg: str = "mspan") -> ml_collections.ConfigDict:
    name = arg or "mspan"
    if name not in MODELS:
        raise ConfigError(f"configs/sun_hays_x4.py:{name}: unknown model; choose one of {list(MODELS)}")
    config = sr_config(model="imdn" if name == "imdn" else "mspan", scale=4)
    for key, value in ABLATIONS.get(name, {}).items():
        config.model[key] = value
    config.data.source = "folder"
    config.data.train_dir = str(shared_dir() / "data" / "Sun_Hays80")
    config.data.hr_patch_size = 96  # LR 24x24 on a CPU; the GPU run uses 192 (LR 48, the papers')
    config.data.num_workers = 0  # one input thread: the machine's cores go to the model
    config.train.batch_size = 8
    config.train.learning_rate = 1e-3  # short runs: a larger step, cosine-decayed to 0
    config.train.lr_schedule = "cosine"
    config.train.num_steps = 600
    config.train.steps_per_epoch = 1000
    config.train.log_every_steps = 100
    config.train.checkpoint_every_steps = 600
    config.train.eval_every_steps = 600  # validate once, at the end (equal for every model)
    config.eval.datasets = (str(shared_dir() / "data" / "Set5"),)
    config.eval.num_summary_images = 0
    return config
