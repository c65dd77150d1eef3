"""`importer export --review`: the pages marked for review, for a person to look at.

A page is marked when OCR read it with a mean word confidence below
IMPORTER_REVIEW_CONFIDENCE, or found no word on a page that is not blank (the worker
decides, `workers.review`). One record per page, in the order of `importer export`::

    {"batch_id": "20260101-120000-a1b2c3", "job_id": "j-5f0c2a9e1b7d4c3a8e6f0b1d",
     "path": "/data/in/a.pdf", "page": 3, "confidence": 41.7}

`confidence` is null when OCR found no word at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from sqlalchemy import select

from importer.db.engine import Database
from importer.db.models import Document, Page
from importer.export import write_records

FIELDS = ["batch_id", "job_id", "path", "page", "confidence"]


def pages(db: Database, batch_id: str | None = None) -> Iterator[dict[str, Any]]:
    """The pages marked for review, by batch, path and page number."""
    query = (
        select(Document.batch_id, Document.job_id, Document.path, Page.number, Page.confidence)
        .join(Page, Page.document_id == Document.id)
        .where(Page.review.is_(True))
        .order_by(Document.batch_id, Document.path, Document.id, Page.number)
    )
    if batch_id:
        query = query.where(Document.batch_id == batch_id)
    with db.session() as s:
        for row in s.execute(query.execution_options(yield_per=500)):
            confidence = None if row.confidence is None else round(row.confidence, 1)
            yield {
                "batch_id": row.batch_id,
                "job_id": row.job_id,
                "path": row.path,
                "page": row.number,
                "confidence": confidence,
            }


def write(db: Database, out: IO[str], fmt: str, batch_id: str | None = None) -> int:
    """Write the pages for review as jsonl, csv or txt; how many there were."""
    recs = pages(db, batch_id)
    return write_records(recs, out, fmt, json_keys=FIELDS, csv_keys=FIELDS, line=_line)


def _line(rec: dict[str, Any]) -> str:
    """One page a line: the path as JSON quotes it (a name may hold a tab or a newline)."""
    read = "no word read" if rec["confidence"] is None else f"confidence {rec['confidence']:.1f}"
    path = json.dumps(rec["path"], ensure_ascii=False)
    where = f"batch {rec['batch_id']}, job {rec['job_id']}"
    return f"{path} page {rec['page']}: {read} ({where})\n"
