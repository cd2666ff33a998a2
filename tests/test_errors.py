"""User errors (`errors.UserError`) end a script with one `error:` line and exit 2; anything else,
a ValueError from a shape bug included, shows its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT, run_script, subprocess_env

from mspan_jax import errors
from mspan_jax.checkpoints.params import CheckpointError
from mspan_jax.convert.torch_io import ConversionError
from mspan_jax.data.images import ImageReadError
from mspan_jax.extras import MissingExtraError
from mspan_jax.train.workdir_lock import WorkdirInUseError

# Runs scripts/export.py with `load_model` replaced by one that raises the given exception.
_EXPORT_RAISING = """
import runpy, sys
from mspan_jax import errors
from mspan_jax.checkpoints import resolve

def load_model(*args, **kwargs):
    raise {error}

resolve.load_model = load_model
sys.argv = ["export.py", "--checkpoint", "ckpt", "--out", "model.jaxexport"]
runpy.run_path("scripts/export.py", run_name="__main__")
"""


def _export_raising(error: str) -> subprocess.CompletedProcess:
    """In a fresh interpreter: an uncaught exception's real traceback and exit status."""
    return subprocess.run([sys.executable, "-c", _EXPORT_RAISING.format(error=error)], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)


def test_a_user_error_is_one_line_and_exit_2(monkeypatch):
    from mspan_jax.checkpoints import resolve

    def load_model(*args, **kwargs):
        raise errors.ConfigError("--out: bad value\nsecond line")

    monkeypatch.setattr(resolve, "load_model", load_model)  # run_script re-executes export.py
    result = run_script("export.py", "--checkpoint", "ckpt", "--out", "model.jaxexport")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == ["error: --out: bad value"]


def test_an_unexpected_value_error_shows_its_traceback():
    result = _export_raising('ValueError("operands could not be broadcast together")')
    assert result.returncode not in (0, 2), result.stderr[-2000:]
    assert "Traceback" in result.stderr and "operands could not be broadcast" in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("cls", [errors.ConfigError, errors.DataError, CheckpointError,
                                 ConversionError, ImageReadError, MissingExtraError,
                                 WorkdirInUseError])
def test_the_package_errors_are_user_errors(cls):
    assert issubclass(cls, errors.UserError)


def test_first_line():
    assert errors.first_line(ValueError("  one\ntwo ")) == "one"
    assert errors.first_line(KeyError()) == "KeyError"
    assert errors.first_line(OSError("disk on fire"), typed=True) == "OSError: disk on fire"
    assert errors.first_line(ValueError("abcdef"), limit=3) == "abc"
