"""scripts/train.py end to end: a run SIGKILLed during an async save resumes to the straight run's
result; bad input fails in one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest
from conftest import REPO_ROOT, find_exact, one_line_error, run_script, subprocess_env

TIMEOUT = 300


def _train(*args: str) -> subprocess.CompletedProcess:
    """scripts/train.py in this process (conftest.run_script)."""
    return run_script("train.py", *args)


def _train_subprocess(*args: str) -> subprocess.CompletedProcess:
    """scripts/train.py in a fresh interpreter: the real command line, once per test file."""
    return subprocess.run([sys.executable, "scripts/train.py", *args], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)


# Runs the tiny config in-process and SIGKILLs itself right after the asynchronous save of step
# KILL_AT has started, while its background write is still in flight.
KILL_DURING_SAVE = """
import os, signal, sys
import jax
from mspan_jax.train import checkpoint
from mspan_jax.train.loop import train_and_evaluate

config_path, workdir, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
real_save = checkpoint.TrainCheckpoints.save

def save_then_die(self, state, model_config):
    real_save(self, state, model_config)
    if int(jax.device_get(state.step)) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

checkpoint.TrainCheckpoints.save = save_then_die
namespace = {}
exec(open(config_path).read(), namespace)
train_and_evaluate(namespace["get_config"](), workdir)
"""


def _step_dirs(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "checkpoints").iterdir())


@pytest.mark.slow
def test_killed_during_an_async_save_resumes_to_the_straight_result(tmp_path, tiny_config_file):
    from mspan_jax.checkpoints.workdir import load_latest_state

    straight, workdir = tmp_path / "straight", tmp_path / "run"
    # One device, as the killed and resumed runs below have (they run where JAX has started).
    done = _train_subprocess(f"--config={tiny_config_file}", f"--workdir={straight}",
                             "--config.train.cpu_devices=1")
    assert done.returncode == 0, done.stderr[-3000:]

    killed = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(tiny_config_file), str(workdir),
                             "4"], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finished = [int(name) for name in _step_dirs(workdir) if name.isdigit()]
    # Killed mid-save, step 4 is an uncommitted orbax temp dir (rarely, it was already committed).
    assert max(finished) == 4 or any(name.startswith("4.") for name in _step_dirs(workdir)), \
        _step_dirs(workdir)

    resumed = _train(f"--config={tiny_config_file}", f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {workdir / 'checkpoints'} at step {max(finished)}" in resumed.stdout
    assert "step 6/6" in resumed.stdout
    a, b = load_latest_state(straight), load_latest_state(workdir)
    assert int(a["step"]) == int(b["step"]) == 6
    chex.assert_trees_all_close(b["params"], a["params"], rtol=0, atol=1e-6)
    chex.assert_trees_all_close(b["opt_state"], a["opt_state"], rtol=0, atol=1e-6)
    results = json.loads((workdir / "eval_results.json").read_text())
    assert results == json.loads((straight / "eval_results.json").read_text())
    assert results["step"] == 6 and set(results) == {"step", "skimage_holdout", "bicubic"}
    assert (workdir / "tensorboard").is_dir()

    # The workdir is also a checkpoint for evaluation (resolve.load_weights reads its best params).
    from mspan_jax.checkpoints.resolve import load_weights
    from mspan_jax.cli import load_config

    variables = load_weights(workdir, load_config(str(tiny_config_file)).model)
    assert "upsampler" in variables["params"]

    # Another scale in the same workdir: refused in one line, naming both.
    other = one_line_error(_train(f"--config={tiny_config_file}", f"--workdir={workdir}",
                                  "--config.model.scale=2"))
    assert "mspan x4" in other and "mspan x2" in other


def test_bad_input_fails_in_one_line(tmp_path, tiny_config_file):
    unknown = _train(f"--config={tiny_config_file}", f"--workdir={tmp_path / 'a'}",
                     "--config.train.nope=1")
    assert "unknown config key 'nope'" in one_line_error(unknown)

    assert "no such file" in one_line_error(_train("--config=configs/nope.py", f"--workdir={tmp_path}"))

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_line_error(_train(f"--config={tiny_config_file}", f"--workdir={blocker / 'run'}"))
    assert "not writable" in line and str(blocker / "run") in line

    # Multi-host flags: each wrong combination is one line, before any workdir is made.
    for flags, needle in ((["--multihost"], "--multihost: jax.distributed.initialize() found no"),
                          (["--coordinator-address=localhost:1"], "needs --num-processes and "
                           "--process-id"),
                          (["--coordinator-address=localhost:1", "--num-processes=2", "--process-id=2"],
                           "--process-id=2 must be in [0, --num-processes=2)"),
                          (["--num-processes=2", "--process-id=0"], "need --coordinator-address"),
                          # The underscore spellings of earlier releases still reach the same checks.
                          (["--coordinator_address=localhost:1", "--num_processes=2", "--process_id=2"],
                           "--process-id=2 must be in [0, --num-processes=2)")):
        line = one_line_error(_train(f"--config={tiny_config_file}", f"--workdir={tmp_path / 'mh'}",
                                     *flags))
        assert needle in line, (flags, line)
    assert not (tmp_path / "mh").exists()

    # configs/x4.py without DIV2K: fails fast, says how to get it, leaves no workdir behind.
    workdir = tmp_path / "x4"
    missing = _train("--config=configs/x4.py", f"--workdir={workdir}",
                     f"--config.data.data_dir={tmp_path / 'no_tfds'}")
    line = one_line_error(missing)
    assert missing.returncode == 2 and "div2k" in line
    assert "python scripts/prepare_data.py --sets=div2k --scale=4 --data-dir=<dir>" in line, line
    assert not workdir.exists()


@pytest.mark.slow
def test_warm_start_from_official_imdn_validates_on_set5_at_the_paper_number(
        tmp_path, set5_dir, imdn_x4_weights):
    converted = tmp_path / "imdn_x4"
    convert = run_script("convert_torch_weights.py", "--model=imdn", "--scale=4",
                         f"--src={imdn_x4_weights}", f"--out={converted}")
    assert convert.returncode == 0, convert.stderr[-2000:]
    workdir = tmp_path / "run"
    proc = _train("--config=configs/imdn_x4.py", f"--workdir={workdir}",
                  f"--config.train.warm_start={converted}", "--config.train.learning_rate=0.0",
                  "--config.train.num_steps=1", "--config.train.batch_size=1",
                  "--config.data.source=skimage", "--config.data.hr_patch_size=64",
                  f"--config.data.data_dir={tmp_path / 'tfds'}",
                  f"--config.data.manual_dir={set5_dir.parent}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warm start from" in proc.stdout
    results = json.loads((workdir / "eval_results.json").read_text())
    # IMDN paper, Set5 x4: 32.21 / 0.8948 (the step had learning rate 0: the official weights).
    assert results["set5"]["psnr"] == pytest.approx(32.21, abs=0.01)
    assert results["set5"]["ssim"] == pytest.approx(0.8948, abs=0.0005)
    assert results["bicubic"]["set5"]["psnr"] < 29
    # The validation picture: one row per shown image, bicubic | SR | HR crops of 128 pixels in
    # equal cells, each labelled; the first row's crops are found by their exact pixels.
    from mspan_jax.data.images import read_image
    from mspan_jax.data.imresize import bicubic_downscale, bicubic_upscale

    picture = read_image(workdir / "samples" / "set5_step0000001.png")
    assert picture.shape[0] > 3 * 128 and picture.shape[1] > 3 * 128  # room for the labels
    hr_image = read_image(set5_dir / "HR" / "baby.bmp")
    h, w = hr_image.shape[:2]
    hr_crop = hr_image[(h - 128) // 2:(h + 128) // 2, (w - 128) // 2:(w + 128) // 2]
    bic = bicubic_upscale(bicubic_downscale(hr_image, 4), 4)
    bic_crop = bic[(h - 128) // 2:(h + 128) // 2, (w - 128) // 2:(w + 128) // 2]
    [(y, x_hr)], [(y_bic, x_bic)] = find_exact(picture, hr_crop), find_exact(picture, bic_crop)
    assert y == y_bic and x_bic < x_hr
    x_sr = (x_bic + x_hr) // 2
    sr, hr, bicubic = (picture[y:y + 128, x:x + 128].astype(float) for x in (x_sr, x_hr, x_bic))
    assert np.abs(sr - hr).mean() < np.abs(bicubic - hr).mean()

