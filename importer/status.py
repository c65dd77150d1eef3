"""Progress: the database is the truth; gearmand adds live page progress for running jobs.

What `importer status` shows, typed: a StatusReport of BatchStatus rows (and, for one
batch, its DocumentStatus rows). `to_json` is the `status --json` output, key for key;
outside checks read it, so its keys and value formats do not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from importer.db.engine import Database
from importer.db.models import Batch, Document, RejectedJob
from importer.errors import BadInput, ImporterError
from importer.gearman.client import GearmanIO
from importer.states import DocStatus


@dataclass(frozen=True)
class BatchStatus:
    """One batch's counts; its JSON (times in ISO 8601, null until finished)::

    {"id": "20260101-120000-a1b2c3", "email": "ops@example.com", "total": 3,
     "queued": 0, "running": 1, "done": 1, "failed": 1, "dead": 1, "pages_done": 7,
     "created_at": "2026-01-01T12:00:00.250000+00:00", "finished_at": null}
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

    def to_json(self) -> dict[str, Any]:
        return {
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

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> BatchStatus:
        return cls(
            **{key: body[key] for key in _COUNTS},
            created_at=datetime.fromisoformat(body["created_at"]),
            finished_at=_datetime(body["finished_at"]),
        )


_COUNTS = ("id", "email", "total", "queued", "running", "done", "failed", "dead", "pages_done")


@dataclass(frozen=True)
class DocumentStatus:
    """One document; `progress` is [pages done, pages] (live from gearmand while running)::

    {"path": "/data/in/a.pdf", "job_id": "j-5f0c2a9e1b7d4c3a8e6f0b1d", "status": "dead",
     "progress": [2, 5], "attempts": 3, "error": "worker child ran out of memory"}
    """

    path: str
    job_id: str
    status: DocStatus
    progress: tuple[int, int]
    attempts: int
    error: str | None

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
        )


@dataclass(frozen=True)
class StatusReport:
    """What `importer status --json` prints: the batches, newest first, and the refused
    jobs; with a batch named, its documents too (the key is absent otherwise)::

        {"batches": [...], "rejected_jobs": 0, "replayed_jobs": 1, "documents": [...]}
    """

    batches: tuple[BatchStatus, ...]
    rejected_jobs: int  # jobs that failed verification (forged, tampered, expired)
    replayed_jobs: int  # redeliveries of jobs already finished
    documents: tuple[DocumentStatus, ...] | None = None

    @property
    def finished(self) -> bool:
        return all(b.finished_at is not None for b in self.batches)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "batches": [b.to_json() for b in self.batches],
            "rejected_jobs": self.rejected_jobs,
            "replayed_jobs": self.replayed_jobs,
        }
        if self.documents is not None:
            body["documents"] = [d.to_json() for d in self.documents]
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StatusReport:
        docs = body.get("documents")
        return cls(
            batches=tuple(BatchStatus.from_json(b) for b in body["batches"]),
            rejected_jobs=body["rejected_jobs"],
            replayed_jobs=body["replayed_jobs"],
            documents=None if docs is None else tuple(DocumentStatus.from_json(d) for d in docs),
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _count(status: DocStatus) -> Any:
    return func.coalesce(func.sum(case((Document.status == status, 1), else_=0)), 0)


def overview(db: Database, batch_id: str | None = None, limit: int = 50) -> StatusReport:
    """The newest `limit` batches, or the one named; without documents."""
    query = (
        select(
            Batch,
            func.count(Document.id),
            _count(DocStatus.queued),
            _count(DocStatus.running),
            _count(DocStatus.done),
            _count(DocStatus.failed),
            _count(DocStatus.dead),
            func.coalesce(func.sum(Document.pages_done), 0),
        )
        .outerjoin(Document)
        .group_by(Batch.id)
        .order_by(Batch.created_at.desc())
    )
    query = query.where(Batch.id == batch_id) if batch_id else query.limit(limit)
    with db.session() as s:
        rows = s.execute(query).all()
        counts = s.execute(select(RejectedJob.kind, func.count()).group_by(RejectedJob.kind))
        refused = {kind: count for kind, count in counts}
    if batch_id and not rows:
        raise BadInput(f"no batch {batch_id!r}: `importer status` lists the batches")
    batches = tuple(
        BatchStatus(
            id=batch.id,
            email=batch.email,
            total=int(total),
            queued=int(queued),
            running=int(running),
            done=int(done),
            failed=int(failed + dead),
            dead=int(dead),
            pages_done=int(pages),
            created_at=batch.created_at,
            finished_at=batch.finished_at,
        )
        for batch, total, queued, running, done, failed, dead, pages in rows
    )
    return StatusReport(
        batches=batches,
        rejected_jobs=refused.get("rejected", 0),
        replayed_jobs=refused.get("replayed", 0),
    )


def documents(db: Database, batch_id: str, gio: GearmanIO | None) -> tuple[DocumentStatus, ...]:
    """One batch's documents; running ones get live progress from gearmand when it answers."""
    with db.session() as s:
        docs = s.execute(
            select(
                Document.path,
                Document.job_id,
                Document.status,
                Document.pages,
                Document.pages_done,
                Document.error,
                Document.attempts,
            )
            .where(Document.batch_id == batch_id)
            .order_by(Document.path)
        ).all()
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
        out.append(DocumentStatus(d.path, d.job_id, d.status, progress, d.attempts, d.error))
    return tuple(out)


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
