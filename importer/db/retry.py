"""Waiting out a database that is briefly unavailable (restart, failover, a busy SQLite).

Each lifecycle step is one guarded transaction, so running it again after a dropped
connection is safe: a step that did commit finds its guard already satisfied.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from importer.backoff import Backoff, Jitter
from importer.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

WAIT_SECONDS = 180.0
RETRY = Backoff(base=0.2, cap=5.0, jitter=Jitter.spread)  # 0.2 s, 0.4 s, ... 5 s, give or take


def _transient(error: DBAPIError) -> bool:
    return isinstance(error, OperationalError) or error.connection_invalidated


def waits_for_database(fn: Callable[P, T]) -> Callable[P, T]:
    """Retry `fn` with backoff while the database is unreachable, up to WAIT_SECONDS."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        deadline = time.monotonic() + WAIT_SECONDS
        failures = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except DBAPIError as e:
                delay = RETRY.delay(failures)
                failures += 1
                if not _transient(e) or time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(
                        f"database unavailable for over {WAIT_SECONDS:.0f} s during "
                        f"{fn.__name__}: {str(e.orig or e).splitlines()[0]}"
                    ) from e
                log.warning(
                    "database unavailable in %s (%s); retrying in %.1f s",
                    fn.__name__,
                    str(e.orig or e).splitlines()[0],
                    delay,
                )
                time.sleep(delay)

    return wrapper
