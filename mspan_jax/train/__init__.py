"""Training: `state` (TrainState, optimizer, schedule), `step` (the pure train step), `sharding`
(mesh, global batches), `checkpoint` (orbax), `summary` (TensorBoard events) and `loop`
(`train_and_evaluate`, what scripts/train.py runs). See docs/training.md."""
