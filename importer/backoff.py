"""How long to wait before trying again: the one retry policy every retry loop names.

A policy is three numbers and a jitter, written once where it is used, e.g. a document's
next attempt after a transient failure::

    DOCUMENT_RETRY = Backoff(base=2.0, cap=600.0, jitter=Jitter.full)
    DOCUMENT_RETRY.delay(0)   # anywhere in [0, 2] s
    DOCUMENT_RETRY.delay(3)   # anywhere in [0, 16] s

`attempt` counts failures so far, from 0: the first wait is `base`, each next one `factor`
times longer, none longer than `cap`. Jitter keeps the many workers that failed together
(a database restart, a gearmand outage) from all coming back at the same moment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum


class Jitter(StrEnum):
    none = "none"  # exactly the delay: one process waiting on its own
    full = "full"  # anywhere between 0 and the delay: many clients spread widely
    spread = "spread"  # the delay give or take a fifth: spread, but about as long


@dataclass(frozen=True)
class Backoff:
    base: float  # seconds before the first retry
    cap: float  # no wait is longer
    factor: float = 2.0
    jitter: Jitter = Jitter.none

    def ceiling(self, attempt: int) -> float:
        """The wait after `attempt` earlier failures, before jitter."""
        try:
            return min(self.cap, self.base * self.factor ** max(0, attempt))
        except OverflowError:  # a float power past 1e308: long past the cap
            return self.cap

    def delay(self, attempt: int) -> float:
        """The wait after `attempt` earlier failures, jitter applied."""
        ceiling = self.ceiling(attempt)
        if self.jitter is Jitter.full:
            return random.uniform(0.0, ceiling)
        if self.jitter is Jitter.spread:
            return ceiling * random.uniform(0.8, 1.2)
        return ceiling
