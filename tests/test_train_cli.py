"""scripts/train.py end to end: a run killed with SIGKILL resumes; bad input fails in one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import subprocess_env, tiny_train_config_source

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300

TINY_CONFIG = tiny_train_config_source()


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/train.py", *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `error:` line, checking there is no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG)
    return path


def test_killed_run_resumes_and_finishes(tmp_path, tiny_config):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "scripts/train.py", f"--config={tiny_config}", f"--workdir={workdir}",
         "--config.train.num_steps=100000"],
        cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not any(p.name.isdigit() for p in (workdir / "checkpoints").glob("*")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.2)
        time.sleep(0.5)  # likely mid-step or mid-save: nothing may depend on where it dies
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    saved = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    target = saved + 4
    resumed = _train(f"--config={tiny_config}", f"--workdir={workdir}",
                     f"--config.train.num_steps={target}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {workdir / 'checkpoints'} at step {saved}" in resumed.stdout
    assert f"step {target}/{target}" in resumed.stdout
    results = json.loads((workdir / "eval_results.json").read_text())
    assert results["step"] == target and set(results) == {"step", "skimage_holdout", "bicubic"}
    assert (workdir / "tensorboard").is_dir()

    # The workdir is also a checkpoint for evaluation (weights.load_weights reads its best params).
    from mspan_jax.weights import load_weights

    namespace: dict = {}
    exec(TINY_CONFIG, namespace)
    variables = load_weights(workdir, namespace["get_config"]().model)
    assert "upsampler" in variables["params"]

    # Another scale in the same workdir: refused in one line, naming both.
    other = _error_line(_train(f"--config={tiny_config}", f"--workdir={workdir}",
                               "--config.model.scale=2"))
    assert "mspan x4" in other and "mspan x2" in other


def test_bad_input_fails_in_one_line(tmp_path, tiny_config):
    unknown = _train(f"--config={tiny_config}", f"--workdir={tmp_path / 'a'}", "--config.train.nope=1")
    assert "unknown config key 'nope'" in _error_line(unknown) and unknown.returncode == 2

    assert "no such file" in _error_line(_train("--config=configs/nope.py", f"--workdir={tmp_path}"))

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = _error_line(_train(f"--config={tiny_config}", f"--workdir={blocker / 'run'}"))
    assert "not writable" in line and str(blocker / "run") in line

    # Multi-host flags: each wrong combination is one line, before any workdir is made.
    for flags, needle in ((["--multihost"], "--multihost: jax.distributed.initialize() found no"),
                          (["--coordinator_address=localhost:1"], "needs --num_processes and "
                           "--process_id"),
                          (["--coordinator_address=localhost:1", "--num_processes=2", "--process_id=2"],
                           "--process_id=2 must be in [0, --num_processes=2)"),
                          (["--num_processes=2", "--process_id=0"], "need --coordinator_address")):
        line = _error_line(_train(f"--config={tiny_config}", f"--workdir={tmp_path / 'mh'}", *flags))
        assert needle in line, (flags, line)
    assert not (tmp_path / "mh").exists()

    # configs/x4.py without DIV2K: fails fast, says how to get it, leaves no workdir behind.
    workdir = tmp_path / "x4"
    missing = _train("--config=configs/x4.py", f"--workdir={workdir}",
                     f"--config.data.data_dir={tmp_path / 'no_tfds'}")
    line = _error_line(missing)
    assert missing.returncode == 2 and "div2k" in line and "tfds build div2k" in line
    assert not workdir.exists()


def test_warm_start_from_official_imdn_validates_on_set5_at_the_paper_number(
        tmp_path, set5_dir, imdn_x4_weights):
    converted = tmp_path / "imdn_x4"
    convert = subprocess.run(
        [sys.executable, "scripts/convert_torch_weights.py", "--model=imdn", "--scale=4",
         f"--src={imdn_x4_weights}", f"--out={converted}"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
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
    # The validation picture: one row per shown image, bicubic | SR | HR crops of 128 pixels.
    from mspan_jax.data.images import read_image

    picture = read_image(workdir / "samples" / "set5_step0000001.png")
    assert picture.shape == (3 * 128, 3 * 128, 3)
    bicubic, sr, hr = (picture[:, i * 128:(i + 1) * 128].astype(float) for i in range(3))
    assert np.abs(sr - hr).mean() < np.abs(bicubic - hr).mean()
