"""Grain worker processes shared by the two parallel stages of the training pipeline: decoding the
images once (`train_images.py`) and cutting batches (`pipeline.py`). A `MapDataset` read through
`in_workers` yields its elements in index order whatever the number of workers, so the output does not
depend on it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import grain

_IN_WORKER = False


def in_worker() -> bool:
    """True in a grain worker process started by `in_workers` (its output goes to shared memory)."""
    return _IN_WORKER


def _worker_init(index: int, count: int) -> None:
    """Runs first in every grain worker: marks the process as one (`in_worker`); ignores SIGINT and
    SIGTERM, which Ctrl-C and schedulers send to the whole process group (the training process stops
    its workers itself, after saving on SIGTERM, without a traceback from each worker or a leaked
    shared-memory block); and exits when the training process is gone (killed by SIGKILL, say)
    instead of lingering as an orphan that holds memory."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="mspan-orphan-watch").start()


def _mark_flags_parsed() -> None:
    """grain reads absl flags; outside an absl app (tests, argparse scripts) they are not parsed yet."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def in_workers(dataset: grain.MapDataset, workers: int, buffer: int) -> grain.IterDataset:
    """`dataset` read in order, its elements made by `workers` processes (0: one thread here)."""
    iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=buffer))
    if workers == 0:
        return iterable
    _mark_flags_parsed()
    return iterable.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer),
        worker_init_fn=_worker_init)
