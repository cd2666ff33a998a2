"""Code that Ctrl-C must not cut in half. Python raises KeyboardInterrupt at whatever bytecode runs
when the signal is handled; a function marked `finish_first` (e.g. unlinking a shared-memory
segment and telling the resource tracker, `data/workers.py`) or any finalizer (`__del__`, where
the exception would be printed and dropped) is let finish, and the interrupt is raised after it by
`train.preemption.InterruptWatch`."""

from __future__ import annotations

from collections.abc import Callable
from types import CodeType, FrameType
from typing import TypeVar

_FINISH_FIRST: set[CodeType] = set()
F = TypeVar("F", bound=Callable)


def finish_first(function: F) -> F:
    """Marks `function`: a Ctrl-C while it runs takes effect after it returns."""
    _FINISH_FIRST.add(function.__code__)
    return function


def must_finish(frame: FrameType | None) -> bool:
    """Whether `frame` or a caller of it is a finalizer or a `finish_first` function."""
    while frame is not None:
        if frame.f_code in _FINISH_FIRST or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False
