"""Progress: the database is the truth; gearmand adds live page progress for running jobs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select

from importer.db.engine import Database
from importer.db.models import Batch, Document, RejectedJob
from importer.errors import BadInput, ImporterError
from importer.gearman_io import GearmanIO
from importer.states import DocStatus


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _count(status: DocStatus) -> Any:
    return func.coalesce(func.sum(case((Document.status == status, 1), else_=0)), 0)


def overview(db: Database, batch_id: str | None = None, limit: int = 50) -> dict[str, Any]:
    """The `status --json` object (without documents)."""
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
    batches = []
    for batch, total, queued, running, done, failed, dead, pages in rows:
        batches.append(
            {
                "id": batch.id,
                "email": batch.email,
                "total": total,
                "queued": queued,
                "running": running,
                "done": done,
                "failed": failed + dead,
                "dead": dead,
                "pages_done": pages,
                "created_at": _iso(batch.created_at),
                "finished_at": _iso(batch.finished_at),
            }
        )
    return {
        "batches": batches,
        "rejected_jobs": refused.get("rejected", 0),
        "replayed_jobs": refused.get("replayed", 0),
    }


def documents(db: Database, batch_id: str, gio: GearmanIO | None) -> list[dict[str, Any]]:
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
        progress = [d.pages_done, d.pages or 0]
        state = live.get(d.job_id)
        if state is not None and state.known and state.denominator:
            progress = [state.numerator, state.denominator]
        out.append(
            {
                "path": d.path,
                "job_id": d.job_id,
                "status": d.status.value,
                "progress": progress,
                "attempts": d.attempts,
                "error": d.error,
            }
        )
    return out


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
