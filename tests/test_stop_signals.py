"""The signal watches of the training loop, in this process (the full runs: test_preemption.py)."""

from __future__ import annotations

import signal
import sys

import pytest

from mspan_jax.interrupts import finish_first
from mspan_jax.train.preemption import InterruptWatch, PreemptionWatch


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler for the test (a CI runner may start pytest with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class _SignalledInFinalizer:
    """Gets Ctrl-C while its finalizer runs, as a worker slot's `__del__` did in training."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # loops check for pending signals: the handler runs in here
            pass


def test_ctrl_c_in_a_finalizer_is_not_lost(default_sigint, monkeypatch):
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    _SignalledInFinalizer()
    assert dropped == [KeyboardInterrupt]  # what Python does by default: printed and dropped
    watch = InterruptWatch().start()
    try:
        _SignalledInFinalizer()  # not raised in the finalizer, but recorded
        assert watch.interrupted and dropped == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt):
            watch.check()
        with pytest.raises(KeyboardInterrupt):  # anywhere else it raises at once, as by default
            signal.raise_signal(signal.SIGINT)
    finally:
        watch.stop()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@finish_first
def _two_halves(done: list[str]) -> None:
    """Stands for unlinking a segment, then unregistering it: both halves, or the tracker warns."""
    done.append("unlinked")
    signal.raise_signal(signal.SIGINT)
    for _ in range(1000):  # the handler runs in here
        pass
    done.append("unregistered")


def test_ctrl_c_lets_a_finish_first_function_finish(default_sigint):
    done: list[str] = []
    watch = InterruptWatch().start()
    try:
        _two_halves(done)
        assert done == ["unlinked", "unregistered"] and watch.interrupted
        with pytest.raises(KeyboardInterrupt):
            watch.check()
    finally:
        watch.stop()
    with pytest.raises(KeyboardInterrupt):  # without the watch, Python cuts it in half
        _two_halves(done := [])
    assert done == ["unlinked"]


def test_interrupt_watch_leaves_an_ignored_sigint_alone():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        watch = InterruptWatch().start()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        watch.stop()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and not watch.interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigterm_is_recorded_and_the_handler_restored():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionWatch(every=5) as watch:
        assert not watch.agreed(1)
        signal.raise_signal(signal.SIGTERM)
        assert watch.agreed(2)  # one process: no agreement needed, any step
    assert signal.getsignal(signal.SIGTERM) is before
