"""Preemption: SIGTERM at a random moment after the first step makes the run save and exit 143 with
one line; the same command then resumes to the straight run's params (two processes preempted:
test_gcs.py, on a bucket). With
grain workers, SIGTERM or Ctrl-C sent to the whole process group (as schedulers and terminals do)
ends them quietly; the "run the same command again" hint is only given when a checkpoint exists."""

from __future__ import annotations

import random
import signal
import time

import pytest
from conftest import (
    FIRST_STEP_LINE,
    TrainProcess,
    assert_quiet,
    max_tree_diff,
    tiny_train_config_source,
)

from mspan_jax.checkpoints.workdir import load_latest_state
from mspan_jax.cli import load_config
from mspan_jax.train import loop
from mspan_jax.train.checkpoint import saved_steps

pytestmark = pytest.mark.slow  # training runs in subprocesses, minutes on 2 cores
# Steps of the SIGTERM run: its signal comes 0-0.5 s after the first step, and 200 steps with 2 grain
# workers take seconds even on an idle CPU, so it always lands inside the run.
STEPS = 200

def test_sigterm_saves_and_the_same_command_resumes_exactly(tmp_path):
    config = tmp_path / "tiny.py"  # 2 grain workers; only the SIGTERM save before the end
    config.write_text(tiny_train_config_source(
        data__num_workers=2, train__num_steps=STEPS, train__log_every_steps=10,
        train__checkpoint_every_steps=STEPS, train__eval_every_steps=STEPS))
    workdir = tmp_path / "run"

    run = TrainProcess(config, workdir)
    run.wait_for_output(FIRST_STEP_LINE)
    time.sleep(random.uniform(0.0, 0.5))  # a random moment after the first step
    run.signal_group(signal.SIGTERM)  # as a scheduler does: the trainer and its workers
    code, out, err = run.finish()
    assert code == 143, err[-3000:]
    assert_quiet(err)
    (saved,) = saved_steps(workdir)
    assert 1 <= saved < STEPS
    assert err.strip().splitlines()[-1] == (f"SIGTERM: saved the checkpoint of step {saved} in "
                                            f"{workdir / 'checkpoints'}; run the same command again "
                                            "to resume")

    code, out, err = TrainProcess(config, workdir).finish()  # the same command
    assert code == 0, err[-3000:]
    assert f"at step {saved}" in out and f"step {STEPS}/{STEPS}" in out

    loop.train_and_evaluate(load_config(str(config)), str(tmp_path / "straight"))
    a, b = load_latest_state(tmp_path / "straight"), load_latest_state(workdir)
    assert int(a["step"]) == int(b["step"]) == STEPS
    for key in ("params", "opt_state"):
        assert max_tree_diff(a[key], b[key]) <= 1e-6, key


def test_ctrl_c_before_a_checkpoint_says_nothing_was_saved(tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(tiny_train_config_source(
        data__num_workers=2, train__num_steps=100000, train__checkpoint_every_steps=100000))
    run = TrainProcess(config, tmp_path / "run")
    run.wait_for_output(FIRST_STEP_LINE)
    run.signal_group(signal.SIGINT)  # what Ctrl-C in a terminal does
    code, _, err = run.finish()
    assert code == 130, err[-3000:]
    assert_quiet(err)
    assert err.strip().splitlines()[-1] == ("error: interrupted before the first checkpoint; nothing "
                                            "was saved")
