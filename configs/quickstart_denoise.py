"""MSPAN-IR colour denoising at sigma 25 in ~5 minutes on a 2-core CPU, with no download.

Trains the full-size MSPAN-IR (C=48, B=6) on the 5 photos bundled with scikit-image (fresh Gaussian
noise of sigma 25 on every patch) and validates on the 2 held-out ones (`skimage_holdout`, noise
seeded per image), against the noisy input and against scikit-image's non-local means with its
estimated sigma; eval_results.json holds all three (docs/restoration.md).

    python scripts/train.py --config configs/quickstart_denoise.py --workdir /tmp/quickstart_denoise
"""

from mspan_jax.config_base import restoration_config


def get_config():
    config = restoration_config(channels=3)
    config.data.source = "skimage"
    config.data.noise_sigma = 25.0
    config.data.hr_patch_size = 48
    # As configs/quickstart.py: small batches and a 5x learning rate, many cheap updates on a CPU.
    config.train.batch_size = 4
    config.train.learning_rate = 1e-3
    config.train.num_steps = 1200
    config.train.steps_per_epoch = 100
    config.train.lr_decay_epochs = 8  # halve the learning rate after 800 steps
    config.train.log_every_steps = 50
    config.train.checkpoint_every_steps = 400
    config.train.eval_every_steps = 600
    config.eval.datasets = ("skimage_holdout",)
    config.eval.classical_baseline = True  # non-local means beside the noisy input
    return config
