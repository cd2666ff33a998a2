"""Reading and writing a model's weights, below training: `params` (params checkpoints: what
convert_torch_weights.py and save_params.py write), `workdir` (the checkpoints a training workdir
holds, read without the optimizer), `checksums` (array hashes both record and verify) and `resolve`
(a --checkpoint path of either kind -> config, model and variables, for the scripts and `Upscaler`).
Nothing here imports `mspan_jax.train`; `train/checkpoint.py` builds the TrainState manager on it."""
