"""A document's life in the database: claim, pages, finish, retry, and the batch's end.

Every transition is one transaction with a guard in its WHERE clause, so two workers,
a replayed job or a reaper on another host can never both win the same step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update

from importer.backoff import Backoff, Jitter
from importer.db.engine import Database
from importer.db.models import Batch, Document, Outbox, Page, RejectedJob, utcnow
from importer.db.outbox_key import OutboxKey
from importer.db.retry import waits_for_database
from importer.reasons import ErrorKind
from importer.states import (
    FINISHED,
    UNFINISHED,
    DocStatus,
    NotifyMode,
    PageSource,
    TextLayerMode,
)


class ClaimRefusal(StrEnum):
    unknown = "no document recorded for this job id"
    mismatch = "payload does not match the document recorded for this job id"
    finished = "document already finished"
    leased = "document is being processed by another worker"
    not_due = "document is waiting for its next attempt"


# A document's next attempt after a transient failure: 2 s, 4 s, ... up to 10 minutes,
# each drawn anywhere below that, so that documents failed together come back apart. A
# supervisor sends a document again when it is due, not at its next reaper pass: a killed
# document child costs seconds; one that keeps failing waits longer each time until
# IMPORTER_MAX_ATTEMPTS ends it.
DOCUMENT_RETRY = Backoff(base=2.0, cap=600.0, jitter=Jitter.full)

# Refusals that only a forged or replayed job produces: counted as rejected jobs. A job
# whose document another worker holds is a duplicate delivery, dropped without a count.
FORGERY = frozenset({ClaimRefusal.unknown, ClaimRefusal.mismatch, ClaimRefusal.finished})


@dataclass(frozen=True)
class Claimed:
    id: int
    batch_id: str
    path: str
    lang: str
    attempts: int
    done_pages: frozenset[int]
    text_layer: TextLayerMode = TextLayerMode.auto
    size: int | None = None  # bytes, as recorded at submit
    sha256: str | None = None  # hex, as recorded at submit
    archive: str | None = None  # where its searchable copy goes (submit --archive)


@dataclass(frozen=True)
class StoredPage:
    number: int
    text: str
    source: PageSource
    confidence: float | None
    seconds: float | None
    review: bool = False  # read badly: see workers.review


@waits_for_database
def claim(
    db: Database,
    *,
    job_id: str,
    path: str,
    email: str,
    owner: str,
    lease_seconds: int,
    now: datetime | None = None,
    dead: Callable[[str], bool] = lambda _owner: False,
) -> Claimed | ClaimRefusal:
    """Take the document for this job, if the payload matches what the database recorded.

    A lease that has not run out is respected unless `dead(lease_owner)` says its owner
    has certainly died (a worker killed on the claimant's own host): then the document is
    taken over at once, and the attempt it died in counts."""
    now = now or utcnow()
    with db.session(immediate=True) as s:
        row = s.execute(
            select(Document, Batch.email, Batch.lang, Batch.text_layer)
            .join(Batch)
            .where(Document.job_id == job_id)
            .with_for_update(of=Document)
        ).first()
        if row is None:
            return ClaimRefusal.unknown
        doc, batch_email, lang, text_layer = row
        if doc.path != path or batch_email != email:
            return ClaimRefusal.mismatch
        if doc.status in FINISHED:
            return ClaimRefusal.finished
        done_pages = frozenset(
            s.scalars(select(Page.number).where(Page.document_id == doc.id)).all()
        )

        def claimed() -> Claimed:
            return Claimed(
                doc.id,
                doc.batch_id,
                doc.path,
                lang,
                doc.attempts,
                done_pages,
                text_layer,
                doc.size,
                doc.sha256,
                doc.archive,
            )

        if doc.status == DocStatus.running and doc.lease_owner == owner:
            # our own claim, committed before a dropped connection hid the answer
            return claimed()
        if (
            doc.status == DocStatus.running
            and doc.lease_expires_at
            and doc.lease_expires_at > now
            and not (doc.lease_owner and dead(doc.lease_owner))
        ):
            return ClaimRefusal.leased
        if doc.next_attempt_at and doc.next_attempt_at > now:
            return ClaimRefusal.not_due
        doc.status = DocStatus.running
        doc.lease_owner = owner
        doc.lease_expires_at = now + timedelta(seconds=lease_seconds)
        doc.attempts += 1
        doc.error = None
        doc.error_kind = None
        doc.next_attempt_at = None
        doc.started_at = doc.started_at or now
        return claimed()


def _owned(doc_id: int, owner: str):  # type: ignore[no-untyped-def]
    return and_(
        Document.id == doc_id,
        Document.status == DocStatus.running,
        Document.lease_owner == owner,
    )


def extend_lease(db: Database, doc_id: int, owner: str, lease_seconds: int) -> bool:
    """Renew a lease this owner still holds; False once it is lost.

    One try, not waiting out an unavailable database: the caller renews on its own
    schedule, well inside the lease, and simply tries again next time.
    """
    with db.session() as s:
        result = s.execute(
            update(Document)
            .where(_owned(doc_id, owner))
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        )
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


@waits_for_database
def save_pages(
    db: Database,
    doc_id: int,
    owner: str,
    pages: Sequence[StoredPage],
    lease_seconds: int,
    *,
    page_count: int | None = None,
) -> bool:
    """Store pages idempotently (replace by number), and the page count when given, and
    extend the lease; False if it is lost."""
    if not pages and page_count is None:
        return True
    with db.session() as s:
        return _store(s, doc_id, owner, pages, lease_seconds, page_count)


def _store(  # type: ignore[no-untyped-def]
    s,
    doc_id: int,
    owner: str,
    pages: Sequence[StoredPage],
    lease_seconds: int,
    page_count: int | None,
) -> bool:
    values: dict[str, object] = {"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
    if page_count is not None:
        values["pages"] = page_count
    lease = s.execute(
        update(Document).where(_owned(doc_id, owner)).values(**values),
        execution_options={"synchronize_session": False},
    )
    if lease.rowcount != 1:
        return False
    if pages:
        _put_pages(s, doc_id, pages)
        s.execute(_PAGE_TOTALS, {"doc_id": doc_id}, **_NO_SYNC_KW)
    return True


def _put_pages(s, doc_id: int, pages: Sequence[StoredPage]) -> None:  # type: ignore[no-untyped-def]
    """Store pages, replacing any of the same numbers (a replayed job is harmless)."""
    numbers = [p.number for p in pages]
    s.execute(delete(Page).where(Page.document_id == doc_id, Page.number.in_(numbers)))
    s.execute(insert(Page), _page_rows(doc_id, pages))


class Finished(StrEnum):
    """What a finish call did: `mail` when it also queued an e-mail to send now."""

    lost = "lost"  # the lease was lost (or the document is gone): nothing changed
    done = "done"
    mail = "mail"

    def __bool__(self) -> bool:
        return self is not Finished.lost


class _Lost(Exception):
    """Rolls back a finish whose guard failed after it stored pages."""


# The statements of a finish, built once: a short document's whole cost in the worker is
# of the order of building and compiling them afresh each time.
_DOC: Any = bindparam("doc_id")
_BATCH_OF_DOC = (
    select(Batch.id, Batch.email, Batch.notify, Batch.finished_at, Batch.total)
    .join(Document, Document.batch_id == Batch.id)
    .where(Document.id == _DOC)
    .with_for_update(of=Batch)
)
_DELETE_PAGES = delete(Page).where(
    Page.document_id == _DOC, Page.number.in_(bindparam("numbers", expanding=True))
)


def _pages_where(*where: Any) -> Any:
    return (
        select(func.count())
        .select_from(Page)
        .where(Page.document_id == _DOC, *where)
        .scalar_subquery()
    )


# A document's figures, counted from its pages rows in the transaction that stores them,
# so that a replayed job (pages stored again) leaves them right.
_PAGE_FIGURES = {
    "pages_done": _pages_where(),
    "pages_text_layer": _pages_where(Page.source == PageSource.text_layer),
    "pages_ocr": _pages_where(Page.source == PageSource.ocr),
    "pages_review": _pages_where(Page.review.is_(True)),
    "mean_confidence": select(func.avg(Page.confidence))
    .where(Page.document_id == _DOC, Page.source == PageSource.ocr)
    .scalar_subquery(),
}
_PAGE_TOTALS = update(Document).where(Document.id == _DOC).values(**_PAGE_FIGURES)
_FINISHED = {
    "status": bindparam("new_status", type_=Document.status.type),
    "error": bindparam("new_error", type_=Document.error.type),
    "error_kind": bindparam("new_error_kind", type_=Document.error_kind.type),
    "finished_at": bindparam("now", type_=Document.finished_at.type),
    "lease_owner": None,
    "lease_expires_at": None,
    "next_attempt_at": None,
}
_FINISH_OWNED = (
    update(Document)
    .where(
        Document.id == _DOC,
        Document.status == DocStatus.running,
        Document.lease_owner == bindparam("owner"),
    )
    .returning(Document.job_id)
)
_FINISH_OWNED_PAGES = _FINISH_OWNED.values(
    **_FINISHED, pages=bindparam("page_count"), **_PAGE_FIGURES
)
_FINISH_OWNED_PAGES_ONLY = _FINISH_OWNED.values(**_FINISHED, **_PAGE_FIGURES)
_FINISH_OWNED_COUNT = _FINISH_OWNED.values(**_FINISHED, pages=bindparam("page_count"))
_FINISH_OWNED = _FINISH_OWNED.values(**_FINISHED)
_FINISH_ANY = (
    update(Document)
    .where(Document.id == _DOC, Document.status.in_(UNFINISHED))
    .values(**_FINISHED)
    .returning(Document.job_id)
)
_LEFT = (
    select(func.count())
    .select_from(Document)
    .where(Document.batch_id == bindparam("batch_id"), Document.status.in_(UNFINISHED))
)
# A batch is complete once it holds `total` documents: at once for a submitted one (its
# total is set when all are recorded), later for one another client fills job by job
# (`importer.db.foreign`). Asked only when nothing is left unfinished, once a batch.
_RECORDED = (
    select(func.count()).select_from(Document).where(Document.batch_id == bindparam("batch_id"))
)
_CLOSE_BATCH = (
    update(Batch)
    .where(Batch.id == bindparam("batch_id"))
    .values(finished_at=bindparam("now", type_=Batch.finished_at.type))
)
_NO_SYNC = {"synchronize_session": False}


@waits_for_database
def finish(
    db: Database,
    doc_id: int,
    *,
    owner: str | None,
    status: DocStatus,
    error: str | None = None,
    error_kind: ErrorKind | None = None,
    pages: Sequence[StoredPage] = (),
    page_count: int | None = None,
) -> Finished:
    """Record the end of a document and, in the same transaction, of its batch; the
    document's last pages (and its page count) may come along, so that a short document
    is stored in one transaction after its claim.

    The batch row is locked first so that two workers finishing the last two documents
    at once serialize here: exactly one of them sees none left and writes the outbox row.
    Returns whether this call made the transition (false: the lease was lost), and
    whether it queued an e-mail. `error_kind` is the stable code beside `error`
    (`importer.reasons`); a document done has neither.
    """
    assert status in FINISHED
    assert owner or not (pages or page_count is not None), "only the lease owner stores pages"
    now = utcnow()
    # No key may name a column: an update would take it as one more value to set.
    params: dict[str, object] = {
        "doc_id": doc_id,
        "owner": owner,
        "new_status": status,
        "new_error": error,
        "new_error_kind": None if error_kind is None else error_kind.value,
        "now": now,
        "page_count": page_count,
    }
    try:
        with db.session(immediate=True) as s:
            batch = s.execute(_BATCH_OF_DOC, params).first()
            if batch is None:
                return Finished.lost
            if pages:
                numbers = [p.number for p in pages]
                s.execute(_DELETE_PAGES, {"doc_id": doc_id, "numbers": numbers}, **_NO_SYNC_KW)
                s.execute(insert(Page), _page_rows(doc_id, pages))
            if not owner:
                statement = _FINISH_ANY
            elif pages:
                statement = _FINISH_OWNED_PAGES_ONLY if page_count is None else _FINISH_OWNED_PAGES
            elif page_count is not None:
                statement = _FINISH_OWNED_COUNT
            else:
                statement = _FINISH_OWNED
            job_id = s.execute(statement, params, **_NO_SYNC_KW).scalar_one_or_none()
            if job_id is None:
                raise _Lost  # nothing of this call may stay, the pages included
            mail = False
            if batch.notify == NotifyMode.each:
                mail = _add_outbox_row(s, OutboxKey.document(job_id), batch.id, batch.email)
            # as _close_batch_if_done: a batch still being submitted (no total yet) stays open
            closing = batch.finished_at is None and batch.total != 0
            if (
                closing
                and s.scalar(_LEFT, {"batch_id": batch.id}) == 0
                and s.scalar(_RECORDED, {"batch_id": batch.id}) >= batch.total
            ):
                s.execute(_CLOSE_BATCH, {"batch_id": batch.id, "now": now}, **_NO_SYNC_KW)
                if batch.notify == NotifyMode.batch:
                    key = OutboxKey.batch(batch.id, now)
                    mail = _add_outbox_row(s, key, batch.id, batch.email) or mail
            return Finished.mail if mail else Finished.done
    except _Lost:
        return Finished.lost


_NO_SYNC_KW = {"execution_options": _NO_SYNC}


def _page_rows(doc_id: int, pages: Sequence[StoredPage]) -> list[dict[str, object]]:
    return [
        {
            "document_id": doc_id,
            "number": p.number,
            "text": p.text,
            "source": p.source,
            "confidence": p.confidence,
            "seconds": p.seconds,
            "review": p.review,
        }
        for p in pages
    ]


def _add_outbox_row(s, key: OutboxKey, batch_id: str, email: str) -> bool:  # type: ignore[no-untyped-def]
    text = key.encode()
    exists = s.scalar(select(Outbox.id).where(Outbox.key == text))
    if exists is None:
        s.add(Outbox(key=text, batch_id=batch_id, recipient=email))
    return exists is None


def _close_batch_if_done(s, batch: Batch, now: datetime) -> bool:  # type: ignore[no-untyped-def]
    """Close the batch if nothing is left; True if that queued its e-mail."""
    left = s.scalar(
        select(func.count())
        .select_from(Document)
        .where(Document.batch_id == batch.id, Document.status.in_(UNFINISHED))
    )
    complete = left == 0 and s.scalar(_RECORDED, {"batch_id": batch.id}) >= batch.total
    if complete and batch.finished_at is None:
        batch.finished_at = now
        if batch.notify == NotifyMode.batch:
            return _add_outbox_row(s, OutboxKey.batch(batch.id, now), batch.id, batch.email)
    return False


@waits_for_database
def close_batch_if_done(db: Database, batch_id: str) -> None:
    """For batches whose documents all finished at submit time (e.g. every file not a PDF)."""
    with db.session(immediate=True) as s:
        batch = s.execute(select(Batch).where(Batch.id == batch_id).with_for_update()).scalar_one()
        _close_batch_if_done(s, batch, utcnow())


@waits_for_database
def retry_later(
    db: Database,
    doc_id: int,
    *,
    owner: str,
    error: str,
    error_kind: ErrorKind,
    max_attempts: int,
) -> DocStatus:
    """A transient failure: queue the document again after a backoff, or declare it dead;
    either way it keeps the failure's kind (a dead one, its last failure's)."""
    with db.session() as s:
        attempts = s.scalar(select(Document.attempts).where(_owned(doc_id, owner)))
    if attempts is None:
        return DocStatus.running
    if attempts >= max_attempts:
        reason = f"{error} (gave up after {attempts} attempts)"
        finish(db, doc_id, owner=owner, status=DocStatus.dead, error=reason, error_kind=error_kind)
        return DocStatus.dead
    due = utcnow() + timedelta(seconds=DOCUMENT_RETRY.delay(attempts - 1))
    with db.session() as s:
        s.execute(
            update(Document)
            .where(_owned(doc_id, owner))
            .values(
                status=DocStatus.queued,
                error=error,
                error_kind=error_kind.value,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=due,
                enqueued_at=None,
            )
        )
    return DocStatus.queued


@waits_for_database
def release(db: Database, doc_id: int, *, owner: str) -> None:
    """Hand a document back untouched (shutdown): no attempt is charged."""
    with db.session() as s:
        s.execute(
            update(Document)
            .where(_owned(doc_id, owner))
            .values(
                status=DocStatus.queued,
                attempts=Document.attempts - 1,
                lease_owner=None,
                lease_expires_at=None,
                enqueued_at=None,
            )
        )


@waits_for_database
def expire_leases_of(db: Database, owner: str) -> int:
    """End at once the leases of a worker process its supervisor saw die, so that the
    next reaper pass (run right away) hands its documents on; returns how many."""
    with db.session() as s:
        result = s.execute(
            update(Document)
            .where(Document.status == DocStatus.running, Document.lease_owner == owner)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


@waits_for_database
def record_rejection(db: Database, *, unique: str | None, reason: str, worker: str) -> None:
    """Count a refused job: a replay of a finished document (a valid signature, gearmand
    redelivering what it ran before a crash) apart from everything that failed checks."""
    kind = "replayed" if reason == ClaimRefusal.finished.value else "rejected"
    with db.session() as s:
        s.add(RejectedJob(unique=(unique or "")[:128], reason=reason, worker=worker, kind=kind))


@waits_for_database
def next_retry_due(db: Database) -> datetime | None:
    """When the first document waiting out a retry's backoff is due (read from one index
    entry), so a supervisor can send it then instead of at its next reaper pass."""
    with db.session() as s:
        return s.scalar(
            select(func.min(Document.next_attempt_at)).where(
                Document.status == DocStatus.queued, Document.next_attempt_at.is_not(None)
            )
        )


@waits_for_database
def stale_documents(db: Database, *, limit: int = 1000, now: datetime | None = None) -> list[int]:
    """Queued documents not (or no longer) on any gearmand, and running ones whose lease ran out."""
    now = now or utcnow()
    with db.session() as s:
        ids = s.scalars(
            select(Document.id)
            .where(
                or_(
                    and_(
                        Document.status == DocStatus.queued,
                        Document.enqueued_at.is_(None),
                        or_(Document.next_attempt_at.is_(None), Document.next_attempt_at <= now),
                    ),
                    and_(Document.status == DocStatus.running, Document.lease_expires_at < now),
                )
            )
            .order_by(Document.id)
            .limit(limit)
        ).all()
    return list(ids)
