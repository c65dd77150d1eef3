"""A document's end in one transaction: its last pages, its page count, its status and the
batch's end, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from importer.db import lifecycle
from importer.db.engine import Database, open_database
from importer.db.models import Batch, Document, Outbox, Page
from importer.states import DocStatus, NotifyMode, PageSource


def _batch(database_url: str, docs: int, notify: NotifyMode) -> tuple[Database, list[int]]:
    db = open_database(database_url)
    batch = f"b-{uuid.uuid4().hex[:12]}"
    with db.session() as s:
        s.add(Batch(id=batch, email="a@example.com", lang="eng", notify=notify, total=docs))
        for _ in range(docs):
            job = f"j-{uuid.uuid4().hex}"
            s.add(Document(batch_id=batch, path=f"/in/{job}.pdf", sha256=job[:64], job_id=job))
    with db.session() as s:
        rows = s.execute(
            select(Document.id, Document.job_id, Document.path).where(Document.batch_id == batch)
        ).all()
    ids = []
    for doc_id, job_id, path in rows:
        claimed = lifecycle.claim(
            db, job_id=job_id, path=path, email="a@example.com", owner="w:1", lease_seconds=60
        )
        assert isinstance(claimed, lifecycle.Claimed) and claimed.id == doc_id
        ids.append(doc_id)
    return db, ids


PAGES = [lifecycle.StoredPage(n, f"page {n}", PageSource.text_layer, None, 0.01) for n in (1, 2)]


def test_finish_stores_pages_count_and_status_and_closes_the_batch(database_url: str) -> None:
    db, (first, last) = _batch(database_url, 2, NotifyMode.batch)
    done = lifecycle.finish(
        db, first, owner="w:1", status=DocStatus.done, pages=PAGES, page_count=2
    )
    assert done is lifecycle.Finished.done
    closing = lifecycle.finish(db, last, owner="w:1", status=DocStatus.done, page_count=0)
    assert closing is lifecycle.Finished.mail  # the batch's e-mail is due now
    with db.session() as s:
        doc = s.get(Document, first)
        assert doc is not None
        assert (doc.status, doc.pages, doc.pages_done, doc.lease_owner) == (
            DocStatus.done,
            2,
            2,
            None,
        )
        texts = s.scalars(select(Page.text).where(Page.document_id == first).order_by(Page.number))
        assert list(texts) == ["page 1", "page 2"]
        batch = s.get(Batch, doc.batch_id)
        assert batch is not None and batch.finished_at is not None
        assert len(s.scalars(select(Outbox).where(Outbox.batch_id == doc.batch_id)).all()) == 1


def test_finish_without_the_lease_stores_nothing(database_url: str) -> None:
    db, (doc_id,) = _batch(database_url, 1, NotifyMode.each)
    lost = lifecycle.finish(
        db, doc_id, owner="w:2", status=DocStatus.done, pages=PAGES, page_count=2
    )
    assert lost is lifecycle.Finished.lost and not lost
    with db.session() as s:
        assert s.scalars(select(Page).where(Page.document_id == doc_id)).all() == []
        doc = s.get(Document, doc_id)
        assert doc is not None
        assert (doc.status, doc.pages) == (DocStatus.running, None)
        assert s.scalars(select(Outbox).where(Outbox.batch_id == doc.batch_id)).all() == []


def test_finish_keeps_a_page_count_stored_by_an_earlier_flush(database_url: str) -> None:
    db, (doc_id,) = _batch(database_url, 1, NotifyMode.none)
    assert lifecycle.save_pages(db, doc_id, "w:1", PAGES[:1], 60, page_count=2)
    finished = lifecycle.finish(db, doc_id, owner="w:1", status=DocStatus.done, pages=PAGES[1:])
    assert finished is lifecycle.Finished.done
    with db.session() as s:
        doc = s.get(Document, doc_id)
        assert doc is not None
        assert (doc.pages, doc.pages_done, doc.error) == (2, 2, None)


def test_a_batch_still_being_submitted_stays_open(database_url: str) -> None:
    """Its total is set when the submit ends; until then no finish closes it."""
    db, (doc_id,) = _batch(database_url, 1, NotifyMode.batch)
    with db.session() as s:
        doc = s.get(Document, doc_id)
        assert doc is not None
        batch = s.get(Batch, doc.batch_id)
        assert batch is not None
        batch.total = 0
    finished = lifecycle.finish(db, doc_id, owner="w:1", status=DocStatus.done)
    assert finished is lifecycle.Finished.done
    with db.session() as s:
        batch = s.get(Batch, doc.batch_id)
        assert batch is not None and batch.finished_at is None
