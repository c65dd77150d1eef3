"""The Gearman worker process: take `import` jobs from every configured gearmand.

Every job is completed at gearmand (WORK_COMPLETE with our outcome) whatever happened to
the document: gearmand must never requeue a job for a failure we have already recorded,
and a forged job must not loop. The database holds the truth.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import gearman  # type: ignore[import-untyped]
from gearman.errors import GearmanError, ServerUnavailable  # type: ignore[import-untyped]

from importer.backoff import Backoff
from importer.db import lifecycle
from importer.gearman.client import FUNCTION
from importer.payload import max_job_bytes, worker_id
from importer.states import JobOutcome
from workers.bounded import BoundedConnection, Oversized
from workers.job import JobContext, Outcome, StopNow, handle
from workers.owner import Owner

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
PROGRESS_SECONDS = 0.2
BURST_IDLE_POLLS = 2
RECONNECT = Backoff(base=0.5, cap=30.0)  # after losing gearmand: 0.5 s, 1 s, ... 30 s


class ImportWorker(gearman.GearmanWorker):  # type: ignore[misc]
    """pygearman worker with our stop conditions wired into its poll callbacks."""

    def __init__(
        self,
        hosts: list[Any],
        ctx: JobContext,
        *,
        burst: bool,
        max_jobs: int | None,
        stop: threading.Event,
        busy: threading.Event,
    ) -> None:
        self.limit = max_job_bytes(ctx.settings.max_inline_mb * 2**20)
        self.connection_class = functools.partial(BoundedConnection, limit=self.limit)
        super().__init__(hosts)
        self.ctx = ctx
        self.burst = burst
        self.max_jobs = max_jobs
        self.stop = stop
        self.busy = busy
        self.jobs_done = 0
        self.idle_polls = 0
        self.finished = False
        self.connected = False
        self.set_client_id(worker_id(ctx.owner, ctx.keyring))
        self.register_task(FUNCTION, self._on_job)

    def establish_worker_connections(self) -> list[Any]:
        connections = super().establish_worker_connections()
        self.connected = self.connected or bool(connections)
        return connections

    def _lost(self, job: Any) -> bool:
        """Whether the connection the job came on has died (gearmand restarted or went away)."""
        return job.connection not in self.connection_to_handler_map

    def _on_job(self, worker: Any, job: Any) -> bytes:
        self.idle_polls = 0
        self.busy.set()

        last_sent = [-PROGRESS_SECONDS]

        def progress(numerator: int, denominator: int) -> None:
            """Page progress for `importer status`; a round trip each, so at most one every
            PROGRESS_SECONDS (a text-layer document's pages come faster than anyone reads)."""
            now = time.monotonic()
            if now - last_sent[0] < PROGRESS_SECONDS or self._lost(job):
                return
            last_sent[0] = now
            try:
                worker.send_job_status(job, numerator, max(denominator, 1), poll_timeout=5)
            except GearmanError as e:
                log.debug("progress not sent: %s", e)

        unique = (
            job.unique.decode(errors="replace") if isinstance(job.unique, bytes) else job.unique
        )
        if isinstance(job.data, Oversized):
            outcome = self._oversized(unique, job.data.announced)
        else:
            data = job.data if isinstance(job.data, bytes) else str(job.data).encode()
            outcome = handle(self.ctx, unique, data, progress, should_stop=self.stop.is_set)
        log.info("job %s: %s", unique, outcome.encode().decode())
        self.jobs_done += 1
        return outcome.encode()

    def _oversized(self, unique: str | None, announced: int) -> Outcome:
        """A job over the bound, discarded as it arrived (`workers.bounded`): refused."""
        reason = (
            f"job of {announced:,} bytes (framing included) is over the largest job a worker"
            f" accepts ({self.limit:,} bytes, for IMPORTER_MAX_INLINE_MB="
            f"{self.ctx.settings.max_inline_mb}); discarded unread"
        )
        log.warning("rejected job %r: %s", (unique or "")[:64], reason)
        lifecycle.record_rejection(self.ctx.db, unique=unique, reason=reason, worker=self.ctx.owner)
        return Outcome(JobOutcome.rejected, reason)

    def on_job_complete(self, current_job: Any, job_result: bytes) -> bool:
        try:
            if self._lost(current_job):
                # gearmand replays the job when it comes back; the database makes that harmless
                raise ServerUnavailable(
                    f"connection lost during job {current_job.handle!r}; its result was not sent"
                )
            return bool(super().on_job_complete(current_job, job_result))
        finally:
            self.busy.clear()

    def on_job_exception(self, current_job: Any, exc_info: Any) -> bool:
        try:
            log.error("job %r failed", current_job.unique, exc_info=exc_info)
            if self._lost(current_job):
                raise ServerUnavailable(f"connection lost during job {current_job.handle!r}")
            return bool(super().on_job_exception(current_job, exc_info))
        finally:
            self.busy.clear()

    def after_poll(self, any_activity: bool) -> bool:
        if self.stop.is_set():
            self.finished = True
            return False
        if self.max_jobs is not None and self.jobs_done >= self.max_jobs:
            self.finished = True
            return False
        if self.burst and not self.has_job_lock():
            self.idle_polls = 0 if any_activity else self.idle_polls + 1
            if self.idle_polls >= BURST_IDLE_POLLS:
                self.finished = True
                return False
        return True

    def after_job(self) -> bool:
        # pygearman calls this on every poll after the first job, not once per job.
        return not self.finished


def owner_name() -> str:
    return Owner.current().encode()


def work(
    make_ctx: Callable[[], JobContext],
    hosts: list[Any],
    *,
    burst: bool = False,
    max_jobs: int | None = None,
    stop: threading.Event | None = None,
    busy: threading.Event | None = None,
) -> int:
    """Run until stopped, the queue is empty (burst) or max_jobs; reconnect with backoff."""
    stop = stop or threading.Event()
    busy = busy or threading.Event()
    ctx = make_ctx()
    failures = 0  # reconnections in a row without getting to work
    jobs = 0
    while not stop.is_set():
        worker = ImportWorker(
            hosts,
            ctx,
            burst=burst,
            stop=stop,
            busy=busy,
            max_jobs=None if max_jobs is None else max_jobs - jobs,
        )
        try:
            worker.work(poll_timeout=POLL_SECONDS)
        except StopNow:
            jobs += worker.jobs_done
            if busy.is_set():
                log.warning("stopped at once by a second signal (the document was handed back)")
            break
        except (GearmanError, OSError) as e:
            jobs += worker.jobs_done
            if worker.connected:
                failures = 0  # it was working: the first retry comes quickly again
            delay = RECONNECT.delay(failures)
            failures += 1
            log.warning("gearmand unavailable (%s); reconnecting in %.1f s", e, delay)
            stop.wait(delay)
            continue
        finally:
            worker.shutdown()
        jobs += worker.jobs_done
        if worker.finished:
            break
        failures = 0
    return jobs


def install_signal_handlers(stop: threading.Event, busy: threading.Event) -> None:
    """SIGTERM/SIGINT: an idle worker stops at once; a busy one finishes the current page and
    hands the document back. A second signal stops a busy one at once too."""

    def on_signal(signum: int, _frame: Any) -> None:
        already = stop.is_set()
        stop.set()
        if already or not busy.is_set():
            raise StopNow

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
