"""Code that a stop signal's exit must not cut in two.

`importer run` turns SIGTERM and SIGHUP into SystemExit where its own code runs. A few of
its steps must not be cut between two lines, such as a worker's fork and its record in the
supervisor: cut there, the worker is known to nobody, is never stopped, and
multiprocessing's exit hook waits on it for ever. Such a step is marked `@held`; a signal
that comes while one runs (anywhere below it on the stack) is taken after it returns.
A per-thread signal mask cannot do this: in a process with other threads the kernel hands
the signal to one of them, and Python runs the handler in the main thread regardless.
"""

from __future__ import annotations

from collections.abc import Callable
from types import CodeType, FrameType
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_HELD: set[CodeType] = set()


def held(func: Callable[P, R]) -> Callable[P, R]:
    """Mark a function whose run a stop signal's exit waits out."""
    _HELD.add(func.__code__)
    return func


def inside_held(frame: FrameType | None) -> bool:
    """Whether a `@held` function is running in this frame or one that called it."""
    while frame is not None:
        if frame.f_code in _HELD:
            return True
        frame = frame.f_back
    return False
