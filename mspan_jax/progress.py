"""A one-line progress report with an ETA, for every long loop of the package and its scripts."""

from __future__ import annotations

import sys
import time


def count(n: int, noun: str) -> str:
    """"1 image", "2 images": a number and its noun, in the plural where English wants it."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


class ProgressLine:
    """A compact one-line progress report with an ETA, redrawn in place on a terminal.

    The ETA uses the rate since the first item: the first one often carries a one-off start-up
    (compiling, starting worker processes) that the rest do not repeat."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.done = 0
        self.first: float | None = None  # when the first item was done

    def update(self, note: str = "") -> None:
        """Marks one more item done and redraws the line."""
        self.done += 1
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        if self.first is None:
            self.first = now
        per_item = (now - self.first) / (self.done - 1) if self.done > 1 else elapsed
        eta = per_item * (self.total - self.done)
        line = (f"{self.label} {self.done}/{self.total} {note} "
                f"[{elapsed:.0f}s elapsed, ETA {eta:.0f}s]")
        end = "\n" if self.done == self.total else ""
        if self.stream.isatty():
            self.stream.write(f"\r\033[K{line}{end}")
        elif self.done == self.total or self.done == 1 or self.done % max(1, self.total // 20) == 0:
            self.stream.write(line + "\n")
        self.stream.flush()
