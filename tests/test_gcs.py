"""Training on a bucket (gs://) against a GCS emulator on loopback (tests/gcs_emulator.py): a missing
client and a missing or unreachable bucket fail in one line; the whole workflow (checkpoints, best/,
eval_results.json, TensorBoard, sample pictures, resume, the params export, evaluate.py and
upscale.py reading the bucket) runs with only STORAGE_EMULATOR_HOST set; the one-run-per-workdir
lease; two processes preempted with SIGTERM resume to the straight run's params; SIGKILL of a run
leaves only complete checkpoints to resume from; transient 503s are retried and a permanent failure
stops in one line with the earlier checkpoint intact."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    FIRST_STEP_LINE,
    REPO_ROOT,
    TrainProcess,
    assert_quiet,
    max_tree_diff,
    tiny_train_config_source,
)
from gcs_emulator import Emulator, FaultyProxy, client_env, free_port, serving

from mspan_jax.extras import MissingExtraError

pytestmark = pytest.mark.gcs
TIMEOUT = 300


@pytest.fixture(scope="session")
def emulator(tmp_path_factory) -> Iterator[Emulator]:
    """One emulator for the session (tensorstore reads its endpoint once per process)."""
    with serving(tmp_path_factory.mktemp("gcs") / "emulator.log") as server:
        yield server


def _env(url: str, **extra: str) -> dict[str, str]:
    """A script's environment: this checkout importable, the CPU, STORAGE_EMULATOR_HOST=url."""
    env = client_env(url)
    env.pop("XLA_FLAGS", None)
    env.update(PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu", **extra)
    return env


def _script(name: str, *args: object, url: str, timeout: float = TIMEOUT,
            **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / name), *map(str, args)],
                          cwd=REPO_ROOT, env=_env(url, **env), capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_a_missing_client_names_the_extra(monkeypatch):
    from mspan_jax import extras, storage

    monkeypatch.setitem(extras.EXTRAS, "gcs", ("gcsfs_not_installed",))
    with pytest.raises(MissingExtraError, match=r"--workdir gs://b/run: needs the \[gcs\] extra .*"
                                                r"pip install -e '\.\[gcs\]'"):
        storage.check_bucket("gs://b/run", "--workdir")
    storage.check_bucket("/tmp/local", "--workdir")  # local paths need no client


def test_project_sets_the_environment_of_every_layer(emulator):
    """A fresh interpreter with only STORAGE_EMULATOR_HOST: importing the package points gcsfs and
    tensorstore at it and keeps epath off TensorFlow's GCS client."""
    code = ("import os, mspan_jax, fsspec; print(*[os.environ.get(k) for k in ('EPATH_USE_TF', "
            "'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'TENSORSTORE_GCS_HTTP_URL', "
            "'GOOGLE_AUTH_TOKEN_FOR_TESTING')], fsspec.config.conf.get('gcs'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_env(emulator.url),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["false", "false", emulator.url, "emulator", "{'use_listings_cache':",
                                   "False,", "'token':", "'anon'}"]


@pytest.mark.slow  # two train.py processes
def test_missing_or_unreachable_bucket_fails_in_one_line(emulator, tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(tiny_train_config_source())
    proc = _script("train.py", f"--config={config}", "--workdir=gs://no-such-bucket/run",
                   url=emulator.url)
    assert "bucket gs://no-such-bucket does not exist" in _one_line_error(proc)
    closed = f"http://127.0.0.1:{free_port()}"
    proc = _script("train.py", f"--config={config}", "--workdir=gs://any/run", url=closed)
    assert "cannot reach bucket gs://any" in _one_line_error(proc)


def test_lease_refuses_a_second_run_and_takes_over_an_expired_one(emulator):
    from mspan_jax.train.bucket_lease import BucketLease, lock_for
    from mspan_jax.train.workdir_lock import WorkdirInUseError

    workdir = f"gs://{emulator.new_bucket()}/run"
    first = lock_for(workdir)
    assert isinstance(first, BucketLease)
    assert first.acquire() is None
    with pytest.raises(WorkdirInUseError, match=r"--workdir gs://.*/run is in use by another training "
                                                 r"run \(pid \d+ on .* since .*; lease"):
        BucketLease(workdir).acquire()
    first.release()
    stale = BucketLease(workdir, ttl_s=-1.0)  # what a killed holder leaves: a lease that expired
    stale._info = {"host": "gone", "pid": 1, "since": "then"}
    stale._write("0")
    third = BucketLease(workdir)
    note = third.acquire()
    assert note.startswith(f"took over {workdir}/.train.lock: its holder (pid 1 on gone since then) "
                           "stopped renewing it")
    third.release()


def _read_blob(url: str) -> bytes:
    import fsspec

    with fsspec.open(url, "rb") as f:
        return f.read()


@pytest.mark.slow
def test_train_resume_export_evaluate_and_upscale_on_a_bucket(emulator, tmp_path):
    import fsspec
    from conftest import read_tensorboard

    bucket = emulator.new_bucket()
    workdir = f"gs://{bucket}/runs/tiny"
    config = tmp_path / "tiny.py"
    config.write_text(tiny_train_config_source(train__eval_every_steps=2, eval__num_summary_images=1))
    proc = _script("train.py", f"--config={config}", f"--workdir={workdir}",
                   "--config.train.num_steps=2", url=emulator.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _script("train.py", f"--config={config}", f"--workdir={workdir}", url=emulator.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "at step 2" in proc.stdout

    fs = fsspec.filesystem("gs")
    names = {p.split(f"{bucket}/runs/tiny/", 1)[1] for p in fs.find(f"{bucket}/runs/tiny")}
    assert {"checkpoints/4/meta/metadata", "eval_results.json"} <= names, sorted(names)
    assert any(n.startswith("best/") for n in names)
    assert any(n.startswith("samples/skimage_holdout_step0000006") for n in names), sorted(names)
    assert not any(n.endswith(".train.lock") for n in names)  # the lease was released
    results = json.loads(_read_blob(f"{workdir}/eval_results.json"))
    assert results["step"] == 6 and "skimage_holdout" in results
    events = [n for n in names if n.startswith("tensorboard/events.out.tfevents")]
    assert len(events) == 2
    local_tb = tmp_path / "tb"
    local_tb.mkdir()
    for name in events:
        (local_tb / Path(name).name).write_bytes(_read_blob(f"{workdir}/{name}"))
    scalars = read_tensorboard(local_tb)
    assert sorted(step for step, _, _ in scalars["train/loss"]) == [2, 4, 6]

    export = f"gs://{bucket}/exports/tiny"
    proc = _script("save_params.py", f"--checkpoint={workdir}", f"--out={export}", url=emulator.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hr = tmp_path / "hr"
    hr.mkdir()
    rng = np.random.default_rng(0)
    from mspan_jax.data.images import write_image

    write_image(hr / "a.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    proc = _script("evaluate.py", f"--checkpoint={workdir}", f"--hr-dir={hr}", url=emulator.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "psnr" in proc.stdout.lower(), proc.stdout
    out = tmp_path / "up"
    proc = _script("upscale.py", f"--checkpoint={export}", f"--input={hr / 'a.png'}", f"--output={out}",
                   url=emulator.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "a_x4.png").is_file()


def _launch_two(config: Path, workdir: str, url: str) -> list[TrainProcess]:
    """The two processes of one run (2 CPU devices each) into `workdir`."""
    port = free_port()
    env = _env(url, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    return [TrainProcess(config, workdir, f"--coordinator-address=localhost:{port}",
                         "--num-processes=2", f"--process-id={i}", env=env) for i in range(2)]


@pytest.mark.slow
def test_two_processes_preempted_on_a_bucket_resume_to_the_straight_run(emulator, tmp_path):
    """2 processes x 2 CPU devices into one gs:// workdir; SIGTERM to process 1 at a random moment:
    both save the same step and exit 143; the same two commands end at a local straight run's
    params (the suite's one SIGTERM test of a multi-process run)."""

    from mspan_jax.checkpoints.workdir import load_latest_state
    from mspan_jax.train.checkpoint import saved_steps

    every, steps = 3, 60
    config = tmp_path / "tiny.py"
    config.write_text(tiny_train_config_source(
        train__batch_size=8, train__num_steps=steps, train__learning_rate=1e-3, train__ema_decay=0.5,
        train__log_every_steps=every, train__checkpoint_every_steps=1000,
        train__eval_every_steps=1000, eval__num_summary_images=1))
    workdir = f"gs://{emulator.new_bucket()}/two"
    runs = _launch_two(config, workdir, emulator.url)
    runs[0].wait_for_output(FIRST_STEP_LINE)
    time.sleep(random.uniform(0.0, 0.5))
    runs[1].proc.send_signal(signal.SIGTERM)
    results = [run.finish() for run in runs]
    (saved,) = saved_steps(workdir)
    assert saved % every == 0 and 1 <= saved < steps
    for code, _, err in results:
        assert code == 143, err[-3000:]
        assert_quiet(err)
        assert err.strip().splitlines()[-1].startswith(f"SIGTERM: saved the checkpoint of step {saved} ")

    straight = tmp_path / "straight"
    for target in (workdir, str(straight)):
        results = [run.finish() for run in _launch_two(config, target, emulator.url)]
        for code, _, err in results:
            assert code == 0, err[-3000:]
        assert f"step {steps}/{steps}" in results[0][1]
        assert ("resumed from" in results[0][1]) == (target == workdir)

    a, b = load_latest_state(straight), load_latest_state(workdir)
    assert int(a["step"]) == int(b["step"]) == steps
    for key in ("params", "opt_state", "ema_params"):
        assert max_tree_diff(a[key], b[key]) <= 1e-6, key


@pytest.mark.slow
def test_transient_storage_errors_are_retried_and_training_goes_on(emulator, tmp_path):
    """Every 8th request to storage answers 503 (a proxy in front of the emulator): gcsfs and
    tensorstore retry, and the run ends with all its checkpoints."""
    from mspan_jax.train.checkpoint import saved_steps

    proxy = FaultyProxy(emulator.url, every=8)
    try:
        config = tmp_path / "tiny.py"
        config.write_text(tiny_train_config_source(train__num_steps=4))
        workdir = f"gs://{emulator.new_bucket()}/run"
        proc = _script("train.py", f"--config={config}", f"--workdir={workdir}", url=proxy.url)
    finally:
        proxy.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.failed >= 5, proxy.failed
    assert saved_steps(workdir) == [2, 4]


@pytest.mark.slow
def test_sigkill_while_saving_to_a_bucket_resumes_from_a_complete_checkpoint(emulator, tmp_path):
    """A checkpoint every step, SIGKILL at a random moment (most likely inside a save): the same
    command resumes from a complete checkpoint and ends at the straight run's params."""
    from mspan_jax.checkpoints.workdir import load_latest_state
    from mspan_jax.cli import load_config
    from mspan_jax.train import loop

    config = tmp_path / "tiny.py"
    config.write_text(tiny_train_config_source(train__num_steps=40, train__checkpoint_every_steps=1,
                                               train__eval_every_steps=1000))
    workdir = f"gs://{emulator.new_bucket()}/run"
    run = TrainProcess(config, workdir, env=_env(emulator.url))
    run.wait_for_output(FIRST_STEP_LINE)
    time.sleep(random.uniform(0.5, 2.0))
    run.signal_group(signal.SIGKILL)
    assert run.finish()[0] == -signal.SIGKILL
    time.sleep(1)  # the lease of the killed run is still fresh: take it over as after its expiry
    import fsspec

    fsspec.filesystem("gs").rm(f"{workdir}/.train.lock".removeprefix("gs://"))
    code, out, err = TrainProcess(config, workdir, env=_env(emulator.url)).finish()
    assert code == 0, err[-3000:]
    assert "step 40/40" in out

    straight = load_config(str(config))
    straight.train.checkpoint_every_steps = 40  # its last step is all it is compared by
    loop.train_and_evaluate(straight, str(tmp_path / "straight"))
    a, b = load_latest_state(tmp_path / "straight"), load_latest_state(workdir)
    assert int(a["step"]) == int(b["step"]) == 40
    for key in ("params", "opt_state"):
        assert max_tree_diff(a[key], b[key]) <= 1e-6, key


@pytest.mark.slow
def test_a_permanent_storage_failure_stops_in_one_line_with_a_checkpoint_intact(emulator, tmp_path):
    """Once a checkpoint is in the bucket, every write to it fails (403 from a proxy): the run stops
    in one line naming the workdir and its newest checkpoint, which reads back whole."""
    from mspan_jax.checkpoints.workdir import load_latest_state
    from mspan_jax.train.checkpoint import saved_steps

    proxy = FaultyProxy(emulator.url)
    try:
        config = tmp_path / "tiny.py"
        config.write_text(tiny_train_config_source(
            train__num_steps=1000, train__checkpoint_every_steps=2, train__eval_every_steps=1000))
        workdir = f"gs://{emulator.new_bucket()}/run"
        run = TrainProcess(config, workdir, env=_env(proxy.url))
        deadline = time.monotonic() + TIMEOUT
        while not saved_steps(workdir):
            assert run.proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        proxy.broken = True
        code, out, err = run.finish()
    finally:
        proxy.stop()
    assert "step 1000/1000" not in out
    line = _one_line_error(subprocess.CompletedProcess([], code, out, err))
    assert line.startswith(f"error: --workdir {workdir}: storage failed while saving a checkpoint ("), \
        line
    kept = saved_steps(workdir)
    assert kept and f"the checkpoint of step {kept[-1]} is intact" in line, (line, kept)
    assert "run the same command again" in line, line
    assert int(load_latest_state(workdir)["step"]) == kept[-1]


@pytest.mark.slow
def test_tfds_div2k_and_set5_prepared_into_a_bucket_train_and_evaluate(emulator, tmp_path, monkeypatch):
    """scripts/prepare_data.py builds tfds DIV2K (from DIV2K-shaped zips) and Set5 into a gs://
    data_dir; a run on another machine (an empty cache folder) trains from the bucket's DIV2K,
    validates on its Set5, and evaluate.py scores Set5 from the bucket. (In this process, whose
    environment `serving` points at the emulator: a fresh interpreter per script would add ~10 s
    of imports each.)"""
    import fsspec
    from conftest import div2k_zips, random_rgb, run_script, save_png

    manual = div2k_zips(tmp_path / "manual", train=3, valid=1)
    for k in range(5):
        save_png(manual / "Set5" / "HR" / f"img{k}.png", random_rgb(24, 24, 10 + k))
    data_dir = f"gs://{emulator.new_bucket()}/tfds"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache0"))
    proc = run_script("prepare_data.py", "--sets=div2k,set5", "--scale=4", f"--data-dir={data_dir}",
                      f"--manual-dir={manual}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tfds div2k/bicubic_x4: uploaded" in proc.stdout, proc.stdout
    assert "set5 BI x4 (5 images): uploaded" in proc.stdout, proc.stdout
    fs = fsspec.filesystem("gs")
    names = {p.split("/tfds/", 1)[1] for p in fs.find(data_dir.removeprefix("gs://"))}
    assert "div2k/bicubic_x4/2.0.0/dataset_info.json" in names, sorted(names)
    assert "set5/bi_x4/1.0.0/dataset_info.json" in names, sorted(names)

    config = tmp_path / "tiny.py"
    config.write_text(tiny_train_config_source(
        data__source="div2k", data__data_dir=data_dir, eval__datasets=("set5",),
        train__num_steps=2, train__eval_every_steps=2, eval__num_summary_images=0))
    workdir = f"gs://{emulator.new_bucket()}/run"
    cache = tmp_path / "cache1"  # another machine: nothing local yet
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    proc = run_script("train.py", f"--config={config}", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(_read_blob(f"{workdir}/eval_results.json"))
    assert results["step"] == 2 and "set5" in results, results
    local = cache / "mspan_jax" / "tfds" / data_dir.removeprefix("gs://")
    assert (local / "div2k" / "bicubic_x4" / "2.0.0" / "dataset_info.json").is_file()
    assert (local / "set5" / "bi_x4" / "1.0.0" / "dataset_info.json").is_file()

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    proc = run_script("evaluate.py", f"--checkpoint={workdir}", "--datasets=set5",
                      f"--data-dir={data_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "set5" in proc.stdout.lower(), proc.stdout
