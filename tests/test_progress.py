"""The progress line's ETA: the rate since the first item, so a slow start does not inflate it."""

from __future__ import annotations

import io

from mspan_jax import progress


def test_eta_ignores_a_slow_first_item(monkeypatch):
    clock = iter([0.0, 10.0, 11.0, 12.0])  # start, then items done at 10 s (start-up), 11 s, 12 s
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    line = progress.ProgressLine(10, "decoding:", stream=stream)
    for _ in range(3):
        line.update("images")
    assert stream.getvalue().splitlines()[-1] == "decoding: 3/10 images [12s elapsed, ETA 7s]"
