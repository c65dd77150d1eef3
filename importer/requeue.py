"""Putting documents back on gearmand: retry and the reaper.

The database decides; gearmand only carries. Each document is marked enqueued in a
guarded UPDATE before it is sent (`importer.gearman.send`), so two reapers on different
hosts never both send it (and gearmand would coalesce the same unique anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update

from importer import inline, payload
from importer.db.engine import Database
from importer.db.lifecycle import finish, stale_documents
from importer.db.models import Batch, Document, RejectedJob, utcnow
from importer.db.retry import WAIT_SECONDS
from importer.errors import GearmanUnavailable
from importer.gearman.client import FUNCTION, GearmanIO
from importer.gearman.send import send
from importer.inline_sender import serve
from importer.reasons import ErrorKind
from importer.states import DocStatus
from importer.submit import new_job_id

log = logging.getLogger(__name__)

UNKNOWN_GRACE = timedelta(seconds=60)
# Each pass asks gearmand about the longest-waiting queued jobs only, so a queue of
# millions costs a bounded pass; the rest are asked about in later passes.
LOST_CHECK_LIMIT = 5000
# A job gearmand reports running while our database holds no claim for it: a worker took
# it and never claimed it. Ours claim right after JOB_ASSIGN, waiting out an unavailable
# database for up to WAIT_SECONDS; past that and a minute more, the taker is a rogue (or
# stuck), and the document is sent again under a new job id. The old job, should its
# taker ever hand it back, then names no document: refused, counted, the document untouched.
CLAIM_SECONDS = WAIT_SECONDS + 60
HELD = "held"  # rejected_jobs.kind of a job taken and never claimed


@dataclass
class RequeueReport:
    lease_expired: int = 0
    never_enqueued: int = 0
    lost_by_gearmand: int = 0
    held_unclaimed: int = 0  # taken at gearmand, never claimed: sent again under a new id
    enqueued: int = 0
    dead: int = 0


def _mark_for_enqueue(db: Database, doc_ids: Sequence[int]) -> list[int]:
    """The documents this call marked enqueued, each only if still due: one guarded UPDATE
    for them all (a pass's thousand took seconds one by one), in the order given."""
    if not doc_ids:
        return []
    now = utcnow()
    with db.session() as s:
        won = set(
            s.scalars(
                update(Document)
                .where(
                    Document.id.in_(doc_ids),
                    or_(
                        and_(Document.status == DocStatus.queued, Document.enqueued_at.is_(None)),
                        and_(Document.status == DocStatus.running, Document.lease_expires_at < now),
                    ),
                )
                .values(
                    status=DocStatus.queued,
                    enqueued_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .returning(Document.id),
                execution_options={"synchronize_session": False},
            )
        )
    return [doc_id for doc_id in doc_ids if doc_id in won]


def _lost_by_gearmand(
    db: Database, gio: GearmanIO, keyring: payload.Keyring, claim_seconds: float
) -> tuple[list[int], int]:
    """Queued documents that were sent, but that no configured gearmand knows any more;
    and how many were given a new job id for being taken there and never claimed."""
    cutoff = utcnow() - UNKNOWN_GRACE
    with db.session() as s:
        rows = s.execute(
            select(Document.id, Document.job_id, Document.lease_expires_at)
            .where(
                Document.status == DocStatus.queued,
                Document.enqueued_at.is_not(None),
                Document.enqueued_at < cutoff,
            )
            .order_by(Document.enqueued_at)
            .limit(LOST_CHECK_LIMIT)
        ).all()
    if not rows:
        return [], 0
    statuses = gio.status_by_unique([job_id for _, job_id, _ in rows])
    lost = [
        doc_id
        for doc_id, job_id, _ in rows
        if not statuses.get(job_id) or not statuses[job_id].known
    ]
    taken = [(d, j, w) for d, j, w in rows if statuses.get(j) and statuses[j].running]
    held = _watch_taken(db, gio, keyring, taken, claim_seconds) if taken else 0
    if lost:
        with db.session() as s:
            s.execute(
                update(Document)
                .where(Document.id.in_(lost), Document.status == DocStatus.queued)
                .values(enqueued_at=None)
            )
    return lost, held


def _holders(gio: GearmanIO, keyring: payload.Keyring) -> str:
    """Who may hold a job at gearmand, which does not say which connection runs which job:
    the workers for our function whose client id was not made with our keys."""
    try:
        lines = gio.admin_workers()
    except GearmanUnavailable as e:
        return f"unknown (admin workers: {e.message})"
    foreign = []
    for line in lines:
        server, _, rest = line.partition(" ")
        fd, ip, client, *_ = [*rest.split(" ", 3), "", "", ""]
        functions = rest.partition(" : ")[2].split()
        if FUNCTION.decode() in functions and not payload.is_our_worker(client, keyring):
            foreign.append(f"{ip} client id {client!r} fd {fd} at {server}")
    return "; ".join(foreign) or "one of our own workers (no other worker for import)"


def _watch_taken(
    db: Database,
    gio: GearmanIO,
    keyring: payload.Keyring,
    taken: Sequence[tuple[int, str, datetime | None]],
    claim_seconds: float,
) -> int:
    """Taken at gearmand, not claimed here: the first pass notes a claim deadline in the
    queued document's lease columns (a real claim overwrites them); a pass after it gives
    the document a new job id for the reaper to send, and records who held the old one."""
    now = utcnow()
    holder = _holders(gio, keyring)[:128]
    resent = 0
    with db.session() as s:
        for doc_id, job_id, deadline in taken:
            unclaimed = and_(
                Document.id == doc_id,
                Document.job_id == job_id,
                Document.status == DocStatus.queued,
            )
            if deadline is None:
                s.execute(
                    update(Document)
                    .where(unclaimed, Document.lease_expires_at.is_(None))
                    .values(
                        lease_owner=f"gearmand: {holder}"[:128],
                        lease_expires_at=now + timedelta(seconds=claim_seconds),
                    )
                )
                continue
            if deadline > now:
                continue
            new_id = new_job_id()
            done = s.execute(
                update(Document)
                .where(unclaimed)
                .values(job_id=new_id, enqueued_at=None, lease_owner=None, lease_expires_at=None)
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                resent += 1
                reason = (
                    f"taken at gearmand and not claimed within {claim_seconds:.0f} s;"
                    f" document {doc_id} sent again as {new_id}"
                )
                s.add(RejectedJob(unique=job_id, reason=reason, worker=holder, kind=HELD))
                log.warning("job %s held by %s without a claim: %s", job_id, holder, reason)
    return resent


def requeue_stale(
    db: Database,
    gio: GearmanIO,
    keyring: payload.Keyring,
    *,
    max_attempts: int = 3,
    inline_cap_bytes: int = inline.IN_FLIGHT_BYTES,
    claim_seconds: float = CLAIM_SECONDS,
) -> RequeueReport:
    """One pass of the reaper (inline documents only within the cap: `importer.inline`)."""
    report = RequeueReport()
    lost, report.held_unclaimed = _lost_by_gearmand(db, gio, keyring, claim_seconds)
    report.lost_by_gearmand = len(lost)
    candidates = stale_documents(db)
    with db.session() as s:
        rows = s.execute(
            select(Document.id, Document.attempts).where(
                Document.id.in_(candidates), Document.status == DocStatus.running
            )
        ).all()
    expired = {doc_id: attempts for doc_id, attempts in rows}
    report.lease_expired = len(expired)
    report.never_enqueued = len(candidates) - len(expired)
    # A document whose worker died on every attempt (the file kills whole workers, not
    # just the engine child) ends here instead of looping through the reaper forever.
    for doc_id, attempts in expired.items():
        if attempts >= max_attempts and finish(
            db,
            doc_id,
            owner=None,
            status=DocStatus.dead,
            error=f"the worker processing it died on each of {attempts} attempts",
            error_kind=ErrorKind.worker_died,
        ):
            report.dead += 1
    live = [c for c in candidates if c not in expired or expired[c] < max_attempts]
    won = _mark_for_enqueue(db, inline.reaper_share(db, live, expired, inline_cap_bytes))
    if won:
        report.enqueued = send(db, gio, won, keyring)
        log.info("requeued %d documents (%s)", report.enqueued, report)
    return report


def retry_batch(
    db: Database,
    gio: GearmanIO,
    keyring: payload.Keyring,
    batch_id: str,
    *,
    inline_cap_bytes: int = inline.IN_FLIGHT_BYTES,
) -> int:
    """Give a batch's failed and dead documents a fresh set of attempts (all but those
    whose name is not UTF-8: `bad-name`, found again only once renamed).

    An inline batch's are sent from here within the cap, and this host stays the batch's
    sender until it finishes (`importer.inline_sender`): it has the files.
    """
    with db.session() as s:
        is_inline = bool(s.scalar(select(Batch.inline).where(Batch.id == batch_id)))
        ids = list(
            s.scalars(
                select(Document.id).where(
                    Document.batch_id == batch_id,
                    Document.status.in_([DocStatus.failed, DocStatus.dead]),
                    # its recorded path is not its name: only renaming it and submitting helps
                    Document.error_kind.is_distinct_from(ErrorKind.bad_name.value),
                )
            )
        )
        if not ids:
            return 0
        s.execute(
            update(Document)
            .where(Document.id.in_(ids))
            .values(
                status=DocStatus.queued,
                attempts=0,
                error=None,
                error_kind=None,
                finished_at=None,
                next_attempt_at=None,
                enqueued_at=None if is_inline else utcnow(),
            )
        )
        # an inline batch's sender from now on, in the same transaction: no reaper fails
        # the documents for want of their files in between
        sender = utcnow() + inline.SENDER_LEASE if is_inline else None
        s.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(finished_at=None, inline_sender_until=sender)
        )
    if is_inline:
        serve(db, gio, keyring, batch_id, cap=inline_cap_bytes, until_finished=True)
        return len(ids)
    return send(db, gio, ids, keyring)


def held_jobs(db: Database, limit: int = 3) -> tuple[int, list[RejectedJob]]:
    """How many jobs were taken and never claimed, and the newest few (who held them):
    for `importer doctor`."""
    with db.session() as s:
        count = s.scalar(select(func.count()).where(RejectedJob.kind == HELD)) or 0
        newest = list(
            s.scalars(
                select(RejectedJob)
                .where(RejectedJob.kind == HELD)
                .order_by(RejectedJob.id.desc())
                .limit(limit)
            )
        )
        s.expunge_all()
    return count, newest
