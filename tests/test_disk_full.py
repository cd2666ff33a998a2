"""A full disk: a checkpoint save that hits ENOSPC stops the run with one line, leaves the previous
checkpoint intact and loadable, and a rerun after space is freed resumes to the straight run's
params; atomic result files (eval_results.json, images, exports) leave no temporary and no partial
file. ENOSPC is injected at the file layer (etils.epath's open, which orbax's metadata and JSON
items go through) and, where this machine lets the test mount one, by a really full tmpfs (the
array data that tensorstore writes from C++ then fails too)."""

from __future__ import annotations

import errno
import gc
import json
import logging
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import subprocess_env
from etils import epath
from etils.epath import gpath
from test_train_resume import _max_diff, tiny_config

from mspan_jax import files
from mspan_jax.checkpoints.workdir import load_latest_state
from mspan_jax.data.images import write_image, write_png
from mspan_jax.errors import DiskFullError, is_disk_full
from mspan_jax.train import checkpoint, loop
from mspan_jax.train.checkpoint import saved_steps


@pytest.fixture(autouse=True)
def _collect_failed_saves():
    """A save that hit the full disk leaves orbax futures whose errors asyncio logs when they are
    collected; collect them here, quietly, so the log does not land in a later test's stderr."""
    yield
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.disabled = True
    try:
        gc.collect()
    finally:
        asyncio_log.disabled = False

FULL_AT = 4  # the save of this step finds the disk full; step 2 was saved before


def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def _full_disk_by_patch(monkeypatch, workdir: Path, request):
    """From the save of FULL_AT on, every write under workdir/checkpoints fails with ENOSPC."""
    real_open, real_save = gpath._GPath.open, checkpoint.TrainCheckpoints.save
    full = []

    def open_(self, mode="r", *args, **kwargs):
        if full and any(c in mode for c in "wax") and str(self).startswith(str(workdir / "checkpoints")):
            raise _enospc(self)
        return real_open(self, mode, *args, **kwargs)

    def save(self, state, model_config):
        if int(state.step) == FULL_AT:
            self.wait()  # the earlier background save finishes on a disk with space
            full.append(True)
        real_save(self, state, model_config)

    monkeypatch.setattr(gpath._GPath, "open", open_)
    monkeypatch.setattr(checkpoint.TrainCheckpoints, "save", save)
    return lambda: monkeypatch.undo()


def _full_disk_by_tmpfs(monkeypatch, workdir: Path, request):
    """workdir's disk is a 16 MB tmpfs that a filler file fills before the save of FULL_AT."""
    mount = workdir.parent
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)]
    if shutil.which("mount") is None or subprocess.run(command, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the patched variant covers ENOSPC")
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(mount)], check=False))
    real_save = checkpoint.TrainCheckpoints.save
    filler = mount / "filler"

    def save(self, state, model_config):
        if int(state.step) == FULL_AT:
            self.wait()
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
        real_save(self, state, model_config)

    monkeypatch.setattr(checkpoint.TrainCheckpoints, "save", save)

    def free():
        monkeypatch.undo()
        filler.unlink()

    return free


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight") / "run"
    loop.train_and_evaluate(tiny_config(), str(workdir))
    return load_latest_state(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("fill", [_full_disk_by_patch, _full_disk_by_tmpfs], ids=["patched", "tmpfs"])
def test_a_full_disk_stops_in_one_line_and_a_rerun_resumes(tmp_path, monkeypatch, request, straight,
                                                           fill):
    config = tiny_config()
    config.train.checkpoint_every_steps = 2
    workdir = tmp_path / "disk" / "run" if fill is _full_disk_by_tmpfs else tmp_path / "run"
    free = fill(monkeypatch, workdir, request)
    try:
        with pytest.raises(DiskFullError) as raised:
            loop.train_and_evaluate(config, str(workdir))
        assert str(raised.value) == ("no space left on device while saving a checkpoint under "
                                     f"{workdir}; the checkpoint of step 2 is intact; free space "
                                     "and run the same command again to resume")
        assert saved_steps(workdir) == [2]
        assert int(load_latest_state(workdir)["step"]) == 2  # intact and loadable (checksums pass)
        assert not (workdir / loop.EVAL_RESULTS_FILE).exists()
    finally:
        free()

    loop.train_and_evaluate(config, str(workdir))  # space freed: the same call resumes
    done = load_latest_state(workdir)
    assert int(done["step"]) == int(straight["step"]) == 6
    assert _max_diff(done["params"], straight["params"]) <= 1e-6
    assert _max_diff(done["opt_state"], straight["opt_state"]) <= 1e-6


def _half_then_enospc(monkeypatch):
    """Writes of bytes write half of the data, then fail with ENOSPC (a disk that fills mid-file)."""
    def write_bytes(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise _enospc(self)

    monkeypatch.setattr(epath.Path, "write_bytes", write_bytes)


def test_atomic_files_leave_nothing_half_written_on_a_full_disk(tmp_path, monkeypatch):
    results, image = tmp_path / "eval_results.json", tmp_path / "out" / "sr_x4.png"
    files.write_json_atomic(results, {"step": 2})
    old = results.read_bytes()
    _half_then_enospc(monkeypatch)
    with pytest.raises(OSError) as raised:
        files.write_json_atomic(results, {"step": 4, "pad": "x" * 10000})
    assert raised.value.errno == errno.ENOSPC and is_disk_full(raised.value)
    with pytest.raises(OSError, match="No space left"):
        write_image(image, np.zeros((8, 8, 3), np.uint8))  # upscale.py's and the loop's images
    with pytest.raises(OSError, match="No space left"):
        files.write_bytes_atomic(tmp_path / "m.jaxexport", uuid.uuid4().bytes * 1000)  # export.py
    monkeypatch.undo()

    def strips():  # upscale.py's PNG, streamed a row of tiles at a time: the disk fills after one
        yield np.zeros((4, 8, 3), np.uint8)
        raise _enospc(image)

    with pytest.raises(OSError, match="No space left"):
        write_png(image, strips(), 8, 8, 3, 8)
    assert results.read_bytes() == old and json.loads(old) == {"step": 2}  # the previous file
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["eval_results.json"]


SCRIPT = """
from mspan_jax import cli

def main(argv):
    raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: Failed to write 917 bytes to file "
                     "6: No space left on device [os_error_code='28']")

cli.run(main)
"""


def test_a_script_reports_a_full_disk_in_one_line():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no space left on device (ValueError: RESOURCE_EXHAUSTED")
    assert proc.stderr.count("\n") == 1, proc.stderr
