"""Progress: the database is the truth; gearmand adds live page progress for running jobs.

What `importer status` shows, typed: a StatusReport of BatchStatus rows (and, for one
batch, its first DocumentStatus rows and how many there are). `to_json` is the `status
--json` output, key for key; outside checks read it, so its keys and value formats do not
change.

Every query here reads only what it shows, through an index (`importer.db.models`), so
`status` answers as fast in an archive of a million documents as in a new one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from importer.archive_names import written
from importer.db.engine import Database
from importer.db.models import Batch, Document, RejectedJob
from importer.errors import BadInput, ImporterError
from importer.gearman.client import GearmanIO
from importer.states import DocStatus

# `status BATCH` lists this many documents unless told otherwise (`--limit N`, `--all`)
DOCUMENTS_LIMIT = 1000
# `status` without a batch: the newest this many
BATCHES_LIMIT = 50


@dataclass(frozen=True)
class BatchStatus:
    """One batch's counts; its JSON (times in ISO 8601, null until finished;
    `pages_review`, the pages marked for review, only when the batch is named)::

    {"id": "20260101-120000-a1b2c3", "email": "ops@example.com", "total": 3,
     "queued": 0, "running": 1, "done": 1, "failed": 1, "dead": 1, "pages_done": 7,
     "created_at": "2026-01-01T12:00:00.250000+00:00", "finished_at": null,
     "pages_review": 2}
    """

    id: str
    email: str
    total: int
    queued: int
    running: int
    done: int
    failed: int  # failed for good or out of attempts: the dead are counted here too
    dead: int
    pages_done: int
    created_at: datetime
    finished_at: datetime | None
    pages_review: int | None = None  # counted for a batch named, not in the overview

    def to_json(self) -> dict[str, Any]:
        body = {
            "id": self.id,
            "email": self.email,
            "total": self.total,
            "queued": self.queued,
            "running": self.running,
            "done": self.done,
            "failed": self.failed,
            "dead": self.dead,
            "pages_done": self.pages_done,
            "created_at": self.created_at.isoformat(),
            "finished_at": _iso(self.finished_at),
        }
        if self.pages_review is not None:
            body["pages_review"] = self.pages_review
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> BatchStatus:
        return cls(
            **{key: body[key] for key in _COUNTS},
            created_at=datetime.fromisoformat(body["created_at"]),
            finished_at=_datetime(body["finished_at"]),
            pages_review=body.get("pages_review"),
        )


_COUNTS = ("id", "email", "total", "queued", "running", "done", "failed", "dead", "pages_done")


@dataclass(frozen=True)
class DocumentStatus:
    """One document; `progress` is [pages done, pages] (live from gearmand while running),
    `error_kind` the stable code of `error` (`importer.reasons`), `pages_review` its pages
    marked for review, `archive` its searchable PDF once done (`submit --archive`)::

    {"path": "/data/in/a.pdf", "job_id": "j-5f0c2a9e1b7d4c3a8e6f0b1d", "status": "dead",
     "progress": [2, 5], "attempts": 3, "error": "worker child ran out of memory",
     "error_kind": "out-of-memory", "pages_review": 1, "archive": null}
    """

    path: str
    job_id: str
    status: DocStatus
    progress: tuple[int, int]
    attempts: int
    error: str | None
    error_kind: str | None = None
    pages_review: int = 0
    archive: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in (DocStatus.failed, DocStatus.dead)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "job_id": self.job_id,
            "status": self.status.value,
            "progress": list(self.progress),
            "attempts": self.attempts,
            "error": self.error,
            "error_kind": self.error_kind,
            "pages_review": self.pages_review,
            "archive": self.archive,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> DocumentStatus:
        numerator, denominator = body["progress"]
        return cls(
            path=body["path"],
            job_id=body["job_id"],
            status=DocStatus(body["status"]),
            progress=(numerator, denominator),
            attempts=body["attempts"],
            error=body["error"],
            error_kind=body.get("error_kind"),
            pages_review=body.get("pages_review", 0),
            archive=body.get("archive"),
        )


@dataclass(frozen=True)
class ReviewDocument:
    """A document of the batch with pages marked for review (`importer export --review`
    lists the pages)::

    {"path": "/data/in/a.pdf", "job_id": "j-5f0c2a9e1b7d4c3a8e6f0b1d", "pages_review": 2}
    """

    path: str
    job_id: str
    pages_review: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "job_id": self.job_id, "pages_review": self.pages_review}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ReviewDocument:
        return cls(body["path"], body["job_id"], body["pages_review"])


@dataclass(frozen=True)
class StatusReport:
    """What `importer status --json` prints: the batches, newest first, and the refused
    jobs; with a batch named, its first documents in the order they were submitted and
    how many it has in all, and the first of those with pages for review and how many
    there are (these keys are absent otherwise)::

        {"batches": [...], "rejected_jobs": 0, "replayed_jobs": 1, "review": [...],
         "review_total": 3, "documents": [...], "documents_total": 200000}
    """

    batches: tuple[BatchStatus, ...]
    rejected_jobs: int  # jobs that failed verification (forged, tampered, expired)
    replayed_jobs: int  # redeliveries of jobs already finished
    documents: tuple[DocumentStatus, ...] | None = None
    documents_total: int | None = None  # the batch's documents, listed or not
    review: tuple[ReviewDocument, ...] | None = None
    review_total: int | None = None  # the batch's documents with pages for review

    @property
    def documents_unlisted(self) -> int:
        """How many of the batch's documents `documents` leaves out."""
        if self.documents is None or self.documents_total is None:
            return 0
        return max(self.documents_total - len(self.documents), 0)

    @property
    def finished(self) -> bool:
        return all(b.finished_at is not None for b in self.batches)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "batches": [b.to_json() for b in self.batches],
            "rejected_jobs": self.rejected_jobs,
            "replayed_jobs": self.replayed_jobs,
        }
        if self.review is not None:
            body["review"] = [r.to_json() for r in self.review]
            body["review_total"] = (
                len(self.review) if self.review_total is None else self.review_total
            )
        if self.documents is not None:
            body["documents"] = [d.to_json() for d in self.documents]
            total = self.documents_total
            body["documents_total"] = len(self.documents) if total is None else total
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StatusReport:
        docs = body.get("documents")
        review = body.get("review")
        return cls(
            batches=tuple(BatchStatus.from_json(b) for b in body["batches"]),
            rejected_jobs=body["rejected_jobs"],
            replayed_jobs=body["replayed_jobs"],
            documents=None if docs is None else tuple(DocumentStatus.from_json(d) for d in docs),
            documents_total=body.get("documents_total"),
            review=None if review is None else tuple(ReviewDocument.from_json(r) for r in review),
            review_total=body.get("review_total"),
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def overview(db: Database, batch_id: str | None = None, limit: int = BATCHES_LIMIT) -> StatusReport:
    """The newest `limit` batches, or the one named; without documents.

    The batches are chosen first (ix_batches_created_at), then only their documents are
    counted, per batch and state, from ix_documents_batch_status_pages alone: the cost
    follows the documents shown, not the archive.
    """
    chosen = select(Batch).order_by(Batch.created_at.desc())
    chosen = chosen.where(Batch.id == batch_id) if batch_id else chosen.limit(limit)
    with db.session() as s:
        batches = s.scalars(chosen).all()
        counts = _counts(s, [b.id for b in batches]) if batches else {}
        kinds = s.execute(select(RejectedJob.kind, func.count()).group_by(RejectedJob.kind))
        refused = {kind: count for kind, count in kinds}
    if batch_id and not batches:
        raise BadInput(f"no batch {batch_id!r}: `importer status` lists the batches")
    return StatusReport(
        batches=tuple(_batch_status(b, counts.get(b.id, {})) for b in batches),
        rejected_jobs=refused.get("rejected", 0),
        replayed_jobs=refused.get("replayed", 0),
    )


def _counts(s: Any, batch_ids: list[str]) -> dict[str, dict[DocStatus, tuple[int, int]]]:
    """Per batch and state: (documents, pages done)."""
    rows = s.execute(
        select(
            Document.batch_id,
            Document.status,
            func.count(),
            func.coalesce(func.sum(Document.pages_done), 0),
        )
        .where(Document.batch_id.in_(batch_ids))
        .group_by(Document.batch_id, Document.status)
    ).all()
    out: dict[str, dict[DocStatus, tuple[int, int]]] = {}
    for batch_id, status, count, pages in rows:
        out.setdefault(batch_id, {})[DocStatus(status)] = (int(count), int(pages))
    return out


def _batch_status(batch: Batch, counts: Mapping[DocStatus, tuple[int, int]]) -> BatchStatus:
    def n(status: DocStatus) -> int:
        return counts.get(status, (0, 0))[0]

    return BatchStatus(
        id=batch.id,
        email=batch.email,
        total=sum(count for count, _ in counts.values()),
        queued=n(DocStatus.queued),
        running=n(DocStatus.running),
        done=n(DocStatus.done),
        failed=n(DocStatus.failed) + n(DocStatus.dead),
        dead=n(DocStatus.dead),
        pages_done=sum(pages for _, pages in counts.values()),
        created_at=batch.created_at,
        finished_at=batch.finished_at,
    )


def documents(
    db: Database, batch_id: str, gio: GearmanIO | None, *, limit: int | None = None
) -> tuple[DocumentStatus, ...]:
    """One batch's documents in the order they were submitted, the first `limit` of them
    (every one with None); running ones get live progress from gearmand when it answers."""
    listed = Document.batch_id == batch_id
    if limit is not None:
        # The first ids from ix_documents_batch_id alone. Asked in one query, "this batch,
        # by id, the first N" may be planned (PostgreSQL) as a walk of the primary key
        # that filters, reading every older batch's documents before this one's.
        first = select(Document.id).where(listed).order_by(Document.id).limit(limit)
        listed = Document.id.in_(first.scalar_subquery())
    query = (
        select(
            Document.path,
            Document.job_id,
            Document.status,
            Document.pages,
            Document.pages_done,
            Document.error,
            Document.attempts,
            Document.error_kind,
            Document.pages_review,
            Document.archive,
        )
        .where(listed)
        .order_by(Document.id)
    )
    with db.session() as s:
        docs = s.execute(query).all()
    running = [d.job_id for d in docs if d.status == DocStatus.running]
    live = {}
    if running and gio is not None:
        try:
            live = gio.status_by_unique(running)
        except ImporterError:
            live = {}
    out = []
    for d in docs:
        progress = (d.pages_done, d.pages or 0)
        state = live.get(d.job_id)
        if state is not None and state.known and state.denominator:
            progress = (state.numerator, state.denominator)
        out.append(
            DocumentStatus(
                d.path,
                d.job_id,
                d.status,
                progress,
                d.attempts,
                d.error,
                d.error_kind,
                d.pages_review,
                written(d.archive, d.status),
            )
        )
    return tuple(out)


def with_documents(
    db: Database, report: StatusReport, gio: GearmanIO | None, *, limit: int | None
) -> StatusReport:
    """`overview(db, batch)` with the batch's first `limit` documents (None: all) and
    their number in all."""
    (batch,) = report.batches
    listed = documents(db, batch.id, gio, limit=limit)
    review, review_total, pages_review = for_review(db, batch.id, limit=limit)
    return dataclasses.replace(
        report,
        batches=(dataclasses.replace(batch, pages_review=pages_review),),
        documents=listed,
        documents_total=batch.total,
        review=review,
        review_total=review_total,
    )


def for_review(
    db: Database, batch_id: str, *, limit: int | None
) -> tuple[tuple[ReviewDocument, ...], int, int]:
    """The batch's first `limit` documents with pages marked for review (None: all), how
    many documents have such pages, and how many pages in all."""
    marked = (Document.batch_id == batch_id) & (Document.pages_review > 0)
    query = (
        select(Document.path, Document.job_id, Document.pages_review)
        .where(marked)
        .order_by(Document.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with db.session() as s:
        documents, pages = s.execute(
            select(func.count(), func.coalesce(func.sum(Document.pages_review), 0)).where(marked)
        ).one()
        rows = s.execute(query).all() if documents else []
    listed = tuple(ReviewDocument(path, job_id, count) for path, job_id, count in rows)
    return listed, int(documents), int(pages)


def unfinished(db: Database, batch_id: str) -> int:
    with db.session() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(Document)
                .where(
                    Document.batch_id == batch_id,
                    Document.status.in_([DocStatus.queued, DocStatus.running]),
                )
            )
            or 0
        )
