"""Signals that stop training. Saving on preemption: SIGTERM (what TPU/GKE/SLURM send before taking a
machine away) makes every process of a run save a checkpoint at the same step and stop. Ctrl-C
(SIGINT) stops a run even where Python would drop its KeyboardInterrupt (`InterruptWatch`).

The signal handler only sets a flag. The loop asks `PreemptionWatch.agreed(step)` after each step;
with several processes they must agree on one step (orbax's save is collective, and a process that
stopped alone would leave the others waiting in the next step's all-reduce), so at every
`every`-th step they gather their flags (`multihost_utils.process_allgather`, a tiny all-gather over
the same collectives as the train step) and all stop when any saw the signal. One process needs no
agreement and checks its flag after every step.

Why not `multihost_utils.reached_preemption_sync_point`: it needs the preemption service of
`jax.distributed`, so it does nothing in a one-process run (the common single-GPU case), and a
CPU test can only reach it by starting the coordination service; the gathered flag works the same
on one process, on CPU processes over gloo, and on a pod. The cost: one all-gather every `every`
steps, where the loop already waits for the device (its logging step).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
import numpy as np

from mspan_jax.interrupts import must_finish


class Preempted(Exception):
    """The run saved a checkpoint at `step` on SIGTERM and stopped; the same command resumes it."""

    def __init__(self, step: int, message: str):
        super().__init__(message)
        self.step = step


class PreemptionWatch:
    """Catches SIGTERM between `start` and `stop` (or as a context manager; main thread only,
    elsewhere it watches nothing). A second SIGTERM ends the process at once, as the default
    handler would."""

    def __init__(self, every: int = 1):
        self.every = max(1, int(every))
        self.signalled = False
        self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signalled:  # asked twice: stop waiting for the next step
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
        self.signalled = True

    def start(self) -> PreemptionWatch:
        """Installs the SIGTERM handler (in the main thread; elsewhere Python allows none)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def stop(self) -> None:
        """Puts the previous SIGTERM handler back."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def __enter__(self) -> PreemptionWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def agreed(self, step: int) -> bool:
        """Whether every process stops after `step` (call on all processes after every step)."""
        if jax.process_count() == 1:
            return self.signalled
        if step % self.every:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.signalled, np.int32))
        return bool(np.any(flags))


class InterruptWatch:
    """Makes Ctrl-C stop the run for sure, and never half-way through what must finish. Python raises
    KeyboardInterrupt in whatever code runs when the signal is handled: inside a finalizer
    (`__del__`, e.g. a worker slot's, `workers.py`) it is printed as "Exception ignored" and dropped,
    and the run goes on; between unlinking a shared-memory segment and unregistering it, it leaves a
    "leaked shared_memory" warning. This handler records the interrupt
    and raises at once unless `interrupts.must_finish` says otherwise; `check()` (after every step)
    raises it then. Installed only over Python's default handler (main thread only)."""

    def __init__(self) -> None:
        self.interrupted = False
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        if not must_finish(frame):
            raise KeyboardInterrupt

    def start(self) -> InterruptWatch:
        """Installs the SIGINT handler where Python's default one is (not over SIG_IGN or a user's)."""
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def stop(self) -> None:
        """Puts Python's default SIGINT handler back."""
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._installed = False

    def check(self) -> None:
        """Raises KeyboardInterrupt if Ctrl-C came since `start`, even if it was dropped."""
        if self.interrupted:
            raise KeyboardInterrupt
