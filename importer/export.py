"""`importer export` and `importer search`: the imported text, streamed."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO, Any

from sqlalchemy import select

from importer.db.engine import Database
from importer.db.models import Document, Page

FIELDS = ["batch_id", "path", "sha256", "status", "pages", "text", "error", "job_id"]
FORM_FEED = "\f"


def records(db: Database, batch_id: str | None = None) -> Iterator[dict[str, Any]]:
    """One dict per document; `text` is the pages in order joined with a form feed."""
    query = select(Document).order_by(Document.batch_id, Document.path, Document.id)
    if batch_id:
        query = query.where(Document.batch_id == batch_id)
    with db.session() as s:
        for doc in s.execute(query.execution_options(yield_per=200)).scalars():
            texts = s.scalars(
                select(Page.text).where(Page.document_id == doc.id).order_by(Page.number)
            ).all()
            yield {
                "batch_id": doc.batch_id,
                "path": doc.path,
                "sha256": doc.sha256,
                "status": doc.status.value,
                "pages": doc.pages_done,
                "text": FORM_FEED.join(texts),
                "error": doc.error,
                "job_id": doc.job_id,
            }


def write(db: Database, out: IO[str], fmt: str, batch_id: str | None = None) -> int:
    count = 0
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        writer.writeheader()
    for rec in records(db, batch_id):
        if fmt == "jsonl":
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        elif writer is not None:
            writer.writerow(rec)
        else:
            out.write(f"==> {rec['path']} [{rec['status']}] <==\n{rec['text']}\n")
        count += 1
    return count


def search(db: Database, query: str, limit: int = 20) -> list[dict[str, Any]]:
    """Pages whose text contains the query (case-insensitive), with a snippet around it."""
    with db.session() as s:
        rows = s.execute(
            select(Document.path, Document.batch_id, Page.number, Page.text)
            .join(Page)
            .where(Page.text.icontains(query, autoescape=True))
            .order_by(Document.path, Page.number)
            .limit(limit)
        ).all()
    hits = []
    for path, batch_id, number, text in rows:
        at = text.lower().find(query.lower())
        start = max(0, at - 60)
        snippet = " ".join(text[start : at + len(query) + 60].split())
        hits.append({"path": path, "batch_id": batch_id, "page": number, "snippet": snippet})
    return hits
