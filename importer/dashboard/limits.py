"""How much work requests can make the dashboard do: searches at once, probes per minute.

slots = Slots(2)
with slots.taken() as ok:  # False when both are busy: answer 503, do not queue
    ...
exposure = Recent(10.0).get(lambda: check_exposure(settings, gio))  # reused for 10 s
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Slots:
    """At most `size` holders at once; one more is told no at once instead of waiting."""

    def __init__(self, size: int) -> None:
        self._free = threading.BoundedSemaphore(size)

    @contextmanager
    def taken(self) -> Iterator[bool]:
        got = self._free.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._free.release()


class Recent(Generic[T]):
    """The value `make` last returned, made again only once it is `seconds` old; callers
    that come while it is being made wait for it rather than make it again."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._made: tuple[float, T] | None = None

    def get(self, make: Callable[[], T]) -> T:
        with self._lock:
            now = self._clock()
            if self._made is None or now - self._made[0] >= self.seconds:
                self._made = (now, make())
            return self._made[1]
