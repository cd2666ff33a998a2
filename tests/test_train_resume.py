"""Checkpoint/resume: N steps straight == N/2, interrupted, resumed; NaN guard; model mismatch;
best/ and pruning; damaged checkpoints are caught and skipped."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_TRAIN_SETTINGS, flip_bytes, max_tree_diff, resumable_train_config

from mspan_jax.checkpoints.params import CheckpointError
from mspan_jax.checkpoints.workdir import load_latest_state, load_workdir_params
from mspan_jax.train import loop
from mspan_jax.train.checkpoint import TrainCheckpoints
from mspan_jax.train.state import create_optimizer, create_train_state

NUM_STEPS = TINY_TRAIN_SETTINGS["train.num_steps"]


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


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_a_straight_run(tmp_path, monkeypatch, capsys):
    config = resumable_train_config()
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
    assert max_tree_diff(a["params"], b["params"]) <= 1e-6
    assert max_tree_diff(a["ema_params"], b["ema_params"]) <= 1e-6
    assert max_tree_diff(a["opt_state"], b["opt_state"]) <= 1e-6
    assert max_tree_diff(a["params"], a["ema_params"]) > 0  # the EMA is kept apart from the params

    # eval_results.json: the documented layout, and the same numbers for both runs.
    saved = json.loads((straight / "eval_results.json").read_text())
    assert saved == results and saved["step"] == NUM_STEPS
    assert set(saved) == {"step", "skimage_holdout", "bicubic"}
    assert set(saved["bicubic"]["skimage_holdout"]) == {"psnr", "ssim"}
    assert resumed_results["skimage_holdout"]["psnr"] == pytest.approx(
        results["skimage_holdout"]["psnr"], abs=1e-3)

    # The best checkpoint holds the validated (EMA) params; a finished workdir is not retrained.
    best = load_workdir_params(straight, config.model)
    assert max_tree_diff(best, a["ema_params"]) == 0
    again = loop.train_and_evaluate(config, str(straight))
    assert again == results and "nothing to do" in capsys.readouterr().out

    # A damaged latest checkpoint is said, moved aside and skipped: the run resumes from the one
    # before it and ends where the straight run ended, never from the damaged values.
    flip_bytes(straight / "checkpoints" / str(NUM_STEPS))
    again = loop.train_and_evaluate(config, str(straight))
    out = capsys.readouterr().out
    assert f"damaged checkpoint: {straight / 'checkpoints' / str(NUM_STEPS)}: array " in out
    assert f"at step {NUM_STEPS // 2}" in out and (straight / "damaged" / str(NUM_STEPS)).is_dir()
    assert max_tree_diff(load_latest_state(straight)["params"], a["params"]) <= 1e-6

    # The workdir is refused for another scale, with a line naming both.
    with pytest.raises(CheckpointError, match="mspan x4 but config.model is mspan x2"):
        loop.train_and_evaluate(resumable_train_config(scale=2), str(straight))


@pytest.mark.slow
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = resumable_train_config()
    real = loop.create_train_iterator

    def poisoned(*args, **kwargs):
        batches = real(*args, **kwargs)
        start = kwargs.get("start_step", 0)

        def gen():
            for step in range(start + 1, NUM_STEPS + 1):
                batch = next(batches)
                if step == 5:
                    batch = dict(batch, hr=np.full(batch["hr"].shape, np.nan, np.float32))
                yield batch
            batches.close()

        return gen()

    monkeypatch.setattr(loop, "create_train_iterator", poisoned)
    with pytest.raises(loop.TrainingDivergedError, match="NaN/Inf at step 5.*last good checkpoint "
                       r"\(step 3\)"):
        loop.train_and_evaluate(config, str(tmp_path / "w"))
    assert int(load_latest_state(tmp_path / "w")["step"]) == 3


def _states(config, steps):
    """Small TrainStates (a 9 KB kernel, a bias, EMA kept) at `steps`, distinct values; no model."""
    tx, _ = create_optimizer(config.train)
    for step in steps:
        rng = np.random.default_rng(step)  # random: orbax stores it as is, not compressed away
        params = {"conv": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 16, 16)), jnp.float32),
                           "bias": jnp.arange(16.0) + step}}
        state = create_train_state(params, tx, ema_decay=0.9)
        yield state.replace(step=jnp.asarray(step, jnp.int32))


def _checkpoints(tmp_path, keep=3):
    config = resumable_train_config()
    config.train.keep_checkpoints = keep
    config.train.async_checkpointing = False
    return config, TrainCheckpoints(tmp_path / "w", config.train)


def test_best_keeps_the_highest_psnr_and_pruning_keeps_the_newest(tmp_path):
    config, ckpts = _checkpoints(tmp_path, keep=2)
    states = list(_states(config, [2, 4, 6, 8]))
    for state, psnr in zip(states, [30.0, 31.5, 29.0, 31.0], strict=True):
        ckpts.save(state, config.model)
        ckpts.save_best(int(state.step), state.params, psnr, config.model)
    assert ckpts.best_psnr() == 31.5
    ckpts.close()
    assert sorted(int(p.name) for p in (tmp_path / "w" / "checkpoints").iterdir()) == [6, 8]
    assert [p.name for p in (tmp_path / "w" / "best").iterdir() if p.name.isdigit()] == ["4"]
    best = load_workdir_params(tmp_path / "w", config.model)  # step 4's params, not the later 8's
    assert max_tree_diff(best, states[1].params) == 0
    assert int(load_latest_state(tmp_path / "w")["step"]) == 8


def test_a_relative_workdir_saves_and_resumes(tmp_path, monkeypatch):
    """`--workdir runs/x`, as users type it: orbax refuses to save to a relative folder."""
    monkeypatch.chdir(tmp_path)
    config = resumable_train_config()
    config.train.async_checkpointing = False
    ckpts = TrainCheckpoints("runs/x", config.train)
    (state,) = _states(config, [2])
    ckpts.save(state, config.model)
    ckpts.save_best(2, state.params, 30.0, config.model)
    ckpts.close()
    assert int(load_latest_state("runs/x")["step"]) == 2
    assert max_tree_diff(load_workdir_params("runs/x", config.model), state.params) == 0


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_is_skipped_and_none_intact_stops(tmp_path):
    config, ckpts = _checkpoints(tmp_path)
    states = list(_states(config, [2, 4, 6]))
    for state in states:
        ckpts.save(state, config.model)
    ckpts.save_best(6, states[2].params, 30.0, config.model)
    ckpts.close()
    run = tmp_path / "w"
    flip_bytes(run / "checkpoints" / "6")
    with pytest.raises(CheckpointError, match=f"{run / 'checkpoints' / '6'}: array .* does not match"):
        load_latest_state(run)
    flip_bytes(run / "best" / "6")
    with pytest.raises(CheckpointError, match=f"{run / 'best' / '6'}: array params/conv/.* does not"):
        load_workdir_params(run, config.model)

    said = []
    ckpts = TrainCheckpoints(run, config.train)
    abstract = jax.eval_shape(lambda: states[0])
    step, state = ckpts.restore(abstract, log=said.append)
    assert step == 4 and max_tree_diff(state, states[1]) == 0
    assert len(said) == 1 and said[0].startswith(f"damaged checkpoint: {run / 'checkpoints' / '6'}: "
                                                 "array ")
    assert (run / "damaged" / "6").is_dir() and ckpts.latest_step() == 4
    ckpts.save(states[2], config.model)  # the step can be written again
    ckpts.close()

    for step in (2, 4, 6):
        flip_bytes(run / "checkpoints" / str(step))
    ckpts = TrainCheckpoints(run, config.train)
    with pytest.raises(CheckpointError, match=r"no intact checkpoint \(steps \[2, 4, 6\] were damaged"):
        ckpts.restore(abstract, log=said.append)
    ckpts.close()
    assert len(said) == 4


def test_a_step_saved_before_checksums_resumes_with_a_warning(tmp_path):
    config, ckpts = _checkpoints(tmp_path)
    states = list(_states(config, [2]))
    ckpts.save(states[0], config.model)
    ckpts.close()
    meta_files = [p for p in (tmp_path / "w" / "checkpoints" / "2" / "meta").rglob("*")
                  if p.is_file() and '"checksums"' in p.read_text(errors="ignore")]
    assert len(meta_files) == 1, meta_files
    meta = json.loads(meta_files[0].read_text())
    del meta["checksums"]  # as written before checksums existed
    meta_files[0].write_text(json.dumps(meta))
    ckpts = TrainCheckpoints(tmp_path / "w", config.train)
    with pytest.warns(UserWarning, match="loaded unverified"):
        step, state = ckpts.restore(jax.eval_shape(lambda: states[0]), log=print)
    ckpts.close()
    assert step == 2 and max_tree_diff(state, states[0]) == 0


@pytest.mark.parametrize("key, saved, now", [("ema_decay", 0.0, 0.999), ("ema_decay", 0.9, 0.0),
                                             ("grad_clip_norm", 1.0, 0.0), ("grad_clip_norm", 0.0, 1.0)])
def test_a_changed_state_structure_is_a_config_change_not_damage(tmp_path, key, saved, now):
    """Resuming with a config that shapes the state otherwise (EMA on/off, clipping on/off) stops in
    one line naming the key, its saved value and the ways on; the healthy step stays where it is."""
    config, ckpts = _checkpoints(tmp_path)
    config.train[key] = saved
    ckpts = TrainCheckpoints(tmp_path / "w", config.train)
    tx, _ = create_optimizer(config.train)
    params = {"conv": {"kernel": jnp.ones((3, 3, 4, 4)), "bias": jnp.zeros(4)}}
    ckpts.save(create_train_state(params, tx, config.train.ema_decay), config.model)
    ckpts.close()

    config.train[key] = now
    tx, _ = create_optimizer(config.train)
    abstract = jax.eval_shape(lambda: create_train_state(params, tx, config.train.ema_decay))
    ckpts = TrainCheckpoints(tmp_path / "w", config.train)
    said = []
    with pytest.raises(CheckpointError) as raised:
        ckpts.restore(abstract, log=said.append)
    ckpts.close()
    message = str(raised.value)
    assert "\n" not in message and not said, (message, said)
    assert f"train.{key}={saved} when saved, {now:g} now" in message
    assert f"--config.train.{key}={saved:g}" in message
    assert f"--config.train.warm_start={tmp_path / 'w'}" in message
    assert (tmp_path / "w" / "checkpoints" / "0").is_dir() and not (tmp_path / "w" / "damaged").exists()


@pytest.mark.slow
def test_a_validation_the_run_did_not_finish_is_done_on_resume_and_cleanup_failures_hide_nothing(
        tmp_path, monkeypatch, capsys):
    """Ctrl-C during the last step's validation (the step already saved), and the checkpoint wait in
    the loop's cleanup failing as well: the Ctrl-C is what is raised, the workdir lock is released
    and the checkpoints are closed. The rerun validates that step: best/ and eval_results.json see
    the final weights."""
    from mspan_jax.train import validation
    from mspan_jax.train.workdir_lock import WorkdirLock

    config = resumable_train_config()
    workdir = tmp_path / "w"
    real_call, real_wait, real_close = (validation.Validator.__call__, TrainCheckpoints.wait,
                                        TrainCheckpoints.close)
    closed = []

    def interrupted(self, params):
        raise KeyboardInterrupt

    def failing_wait(self):
        real_wait(self)
        raise RuntimeError("wait failed")

    with monkeypatch.context() as m:
        m.setattr(validation.Validator, "__call__", interrupted)
        m.setattr(TrainCheckpoints, "wait", failing_wait)
        m.setattr(TrainCheckpoints, "close", lambda self: closed.append(1) or real_close(self))
        with pytest.raises(KeyboardInterrupt) as info:
            loop.train_and_evaluate(config, str(workdir))
    assert any("while stopping: RuntimeError: wait failed" in n for n in info.value.__notes__)
    assert closed and int(load_latest_state(workdir)["step"]) == NUM_STEPS
    assert not (workdir / "eval_results.json").exists()
    with WorkdirLock(workdir):  # released
        pass
    assert validation.Validator.__call__ is real_call

    results = loop.train_and_evaluate(config, str(workdir))
    out = capsys.readouterr().out
    assert f"validating step {NUM_STEPS} (saved, but the run stopped before its validation)" in out
    assert "nothing to do" in out
    assert json.loads((workdir / "eval_results.json").read_text()) == results
    assert results["step"] == NUM_STEPS
    final = load_latest_state(workdir)["ema_params"]
    assert max_tree_diff(load_workdir_params(workdir, config.model), final) == 0


def test_cleanup_runs_every_step_and_raises_the_first_failure():
    ran = []

    def fail(name):
        def step():
            ran.append(name)
            raise RuntimeError(name)
        return step

    with pytest.raises(RuntimeError, match="^a$"):
        loop._run_all([fail("a"), lambda: ran.append("b"), fail("c")], None)
    assert ran == ["a", "b", "c"]
    stopping = KeyboardInterrupt()
    loop._run_all([fail("d")], stopping)  # the run's own error stays the one raised
    assert stopping.__notes__ == ["then, while stopping: RuntimeError: d"]
