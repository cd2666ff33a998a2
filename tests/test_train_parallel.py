"""Data parallelism: 8 (virtual CPU) devices == 1 device, and 2 processes (jax.distributed over
localhost, gloo CPU collectives) == 1 process on the same global batches, resume included.

Both run in subprocesses: the device count and jax.distributed are fixed when JAX starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REPO_ROOT,
    free_port,
    max_tree_diff,
    read_tensorboard,
    subprocess_env,
    tiny_train_config_source,
)

from mspan_jax.checkpoints.workdir import load_latest_state
from mspan_jax.cli import load_config
from mspan_jax.train import loop

TIMEOUT = 300

TINY_CONFIG = tiny_train_config_source(
    train__batch_size=8, train__num_steps=4, train__learning_rate=1e-3, train__ema_decay=0.5,
    train__log_every_steps=1, eval__num_summary_images=1,
)


def _losses(workdir: Path) -> dict[int, float]:
    """train/loss per step from the run's TensorBoard events."""
    events = read_tensorboard(workdir / loop.TENSORBOARD_DIR)
    return {step: float(value) for step, _, value in events["train/loss"]}


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY_CONFIG)
    script = textwrap.dedent(f"""
        import jax
        from mspan_jax.train import loop
        exec(open({str(tmp_path / 'tiny.py')!r}).read())
        assert jax.device_count() == 8, jax.devices()
        loop.train_and_evaluate(get_config(), {str(tmp_path / 'eight')!r})
        loop.train_and_evaluate(get_config(), {str(tmp_path / 'one')!r}, devices=jax.devices()[:1])
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT,
                          env=subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global batch 8 on 8 device(s)" in proc.stdout
    assert "global batch 8 on 1 device(s)" in proc.stdout

    eight, one = load_latest_state(tmp_path / "eight"), load_latest_state(tmp_path / "one")
    assert int(eight["step"]) == int(one["step"]) == 4
    assert max_tree_diff(eight["params"], one["params"]) <= 1e-5
    assert max_tree_diff(eight["ema_params"], one["ema_params"]) <= 1e-5
    loss8, loss1 = _losses(tmp_path / "eight"), _losses(tmp_path / "one")
    assert sorted(loss8) == [1, 2, 3, 4]
    np.testing.assert_allclose([loss8[k] for k in loss1], list(loss1.values()), atol=1e-5)


def _two_processes(config_file: Path, workdir: Path, num_steps: int) -> list[str]:
    """Runs scripts/train.py as processes 0 and 1 of 2; returns their stderr."""
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "scripts/train.py", f"--config={config_file}", f"--workdir={workdir}",
         f"--config.train.num_steps={num_steps}", f"--coordinator_address=localhost:{port}",
         "--num_processes=2", f"--process_id={i}"],
        cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err[-3000:]
            outputs.append(out + err)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume(tmp_path, monkeypatch):
    config_file = tmp_path / "tiny.py"
    config_file.write_text(TINY_CONFIG)
    workdir = tmp_path / "two"
    first = _two_processes(config_file, workdir, num_steps=2)
    # Each process decoded only its own shard of the 5 training photos (3 + 2).
    assert "skimage shard 1/2: 3/3 images" in first[0]
    assert "skimage shard 2/2: 2/2 images" in first[1]
    assert int(load_latest_state(workdir)["step"]) == 2
    second = _two_processes(config_file, workdir, num_steps=4)
    assert "resumed from" in second[0] and "at step 2" in second[0]

    # One process fed the same global batches: process 0's shard rows, then process 1's.
    real = loop.create_train_iterator

    def both_shards(config, *, start_step=0, process_index=None, process_count=None, copy=True):
        parts = [real(config, start_step=start_step, process_index=p, process_count=2, copy=copy)
                 for p in (0, 1)]

        def gen():
            try:
                while True:
                    a, b = next(parts[0]), next(parts[1])
                    yield {k: np.concatenate([a[k], b[k]]) for k in a}
            finally:
                for part in parts:
                    part.close()

        return gen()

    monkeypatch.setattr(loop, "create_train_iterator", both_shards)
    loop.train_and_evaluate(load_config(str(config_file)), str(tmp_path / "one"))
    two, one = load_latest_state(workdir), load_latest_state(tmp_path / "one")
    assert int(two["step"]) == int(one["step"]) == 4
    assert max_tree_diff(two["params"], one["params"]) <= 1e-5
    assert max_tree_diff(two["opt_state"], one["opt_state"]) <= 1e-5
    loss2, loss1 = _losses(workdir), _losses(tmp_path / "one")
    assert sorted(loss2) == [1, 2, 3, 4]
    np.testing.assert_allclose([loss2[k] for k in sorted(loss2)], [loss1[k] for k in sorted(loss2)],
                               atol=1e-5)
    results = json.loads((workdir / "eval_results.json").read_text())
    assert results["step"] == 4 and "skimage_holdout" in results
