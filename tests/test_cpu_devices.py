"""config.train.cpu_devices: a CPU's cores as the training loop's data-parallel devices."""

from __future__ import annotations

import os

import pytest

from mspan_jax.errors import ConfigError
from mspan_jax.train import cpu_devices
from mspan_jax.train.cpu_devices import COUNT_FLAG, ONE_THREAD_FLAG, cpu_device_count, split_cpu_cores


@pytest.mark.parametrize(("batch", "cores", "want"), [
    (16, 2, 2), (4, 2, 2), (3, 2, 1), (1, 2, 1), (16, 12, 8), (6, 4, 3), (16, 64, 16), (7, 1, 1)])
def test_auto_takes_the_most_cores_that_split_the_batch_evenly(batch, cores, want):
    assert cpu_device_count(0, batch, cores) == want


def test_a_requested_count_is_kept_or_refused_in_one_line():
    assert cpu_device_count(4, 16, 2) == 4  # more devices than cores: the caller's choice
    with pytest.raises(ConfigError, match=r"cpu_devices=3 does not divide .*batch_size=16"):
        cpu_device_count(3, 16, 2)
    with pytest.raises(ConfigError, match=r"cpu_devices=-1 must be 0"):
        cpu_device_count(-1, 16, 2)


def test_xla_flags_get_the_count_and_one_thread_per_device(monkeypatch):
    monkeypatch.setattr(cpu_devices, "host_cores", lambda: 2)
    monkeypatch.setattr(cpu_devices, "_backend_started", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    assert split_cpu_cores(0, 16) == 2
    assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {COUNT_FLAG}=2 {ONE_THREAD_FLAG}"


def test_a_device_count_in_xla_flags_or_one_device_changes_nothing(monkeypatch):
    monkeypatch.setattr(cpu_devices, "host_cores", lambda: 2)
    monkeypatch.setenv("XLA_FLAGS", f"{COUNT_FLAG}=8")
    assert split_cpu_cores(0, 16) == 0
    assert os.environ["XLA_FLAGS"] == f"{COUNT_FLAG}=8"
    monkeypatch.delenv("XLA_FLAGS")
    assert split_cpu_cores(1, 16) == 0
    assert "XLA_FLAGS" not in os.environ


def test_nothing_changes_once_jax_runs(monkeypatch):
    import jax

    jax.devices()  # the backend of this (the tests') process has started
    monkeypatch.setattr(cpu_devices, "host_cores", lambda: 2)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert split_cpu_cores(0, 16) == 0
    assert os.environ["XLA_FLAGS"] == ""
