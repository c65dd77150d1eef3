"""Putting documents back on gearmand: retry and the reaper.

The database decides; gearmand only carries. Each document is marked enqueued in a
guarded UPDATE before it is sent (`importer.gearman.send`), so two reapers on different
hosts never both send it (and gearmand would coalesce the same unique anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from importer import inline, payload
from importer.db.engine import Database
from importer.db.lifecycle import finish, stale_documents
from importer.db.models import Batch, Document, utcnow
from importer.gearman.client import GearmanIO
from importer.gearman.send import send
from importer.inline_sender import serve
from importer.reasons import ErrorKind
from importer.states import DocStatus

log = logging.getLogger(__name__)

UNKNOWN_GRACE = timedelta(seconds=60)
# Each pass asks gearmand about the longest-waiting queued jobs only, so a queue of
# millions costs a bounded pass; the rest are asked about in later passes.
LOST_CHECK_LIMIT = 5000


@dataclass
class RequeueReport:
    lease_expired: int = 0
    never_enqueued: int = 0
    lost_by_gearmand: int = 0
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


def _lost_by_gearmand(db: Database, gio: GearmanIO) -> list[int]:
    """Queued documents that were sent, but that no configured gearmand knows any more."""
    cutoff = utcnow() - UNKNOWN_GRACE
    with db.session() as s:
        rows = s.execute(
            select(Document.id, Document.job_id)
            .where(
                Document.status == DocStatus.queued,
                Document.enqueued_at.is_not(None),
                Document.enqueued_at < cutoff,
            )
            .order_by(Document.enqueued_at)
            .limit(LOST_CHECK_LIMIT)
        ).all()
    if not rows:
        return []
    statuses = gio.status_by_unique([job_id for _, job_id in rows])
    lost = [
        doc_id for doc_id, job_id in rows if not statuses.get(job_id) or not statuses[job_id].known
    ]
    if lost:
        with db.session() as s:
            s.execute(
                update(Document)
                .where(Document.id.in_(lost), Document.status == DocStatus.queued)
                .values(enqueued_at=None)
            )
    return lost


def requeue_stale(
    db: Database,
    gio: GearmanIO,
    keyring: payload.Keyring,
    *,
    max_attempts: int = 3,
    inline_cap_bytes: int = inline.IN_FLIGHT_BYTES,
) -> RequeueReport:
    """One pass of the reaper (inline documents only within the cap: `importer.inline`)."""
    report = RequeueReport()
    report.lost_by_gearmand = len(_lost_by_gearmand(db, gio))
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
