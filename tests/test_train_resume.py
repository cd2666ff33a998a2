"""Checkpoint/resume: N steps straight == N/2, interrupted, resumed; NaN guard; model mismatch."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from mspan_jax.config_base import sr_config
from mspan_jax.params_io import CheckpointError
from mspan_jax.train import loop
from mspan_jax.train.checkpoint import load_latest_state, load_workdir_params

NUM_STEPS = 6


def tiny_config(scale: int = 4):
    config = sr_config("mspan", scale)
    config.model.num_features = 8
    config.model.num_blocks = 1
    config.model.num_units = 1
    config.data.source = "skimage"
    config.data.hr_patch_size = 8 * scale
    config.data.prefetch = 1
    config.data.num_workers = 0  # in-process batches (grain workers: tests/test_pipeline.py)
    config.train.batch_size = 2
    config.train.num_steps = NUM_STEPS
    config.train.learning_rate = 1e-3
    config.train.ema_decay = 0.9
    config.train.grad_clip_norm = 1.0
    config.train.log_every_steps = 2
    config.train.checkpoint_every_steps = NUM_STEPS // 2
    config.train.eval_every_steps = 100  # validation only at the last step
    config.eval.datasets = ("skimage_holdout",)
    config.eval.num_summary_images = 1
    return config


def _interrupting(after: int):
    """A create_train_iterator that raises KeyboardInterrupt when batch `after + 1` is requested."""
    real = loop.create_train_iterator

    def create(*args, **kwargs):
        batches = real(*args, **kwargs)

        def gen():
            try:
                for _ in range(after):
                    yield next(batches)
                raise KeyboardInterrupt
            finally:
                batches.close()

        return gen()

    return create


def _max_diff(a, b) -> float:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(leaves_a, leaves_b,
                                                                                   strict=True))


def test_interrupted_and_resumed_run_equals_a_straight_run(tmp_path, monkeypatch, capsys):
    config = tiny_config()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    results = loop.train_and_evaluate(config, str(straight))

    with monkeypatch.context() as m:  # killed during step 5, after the checkpoint of step 3
        m.setattr(loop, "create_train_iterator", _interrupting(after=4))
        with pytest.raises(KeyboardInterrupt):
            loop.train_and_evaluate(config, str(resumed))
    assert int(load_latest_state(resumed)["step"]) == NUM_STEPS // 2
    assert not (resumed / "eval_results.json").exists()
    resumed_results = loop.train_and_evaluate(config, str(resumed))
    assert f"at step {NUM_STEPS // 2}" in capsys.readouterr().out

    a, b = load_latest_state(straight), load_latest_state(resumed)
    assert int(a["step"]) == int(b["step"]) == NUM_STEPS
    assert _max_diff(a["params"], b["params"]) <= 1e-6
    assert _max_diff(a["ema_params"], b["ema_params"]) <= 1e-6
    assert _max_diff(a["opt_state"], b["opt_state"]) <= 1e-6
    assert _max_diff(a["params"], a["ema_params"]) > 0  # the EMA is kept apart from the params

    # eval_results.json: the documented layout, and the same numbers for both runs.
    saved = json.loads((straight / "eval_results.json").read_text())
    assert saved == results and saved["step"] == NUM_STEPS
    assert set(saved) == {"step", "skimage_holdout", "bicubic"}
    assert set(saved["bicubic"]["skimage_holdout"]) == {"psnr", "ssim"}
    assert resumed_results["skimage_holdout"]["psnr"] == pytest.approx(
        results["skimage_holdout"]["psnr"], abs=1e-3)

    # The best checkpoint holds the validated (EMA) params; a finished workdir is not retrained.
    best = load_workdir_params(straight, config.model)
    assert _max_diff(best, a["ema_params"]) == 0
    again = loop.train_and_evaluate(config, str(straight))
    assert again == results and "nothing to do" in capsys.readouterr().out

    # The workdir is refused for another scale, with a line naming both.
    with pytest.raises(CheckpointError, match="mspan x4 but config.model is mspan x2"):
        loop.train_and_evaluate(tiny_config(scale=2), str(straight))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_config()
    real = loop.create_train_iterator

    def poisoned(*args, **kwargs):
        batches = real(*args, **kwargs)
        start = kwargs.get("start_step", 0)

        def gen():
            for step in range(start + 1, NUM_STEPS + 1):
                batch = next(batches)
                if step == 5:
                    batch = dict(batch, hr=np.full_like(batch["hr"], np.nan))
                yield batch
            batches.close()

        return gen()

    monkeypatch.setattr(loop, "create_train_iterator", poisoned)
    with pytest.raises(loop.TrainingDivergedError, match="NaN/Inf at step 5.*last good checkpoint "
                       r"\(step 3\)"):
        loop.train_and_evaluate(config, str(tmp_path / "w"))
    assert int(load_latest_state(tmp_path / "w")["step"]) == 3
