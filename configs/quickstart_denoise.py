"""MSPAN-IR colour denoising at sigma 25 in minutes on a 2-core CPU, with no download.

Trains a narrower MSPAN-IR (figure (c) at C=32 instead of 54: 294,243 params; n=6 stages of an
IDDB of U=3 units and a LayerNorm + MLP of 2C) on the 5 photos bundled with scikit-image, fresh
Gaussian noise of sigma 25 on every patch, and validates on the 2 held-out ones (`skimage_holdout`,
noise seeded per image) against the noisy input and against scikit-image's non-local means with its
estimated sigma; eval_results.json holds all three. Measured numbers and wall time:
docs/restoration.md.

    python scripts/train.py --config configs/quickstart_denoise.py --workdir /tmp/quickstart_denoise
"""

from mspan_jax.config_base import restoration_config


def get_config():
    config = restoration_config(channels=3)
    # C=32 costs about a third of C=54's multiply-adds; on a CPU, steps are what counts.
    config.model.num_features = 32
    config.data.source = "skimage"
    config.data.noise_sigma = 25.0
    config.data.hr_patch_size = 32
    # As configs/quickstart.py: small batches and a 5x learning rate, many cheap updates on a CPU,
    # and an EMA of the weights for validation, which smooths that learning rate's noise.
    config.train.batch_size = 4
    config.train.learning_rate = 1e-3
    config.train.ema_decay = 0.995
    # Figure (c)'s network (LayerNorm + MLP stages, Tanh tail) converges slowly: at 2,000 steps it only
    # ties non-local means (30.00 against 30.02 dB), so 3,000 steps.
    config.train.num_steps = 3000
    config.train.steps_per_epoch = 100
    config.train.lr_decay_epochs = 21  # halve the learning rate after 2,100 steps
    config.train.log_every_steps = 100
    config.train.checkpoint_every_steps = 500
    config.train.eval_every_steps = 500
    config.eval.datasets = ("skimage_holdout",)
    config.eval.classical_baseline = True  # non-local means beside the noisy input
    return config
