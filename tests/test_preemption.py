"""Preemption: SIGTERM at a random moment after the first step makes every process save at the same
step and exit 143 with one line; the same command then resumes to the straight run's params. With
grain workers, SIGTERM or Ctrl-C sent to the whole process group (as schedulers and terminals do)
ends them quietly; the "run the same command again" hint is only given when a checkpoint exists."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from conftest import (
    FIRST_STEP_LINE,
    TrainProcess,
    assert_quiet,
    free_port,
    max_tree_diff,
    subprocess_env,
    tiny_train_config_source,
)

from mspan_jax.checkpoints.workdir import load_latest_state
from mspan_jax.cli import load_config
from mspan_jax.train import loop
from mspan_jax.train.checkpoint import saved_steps

pytestmark = pytest.mark.slow  # training runs in subprocesses, minutes on 2 cores

def test_sigterm_saves_and_the_same_command_resumes_exactly(tmp_path):
    config = tmp_path / "tiny.py"  # 2 grain workers; only the SIGTERM save before the end
    config.write_text(tiny_train_config_source(
        data__num_workers=2, train__num_steps=1000, train__log_every_steps=10,
        train__checkpoint_every_steps=1000, train__eval_every_steps=1000))
    workdir = tmp_path / "run"

    run = TrainProcess(config, workdir)
    run.wait_for_output(FIRST_STEP_LINE)
    time.sleep(random.uniform(0.0, 0.5))  # a random moment after the first step
    run.signal_group(signal.SIGTERM)  # as a scheduler does: the trainer and its workers
    code, out, err = run.finish()
    assert code == 143, err[-3000:]
    assert_quiet(err)
    (saved,) = saved_steps(workdir)
    assert 1 <= saved < 1000
    assert err.strip().splitlines()[-1] == (f"SIGTERM: saved the checkpoint of step {saved} in "
                                            f"{workdir / 'checkpoints'}; run the same command again "
                                            "to resume")

    code, out, err = TrainProcess(config, workdir).finish()  # the same command
    assert code == 0, err[-3000:]
    assert f"at step {saved}" in out and "step 1000/1000" in out

    loop.train_and_evaluate(load_config(str(config)), str(tmp_path / "straight"))
    a, b = load_latest_state(tmp_path / "straight"), load_latest_state(workdir)
    assert int(a["step"]) == int(b["step"]) == 1000
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


def _launch_two(config: Path, workdir: Path) -> list[TrainProcess]:
    port = free_port()
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    return [TrainProcess(config, workdir, f"--coordinator_address=localhost:{port}", "--num_processes=2",
                 f"--process_id={i}", env=env) for i in range(2)]


def test_two_processes_agree_on_the_step_and_resume_exactly(tmp_path):
    """SIGTERM to process 1 only: both save the same step, the next multiple of log_every_steps
    (3); the same two commands then end where two processes run straight end."""
    every = 3
    config = tmp_path / "tiny.py"
    config.write_text(tiny_train_config_source(
        train__batch_size=8, train__num_steps=300, train__learning_rate=1e-3, train__ema_decay=0.5,
        train__log_every_steps=every, train__checkpoint_every_steps=1000,
        train__eval_every_steps=1000, eval__num_summary_images=1))
    workdir, straight = tmp_path / "two", tmp_path / "straight"
    runs = _launch_two(config, workdir)
    runs[0].wait_for_output(FIRST_STEP_LINE)
    time.sleep(random.uniform(0.0, 0.5))
    runs[1].proc.send_signal(signal.SIGTERM)
    results = [run.finish() for run in runs]
    (saved,) = saved_steps(workdir)
    assert saved % every == 0 and 1 <= saved < 300
    for code, _, err in results:
        assert code == 143, err[-3000:]
        assert_quiet(err)
        assert err.strip().splitlines()[-1].startswith(f"SIGTERM: saved the checkpoint of step {saved} ")

    for target in (workdir, straight):  # the same two commands again; two processes run straight
        results = [run.finish() for run in _launch_two(config, target)]
        for code, _, err in results:
            assert code == 0, err[-3000:]
        assert "step 300/300" in results[0][1]
        assert ("resumed from" in results[0][1]) == (target == workdir)  # the summary says "at step"

    a, b = load_latest_state(straight), load_latest_state(workdir)
    assert int(a["step"]) == int(b["step"]) == 300
    for key in ("params", "opt_state", "ema_params"):
        assert max_tree_diff(a[key], b[key]) <= 1e-6, key
