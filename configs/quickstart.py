"""MSPAN x4 in minutes on a 2-core CPU, with no download: scikit-image's bundled photos.

Trains the full-size MSPAN x4 (C=48, B=6) on 5 bundled photos and validates on 2 held-out ones
(`skimage_holdout`), against bicubic. Only the schedule differs from configs/x4.py: small patches
and batches, a 10x learning rate decayed to 0 (cosine) and 1200 steps. Measured on three 2-core VMs
of this project (docs/results.md, "The quickstart"; deterministic on one machine, not across CPUs):
158 s wall, 29.89 dB / 0.8006 (older code); 377 s, 29.63 dB / 0.8027 (Flax's init, before issue
32), on that machine 336 s, 29.91 dB / 0.8031 (PyTorch's init, one device, the step schedule), and
with today's code 247 s, 29.92 dB / 0.8025; 124 s, 29.98 dB / 0.8037 (older code); bicubic
29.38 dB on the held-out photos.

    python scripts/train.py --config configs/quickstart.py --workdir /tmp/mspan_quickstart
"""

from mspan_jax.config_base import sr_config


def get_config():
    config = sr_config(model="mspan", scale=4)
    config.data.source = "skimage"
    config.data.hr_patch_size = 96  # LR patches of 24x24
    # Small batches and a 10x learning rate decayed to 0: on a CPU, many cheap updates beat few
    # large ones, and a run that ends at a learning rate of 0 ends on settled weights (the step
    # schedule's last validation swung by 0.5 dB between runs that differed in rounding only).
    config.train.batch_size = 4
    config.train.learning_rate = 2e-3
    config.train.lr_schedule = "cosine"
    config.train.num_steps = 1200
    config.train.steps_per_epoch = 100
    config.train.log_every_steps = 100
    config.train.checkpoint_every_steps = 400
    config.train.eval_every_steps = 600
    config.eval.datasets = ("skimage_holdout",)
    return config
