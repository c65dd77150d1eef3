"""One Gearman job, from payload to stored pages.

Order matters for security: verify the signature, then match the job to the document the
database recorded; only then is the file opened, once, checked where it really is, hashed
through that descriptor and compared with the sha256 recorded at submit, and read by the
engine's child through that same open descriptor. So the text stored under a document's
sha256 is the text of those bytes: a file rewritten in place (even to the same size)
between submit and worker fails as `changed` before any tool parses it. A path job whose
id no document holds comes from another client: `workers.foreign` records it first, opening
its file as submit does, and it is then claimed like the others.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from importer import payload
from importer.config import Settings
from importer.db import lifecycle
from importer.db.engine import Database
from importer.errors import ImporterError, PayloadRejected
from importer.opening import Refused, open_confined, sha256_of
from importer.reasons import ErrorKind
from importer.states import DocStatus, JobOutcome
from workers import foreign
from workers.archive_file import ArchiveFile, cannot_write
from workers.document import DocumentError, DocumentInfo, Limits, PageResult
from workers.engine import process_document
from workers.inline import InlineSpool
from workers.owner import dead_here
from workers.review import needs_review

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class StopNow(BaseException):
    """Raised by the second SIGTERM/SIGINT: stop mid-page, hand the document back."""


PAGE_FLUSH_SECONDS = 1.0
RENEWALS_PER_LEASE = 4  # a 60 s lease is renewed every 15 s: three renewals may fail
LEASE_WAIT_SECONDS = 1.0  # between claims of a document another worker holds


def limits_from(settings: Settings) -> Limits:
    return Limits(
        page_timeout=settings.page_timeout_seconds,
        document_timeout=settings.document_timeout_seconds,
        max_file_bytes=settings.max_file_mb * 2**20,
        max_pages=settings.max_pages,
        max_page_pixels=int(settings.max_page_megapixels * 1_000_000),
        memory_bytes=settings.child_memory_mb * 2**20,
        cpu_seconds=settings.child_cpu_seconds,
        dpi=settings.ocr_dpi,
    )


@dataclass
class JobContext:
    """Collaborators of a worker process, built in its main() after fork."""

    db: Database
    settings: Settings
    owner: str  # workers.owner.Owner, recorded as the lease owner

    def __post_init__(self) -> None:
        self.keyring = self.settings.keyring()
        self.limits = limits_from(self.settings)
        self.roots = self.settings.roots
        self.leases = LeaseKeeper(self)

    @functools.cached_property
    def spool(self) -> InlineSpool:
        """Where inline jobs' bytes are written: made (and stale ones removed) at first use."""
        return InlineSpool(self.settings.data_dir)


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery of a job; its encoding is the WORK_COMPLETE data and the
    end of the worker's log line for the job, the status word first::

        done: 3 pages
        retry: no progress for 120 s on page 2 (IMPORTER_PAGE_TIMEOUT_SECONDS)
        dropped
    """

    status: JobOutcome
    detail: str = ""

    def encode(self) -> bytes:
        text = f"{self.status.value}: {self.detail}" if self.detail else self.status.value
        return text.encode()

    @classmethod
    def decode(cls, data: bytes) -> Outcome:
        """Raises ValueError for anything that is not an outcome."""
        status, sep, detail = data.decode().partition(": ")
        if sep and not detail:
            raise ValueError(f"outcome {data[:100]!r} has an empty detail")
        return cls(JobOutcome(status), detail)


def handle(
    ctx: JobContext,
    unique: str | None,
    data: bytes,
    progress: Progress,
    should_stop: Callable[[], bool] = lambda: False,
) -> Outcome:
    try:
        received = payload.decode_job(
            data, keyring=ctx.keyring, ttl_seconds=ctx.settings.job_ttl_seconds
        )
        job = received.payload
        if unique != job.job_id:
            raise PayloadRejected("gearman unique does not match the signed job id")
    except PayloadRejected as e:
        log.warning("rejected job %r: %s", (unique or "")[:64], e.message)
        lifecycle.record_rejection(ctx.db, unique=unique, reason=e.message, worker=ctx.owner)
        return Outcome(JobOutcome.rejected, e.message)

    claimed = _claim(ctx, job, should_stop)
    if claimed is lifecycle.ClaimRefusal.unknown and received.content is None:
        not_admitted = foreign.admit(ctx, job)  # a path job from another client
        if not_admitted is not None:
            return Outcome(not_admitted.outcome, not_admitted.reason)
        claimed = _claim(ctx, job, should_stop)
    if isinstance(claimed, lifecycle.ClaimRefusal):
        if claimed in lifecycle.FORGERY:
            lifecycle.record_rejection(
                ctx.db, unique=unique, reason=claimed.value, worker=ctx.owner
            )
            return Outcome(JobOutcome.rejected, claimed.value)
        log.info("job %s dropped: %s", job.job_id, claimed.value)
        return Outcome(JobOutcome.dropped, claimed.value)

    if received.content is not None:
        return _inline(ctx, claimed, received.content, progress, should_stop)
    try:
        fd = open_confined(claimed.path, ctx.roots, claimed.size)
    except Refused as e:
        return _fail(ctx, claimed, e.reason, e.kind)
    except OSError as e:
        gone = e.errno == errno.ENOENT
        kind = ErrorKind.missing if gone else ErrorKind.unreadable
        return _retry(ctx, claimed, f"cannot open {claimed.path}: {e.strerror or e}", kind)
    try:
        try:
            changed = _changed(claimed, fd)
        except OSError as e:
            reason = f"cannot read {claimed.path}: {e.strerror or e}"
            return _retry(ctx, claimed, reason, ErrorKind.unreadable)
        if changed:
            return _fail(ctx, claimed, changed, ErrorKind.changed)
        return _process(ctx, claimed, fd, progress, should_stop)
    finally:
        os.close(fd)


def _changed(claimed: lifecycle.Claimed, fd: int) -> str | None:
    """Why the open file is not the one recorded at submit, if it is not: its sha256,
    over the descriptor the child will read (so no later swap of the name matters)."""
    if not claimed.sha256:
        return None
    digest, _ = sha256_of(fd)
    if hmac.compare_digest(digest, claimed.sha256):
        return None
    return (
        f"{claimed.path} changed since it was submitted (its sha256 is not the one recorded);"
        " refused: submit it again with --force"
    )


def _claim(
    ctx: JobContext, job: payload.Payload, should_stop: Callable[[], bool]
) -> lifecycle.Claimed | lifecycle.ClaimRefusal:
    """Take the job's document. One that another worker holds is waited for, up to one
    lease: gearmand hands a job on when its worker's connection dies, and that worker's
    lease ends soon after (at once when its supervisor saw it die, within a lease when its
    host vanished). Dropping the job instead would leave only the reaper's re-send, which
    needs the file: an inline job's bytes would be gone with it."""
    deadline = time.monotonic() + ctx.settings.lease_seconds + LEASE_WAIT_SECONDS
    while True:
        claimed = lifecycle.claim(
            ctx.db,
            job_id=job.job_id,
            path=job.file,
            email=job.email,
            owner=ctx.owner,
            lease_seconds=ctx.settings.lease_seconds,
            dead=dead_here,  # gearmand handing back the job of a worker killed on this host
        )
        if claimed != lifecycle.ClaimRefusal.leased or time.monotonic() >= deadline:
            return claimed
        if should_stop():
            return claimed
        time.sleep(LEASE_WAIT_SECONDS)


def _inline(
    ctx: JobContext,
    claimed: lifecycle.Claimed,
    content: memoryview,
    progress: Progress,
    should_stop: Callable[[], bool],
) -> Outcome:
    """A job that carries its file: no roots apply, the bytes are read from a private file
    without a name (`workers.inline`), gone when its descriptor closes. They were sealed
    by the submitter (`payload.decode_job` authenticated them) and must still be the file
    recorded at submit: its size and sha256."""
    if (claimed.size is not None and claimed.size != len(content)) or (
        claimed.sha256
        and not hmac.compare_digest(claimed.sha256, hashlib.sha256(content).hexdigest())
    ):
        reason = (
            f"the inline bytes ({len(content):,}) are not the file recorded at submit "
            f"({claimed.size or 0:,} bytes, its sha256); refused"
        )
        return _fail(ctx, claimed, reason, ErrorKind.changed)
    try:
        fd = ctx.spool.spool(content)
    except (OSError, Refused) as e:
        reason = e.reason if isinstance(e, Refused) else (e.strerror or str(e))
        why = f"cannot write the inline bytes to {ctx.spool.dir}: {reason}"
        return _retry(ctx, claimed, why, ErrorKind.unreadable)
    try:
        return _process(ctx, claimed, fd, progress, should_stop)
    finally:
        os.close(fd)


class LeaseKeeper:
    """Renews the lease of the document being read, so that only a dead worker loses it.

    One page may take longer than the lease (a large scan, a busy machine); without renewal
    the reaper would hand a live worker's document to another. Renewal ends at the
    document's own timeout, so a worker stuck past every limit still loses its lease.
    One thread per worker process renews whichever document it is reading (a thread per
    document cost more than reading a short one's text layer).
    """

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._current: tuple[int, float] | None = None  # (document id, renew until)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def keeping(self, doc_id: int) -> Iterator[None]:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
            self._thread.start()
        self._current = (doc_id, time.monotonic() + self.ctx.settings.document_timeout_seconds)
        try:
            yield
        finally:
            self._current = None

    def _run(self) -> None:
        lease = self.ctx.settings.lease_seconds
        while True:
            self._wake.wait(max(0.5, lease / RENEWALS_PER_LEASE))
            current = self._current
            if current is None or time.monotonic() >= current[1]:
                continue
            doc_id = current[0]
            try:
                # False: lost (the reaper gave it away); the next page store says so
                lifecycle.extend_lease(self.ctx.db, doc_id, self.ctx.owner, lease)
            except (SQLAlchemyError, ImporterError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                log.warning("lease of document %d not renewed yet: %s", doc_id, reason)


def _process(
    ctx: JobContext,
    claimed: lifecycle.Claimed,
    fd: int,
    progress: Progress,
    should_stop: Callable[[], bool],
) -> Outcome:
    with ctx.leases.keeping(claimed.id):
        if claimed.archive is None:
            return _read(ctx, claimed, fd, progress, should_stop, None)
        try:
            target = ArchiveFile.create(claimed.archive)
        except OSError as e:
            return _retry(ctx, claimed, cannot_write(claimed.archive, e), ErrorKind.unreadable)
        with target:  # discarded unless the document is done
            return _read(ctx, claimed, fd, progress, should_stop, target)


def _read(
    ctx: JobContext,
    claimed: lifecycle.Claimed,
    fd: int,
    progress: Progress,
    should_stop: Callable[[], bool],
    archive: ArchiveFile | None,
) -> Outcome:
    """Read the document and store it: its page count and pages go with the next flush (at
    most PAGE_FLUSH_SECONDS apart), the last ones with the finish, so that a short document
    takes one transaction after its claim. Its searchable copy, when the batch makes one,
    takes its name just before the finish."""
    pending: list[lifecycle.StoredPage] = []
    total = 0
    count: int | None = None  # the page count, until it is stored
    done = len(claimed.done_pages)
    last_flush = time.monotonic()
    lease = ctx.settings.lease_seconds
    review_below = ctx.settings.review_confidence

    def flush() -> bool:
        nonlocal pending, last_flush, count
        ok = lifecycle.save_pages(ctx.db, claimed.id, ctx.owner, pending, lease, page_count=count)
        pending, count = [], None
        last_flush = time.monotonic()
        return ok

    events = process_document(
        claimed.path,
        lang=claimed.lang,
        limits=ctx.limits,
        skip_pages=claimed.done_pages,
        text_layer=claimed.text_layer,
        fd=fd,
        archive_fd=None if archive is None else archive.fd,
    )
    try:
        for event in events:
            if isinstance(event, DocumentInfo):
                total = count = event.pages
                progress(done, total)
            elif isinstance(event, PageResult):
                pending.append(
                    lifecycle.StoredPage(
                        event.number,
                        event.text,
                        event.source,
                        event.confidence,
                        event.seconds,
                        review=needs_review(event, review_below),
                    )
                )
                done += 1
                if time.monotonic() - last_flush >= PAGE_FLUSH_SECONDS and not flush():
                    return Outcome(JobOutcome.dropped, "lease lost")
                progress(done, total)
                if should_stop():
                    flush()
                    lifecycle.release(ctx.db, claimed.id, owner=ctx.owner)
                    return Outcome(JobOutcome.released, "worker stopping; pages kept")
    except StopNow:
        lifecycle.release(ctx.db, claimed.id, owner=ctx.owner)
        raise
    except DocumentError as e:
        flush()
        if not e.transient:
            return _fail(ctx, claimed, e.reason, e.kind)
        return _retry(ctx, claimed, e.reason, e.kind)
    finally:
        _close(events)
    if archive is not None:
        try:
            archive.commit()
        except OSError as e:
            flush()
            return _retry(ctx, claimed, cannot_write(archive.final, e), ErrorKind.unreadable)
    finished = lifecycle.finish(
        ctx.db,
        claimed.id,
        owner=ctx.owner,
        status=DocStatus.done,
        pages=pending,
        page_count=count,
    )
    if not finished:
        return Outcome(JobOutcome.dropped, "lease lost")
    return Outcome(JobOutcome.done, f"{done} pages")


def _fail(ctx: JobContext, claimed: lifecycle.Claimed, reason: str, kind: ErrorKind) -> Outcome:
    """A permanent failure: the document is failed with its reason and kind."""
    lifecycle.finish(
        ctx.db,
        claimed.id,
        owner=ctx.owner,
        status=DocStatus.failed,
        error=reason,
        error_kind=kind,
    )
    return Outcome(JobOutcome.failed, reason)


def _retry(ctx: JobContext, claimed: lifecycle.Claimed, reason: str, kind: ErrorKind) -> Outcome:
    """A transient failure: the document is queued again after a backoff, or is dead."""
    status = lifecycle.retry_later(
        ctx.db,
        claimed.id,
        owner=ctx.owner,
        error=reason,
        error_kind=kind,
        max_attempts=ctx.settings.max_attempts,
    )
    return Outcome(JobOutcome.dead if status == DocStatus.dead else JobOutcome.retry, reason)


def _close(events: Iterator[object]) -> None:
    """Leave the engine's generator now, whichever way: its child and programs die at once."""
    close = getattr(events, "close", None)
    if close is not None:
        close()
