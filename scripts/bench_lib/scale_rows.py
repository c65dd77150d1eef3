"""An archive's worth of rows, written straight into the tables (no files, no gearmand).

Most batches are old and finished; the newest few are in flight, one of them holding a
fifth of all documents: documents queued on gearmand, waiting for a retry, never sent or
lost by gearmand, running under live or expired leases. A sample of the finished
documents has pages. Every kind of row the reaper and `status` meet is there, in the
proportions of a busy archive, so their queries are timed against realistic statistics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, text, update

from importer.db.engine import Database
from importer.db.models import Batch, Document, utcnow
from importer.states import DocStatus

BATCH_SIZE = 1000  # documents in each batch but the big one
BIG_SHARE = 5  # the big batch holds 1/BIG_SHARE of the documents
IN_FLIGHT = 4  # the newest batches, the big one among them, are still running
CHUNK = 10_000  # rows per INSERT round trip
PAGED_EVERY = 50  # one finished document in 50 has pages
PAGES_EACH = 2
FRESH = timedelta(seconds=10)  # how long ago a queued job went to gearmand


@dataclass(frozen=True)
class Archive:
    documents: int
    batches: int
    big_batch: str
    big_documents: int
    pages: int


def sha256_of(n: int) -> str:
    """The content hash of generated document `n` (the duplicate check asks for these)."""
    return hashlib.sha256(n.to_bytes(8, "big")).hexdigest()


def _sizes(documents: int) -> list[int]:
    big = documents // BIG_SHARE
    rest = documents - big
    sizes = [BATCH_SIZE] * (rest // BATCH_SIZE)
    if rest % BATCH_SIZE:
        sizes.append(rest % BATCH_SIZE)
    sizes.insert(max(len(sizes) - IN_FLIGHT + 2, 0), big)  # among the newest, not the newest
    return sizes


def _in_flight(n: int, now: datetime, placeholder: datetime) -> dict[str, Any]:
    """The state of the n-th document of a batch still being processed: of every 10,000,
    two each for the reaper to send again (lease run out, lost by gearmand, never sent),
    1 % running, 39 % queued on gearmand, the rest done or failed."""
    state: dict[str, Any] = {"status": DocStatus.done}
    slot = n % 10_000
    if slot < 2:  # running, lease run out
        state = {"status": DocStatus.running, "lease_expires_at": now - timedelta(seconds=30)}
        state.update(lease_owner="gone-host:7", attempts=1, started_at=now - timedelta(hours=1))
    elif slot < 100:  # running under a live lease
        state = {"status": DocStatus.running, "lease_expires_at": now + timedelta(hours=1)}
        state.update(lease_owner=f"host-{n % 8}:{n % 4}", attempts=1, started_at=now)
    elif slot < 102:  # sent an hour ago, and gearmand no longer knows it
        state = {"status": DocStatus.queued, "enqueued_at": now - timedelta(hours=1)}
    elif slot < 104:  # recorded, never sent
        state = {"status": DocStatus.queued}
    elif slot < 110:  # waiting for its next attempt
        state = {"status": DocStatus.queued, "next_attempt_at": now + timedelta(minutes=10)}
        state.update(attempts=1, error="gearmand went away")
    elif slot < 4000:  # on gearmand, waiting for a worker
        state = {"status": DocStatus.queued, "enqueued_at": placeholder}
    elif slot < 4040:
        state = {"status": DocStatus.failed, "error": "not a PDF"}
    return state


def _documents(
    batch_id: str, first: int, count: int, flying: bool, now: datetime, placeholder: datetime
) -> Iterator[dict[str, Any]]:
    for n in range(first, first + count):
        row: dict[str, Any] = {
            "batch_id": batch_id,
            "path": f"/archive/{batch_id}/{n - first:07d}.pdf",
            "size": 50_000 + n % 10_000,
            "sha256": sha256_of(n),
            "status": DocStatus.done,
            "job_id": f"j-{n:024x}",
            "gearman_handle": None,
            "attempts": 1,
            "error": None,
            "pages": 3,
            "pages_done": 3,
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": None,
            "enqueued_at": now - timedelta(days=1),
            "started_at": now - timedelta(days=1),
            "finished_at": now - timedelta(days=1),
        }
        if flying:
            state = _in_flight(n - first, now, placeholder)
            if state["status"] != DocStatus.done:
                row.update(pages_done=0, finished_at=None, enqueued_at=None, attempts=0)
                row.update(started_at=None, pages=None)
                row.update(state)
        elif n % 997 == 0:
            row.update(status=DocStatus.failed, error="not a PDF", pages=None, pages_done=0)
        yield row


def fill(db: Database, documents: int) -> Archive:
    """Write `documents` documents in batches (see the module's docstring) into an empty
    database; the in-flight rows' times are set relative to the end of the writing."""
    sizes = _sizes(documents)
    now = utcnow()
    placeholder = now - timedelta(days=3650)  # replaced by a fresh time once written
    first = 0
    big = ""
    with db.engine.begin() as conn:
        for b, size in enumerate(sizes):
            batch_id = f"scale-{b:06d}"
            flying = b >= len(sizes) - IN_FLIGHT
            conn.execute(
                insert(Batch),
                {
                    "id": batch_id,
                    "email": f"team{b % 20}@example.com",
                    "total": size,
                    "skipped": 0,
                    "created_at": now - timedelta(minutes=len(sizes) - b),
                    "finished_at": None if flying else now - timedelta(minutes=len(sizes) - b - 1),
                },
            )
            if size == documents // BIG_SHARE:
                big = batch_id
            rows = _documents(batch_id, first, size, flying, now, placeholder)
            _insert_chunks(conn, rows)
            first += size
        conn.execute(
            text(
                "INSERT INTO pages (document_id, number, text, source, confidence, seconds)"
                " SELECT d.id, n.number, 'Lorem ipsum dolor sit amet, page ' || n.number, 'ocr',"
                " 91.5, 0.8 FROM documents d CROSS JOIN (SELECT 1 AS number UNION ALL SELECT 2)"
                f" n WHERE d.status = 'done' AND d.id % {PAGED_EVERY} = 0"
            )
        )
        pages = conn.execute(text("SELECT count(*) FROM pages")).scalar_one()
    with db.engine.begin() as conn:
        conn.execute(
            update(Document)
            .where(Document.status == DocStatus.queued, Document.enqueued_at == placeholder)
            .values(enqueued_at=utcnow() - FRESH)
        )
    analyze(db)
    return Archive(documents, len(sizes), big, documents // BIG_SHARE, int(pages))


def _insert_chunks(conn: Any, rows: Iterator[dict[str, Any]]) -> None:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            conn.execute(insert(Document), chunk)
            chunk = []
    if chunk:
        conn.execute(insert(Document), chunk)


def analyze(db: Database) -> None:
    """PostgreSQL's planner statistics and visibility map, as autovacuum keeps them on a
    live database after a large insert. SQLite is left as the importer leaves it: without
    ANALYZE, its planner goes by the indexes alone."""
    if db.dialect == "postgresql":
        with db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("VACUUM ANALYZE"))
