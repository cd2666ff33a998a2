"""One run per workdir: a live holder refuses a second trainer in one line; a killed one's lock is taken
over, and a trainer killed with SIGKILL leaves no grain worker behind and resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, run_script, subprocess_env, tiny_train_config_source

from mspan_jax.train.workdir_lock import LOCK_FILE, WorkdirInUseError, WorkdirLock

TIMEOUT = 300
HOLD = ("import sys, time\nfrom mspan_jax.train.workdir_lock import WorkdirLock\n"
        "WorkdirLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n")


def _wait_for(predicate, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _children(pid: int) -> set[int]:
    """Live child processes of `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_second_trainer_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = tmp_path / "tiny.py"
    config.write_text(tiny_train_config_source())
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=REPO_ROOT,
                              env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = run_script("train.py", f"--config={config}", f"--workdir={workdir}")
        assert second.returncode != 0 and "Traceback" not in second.stderr, second.stderr[-2000:]
        (line,) = [x for x in second.stderr.splitlines() if x.startswith("error: ")]
        assert f"--workdir {workdir} is in use by another training run (pid {holder.pid} on " \
               f"{socket.gethostname()} since 20" in line
        assert not (workdir / "checkpoints").exists()  # the refused run wrote nothing
        with pytest.raises(WorkdirInUseError, match=f"pid {holder.pid}"):
            WorkdirLock(workdir).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)

    lock = WorkdirLock(workdir)
    note = lock.acquire()
    assert note is not None and f"pid {holder.pid} on {socket.gethostname()}" in note
    assert json.loads((workdir / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (workdir / LOCK_FILE).exists()
    with WorkdirLock(workdir) as again:  # a cleanly released lock is not "taken over"
        assert again.path.exists()
    assert WorkdirLock(workdir).acquire() is None


@pytest.mark.slow
def test_trainer_killed_with_workers_leaves_none_behind_and_resumes(tmp_path):
    """SIGKILL of a trainer whose batches come from 2 grain worker processes: the workers exit, the
    next run takes the stale lock over and resumes from the last checkpoint."""
    config = tmp_path / "tiny.py"
    config.write_text(tiny_train_config_source(data__num_workers=2))
    workdir = tmp_path / "run"
    args = [sys.executable, "scripts/train.py", f"--config={config}", f"--workdir={workdir}"]
    proc = subprocess.Popen([*args, "--config.train.num_steps=100000"], cwd=REPO_ROOT,
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: proc.poll() is not None
                  or any(p.name.isdigit() for p in (workdir / "checkpoints").glob("*")), "a checkpoint")
        assert proc.poll() is None, "the trainer exited early"
        workers = _children(proc.pid)
        assert len(workers) >= 2  # the grain workers (and multiprocessing's resource tracker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _wait_for(lambda: not any(_alive(pid) for pid in workers), "the orphaned workers to exit", 30)

    saved = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    resumed = run_script("train.py", *args[2:], f"--config.train.num_steps={saved + 2}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"took over {workdir / LOCK_FILE}: its holder (pid {proc.pid} on" in resumed.stdout
    assert f"at step {saved}" in resumed.stdout and f"step {saved + 2}/{saved + 2}" in resumed.stdout
    assert not (workdir / LOCK_FILE).exists()
