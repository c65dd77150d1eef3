"""What the e-mails say, read from the database when they are sent.

Page figures come from each document's own row (pages_done, pages_text_layer, pages_ocr,
pages_review: kept with its pages when it finishes), so a batch of a million documents is
summed from the documents table alone. The failed documents and those with pages to
review are read by path, the first `LISTED` of each.
"""

from __future__ import annotations

from sqlalchemy import func, select

from importer.archive_names import written
from importer.db.engine import Database
from importer.db.models import Batch, Document, utcnow
from importer.notify import (
    LISTED,
    BatchSummary,
    DocumentSummary,
    FailedDocument,
    ReviewDocument,
)
from importer.states import DocStatus

_NOT_IMPORTED = (DocStatus.failed, DocStatus.dead)


def batch_summary(db: Database, batch_id: str, *, listed: int = LISTED) -> BatchSummary:
    in_batch = Document.batch_id == batch_id
    imported = (in_batch, Document.status == DocStatus.done)
    to_review = (*imported, Document.pages_review > 0)
    with db.session() as s:
        batch = s.execute(select(Batch).where(Batch.id == batch_id)).scalar_one()
        counts = dict(
            s.execute(
                select(Document.status, func.count()).where(in_batch).group_by(Document.status)
            ).all()
        )
        pages, text_layer, ocr, review_pages = s.execute(
            select(
                func.coalesce(func.sum(Document.pages_done), 0),
                func.coalesce(func.sum(Document.pages_text_layer), 0),
                func.coalesce(func.sum(Document.pages_ocr), 0),
                func.coalesce(func.sum(Document.pages_review), 0),
            ).where(*imported)
        ).one()
        failed = s.execute(
            select(Document.path, Document.status, Document.error, Document.error_kind)
            .where(in_batch, Document.status.in_(_NOT_IMPORTED))
            .order_by(Document.path, Document.id)
            .limit(listed)
        ).all()
        review = s.execute(
            select(Document.path, Document.pages_review, Document.pages_done)
            .where(*to_review)
            .order_by(Document.path, Document.id)
            .limit(listed)
        ).all()
        review_count = s.scalar(select(func.count()).select_from(Document).where(*to_review))
    return BatchSummary(
        batch_id=batch.id,
        email=batch.email,
        total=sum(counts.values()),
        done=counts.get(DocStatus.done, 0),
        pages=int(pages),
        failed=[
            FailedDocument(path, status, error or "unknown error", kind)
            for path, status, error, kind in failed
        ],
        skipped=batch.skipped,
        created_at=batch.created_at,
        finished_at=batch.finished_at or utcnow(),
        failed_count=counts.get(DocStatus.failed, 0),
        dead_count=counts.get(DocStatus.dead, 0),
        pages_text_layer=int(text_layer),
        pages_ocr=int(ocr),
        pages_review=int(review_pages),
        review=[ReviewDocument(path, n, of) for path, n, of in review],
        review_count=review_count or 0,
        archive_dir=batch.archive_dir,
    )


def document_summary(db: Database, job_id: str) -> DocumentSummary:
    with db.session() as s:
        doc, email = s.execute(
            select(Document, Batch.email).join(Batch).where(Document.job_id == job_id)
        ).one()
    seconds = 0.0
    if doc.started_at and doc.finished_at:
        seconds = (doc.finished_at - doc.started_at).total_seconds()
    return DocumentSummary(
        batch_id=doc.batch_id,
        job_id=doc.job_id,
        email=email,
        path=doc.path,
        status=doc.status,
        pages=doc.pages_done,
        error=doc.error,
        seconds=seconds,
        error_kind=doc.error_kind,
        pages_text_layer=doc.pages_text_layer,
        pages_ocr=doc.pages_ocr,
        pages_review=doc.pages_review,
        archive=written(doc.archive, doc.status),
    )
