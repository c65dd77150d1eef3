"""`importer export`: the imported text, streamed."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

from sqlalchemy import select

from importer.archive_names import written
from importer.db.engine import Database
from importer.db.models import Document, Page

# jsonl: exactly the keys of DESIGN.md's public interface
FIELDS = ["batch_id", "path", "sha256", "status", "pages", "text", "error", "job_id", "archive"]
# csv: those, then each document's own figures (seconds: from its start to its finish)
CSV_FIELDS = [
    *FIELDS,
    "pages_text_layer",
    "pages_ocr",
    "mean_confidence",
    "pages_review",
    "attempts",
    "seconds",
]
FORM_FEED = "\f"
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# Injection"); such a cell is written with a leading single quote, which shows it as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def records(db: Database, batch_id: str | None = None) -> Iterator[dict[str, Any]]:
    """One dict per document with the keys of CSV_FIELDS; `text` is the pages in order
    joined with a form feed."""
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
                "archive": written(doc.archive, doc.status),
                "pages_text_layer": doc.pages_text_layer,
                "pages_ocr": doc.pages_ocr,
                "mean_confidence": doc.mean_confidence,
                "pages_review": doc.pages_review,
                "attempts": doc.attempts,
                "seconds": _seconds(doc),
            }


def write(db: Database, out: IO[str], fmt: str, batch_id: str | None = None) -> int:
    return write_records(
        records(db, batch_id),
        out,
        fmt,
        json_keys=FIELDS,
        csv_keys=CSV_FIELDS,
        line=lambda rec: f"==> {rec['path']} [{rec['status']}] <==\n{rec['text']}\n",
    )


def write_records(
    recs: Iterable[dict[str, Any]],
    out: IO[str],
    fmt: str,
    *,
    json_keys: Sequence[str],
    csv_keys: Sequence[str],
    line: Callable[[dict[str, Any]], str],
) -> int:
    """Records as jsonl (their `json_keys`), csv (their `csv_keys`, every cell guarded) or
    txt (`line` of each); how many there were."""
    count = 0
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=csv_keys)
        writer.writeheader()
    for rec in recs:
        if fmt == "jsonl":
            out.write(json.dumps({k: rec[k] for k in json_keys}, ensure_ascii=False) + "\n")
        elif writer is not None:
            writer.writerow({k: _cell(rec[k]) for k in csv_keys})
        else:
            out.write(line(rec))
        count += 1
    return count


def _seconds(doc: Document) -> float | None:
    """How long the document took, from its start to its finish; None while unfinished."""
    if doc.started_at is None or doc.finished_at is None:
        return None
    return round((doc.finished_at - doc.started_at).total_seconds(), 3)


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: file names, errors and page text come from
    outside, and a leading quote is how OWASP's advice keeps a formula from running."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
