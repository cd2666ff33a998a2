"""Training: `state` (TrainState, optimizer and schedule), `step` (the pure train step and
`make_train_step`, its jitted, sharded form), `sharding` (mesh, global batches), `warm_start` (step-0
params), `validation` (the Validator on `eval_suite`), `checkpoint` (orbax), `summary` (TensorBoard
events), `console` (printed lines), `workdir_lock` / `bucket_lease` (one run per local / gs://
workdir), `preemption` (SIGTERM saves, Ctrl-C stops), `lowering` (the step exported for TPU / CUDA)
and `loop` (`train_and_evaluate`, what scripts/train.py runs). See docs/training.md."""
