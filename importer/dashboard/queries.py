"""What the batch, document and failure pages read, each through an index.

A batch's documents come a page at a time by id (ix_documents_batch_id), a document's
pages by their primary key, failures grouped by kind from ix_documents_status_error_kind:
each page costs the same in an archive of a million documents as in a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from importer.db.engine import Database
from importer.db.models import Document, Page
from importer.states import DocStatus, PageSource

DOCUMENTS_PER_PAGE = 50
PAGES_PER_VIEW = 20
FAILURE_KINDS_SHOWN = 50
EXAMPLES_PER_KIND = 5
FAILED = (DocStatus.failed, DocStatus.dead)


@dataclass(frozen=True)
class DocumentRow:
    id: int
    batch_id: str
    path: str
    status: DocStatus
    pages: int | None
    pages_done: int
    attempts: int
    error: str | None
    error_kind: str | None
    pages_review: int
    archive: str | None = None  # its searchable PDF's path (recorded at submit)

    @property
    def failed(self) -> bool:
        return self.status in FAILED


_COLUMNS = (
    Document.id,
    Document.batch_id,
    Document.path,
    Document.status,
    Document.pages,
    Document.pages_done,
    Document.attempts,
    Document.error,
    Document.error_kind,
    Document.pages_review,
    Document.archive,
)


@dataclass(frozen=True)
class DocumentsPage:
    rows: tuple[DocumentRow, ...]
    before: int | None  # the id to list backwards from, when earlier documents exist
    after: int | None  # the id to list onwards from, when later documents exist


def documents_page(
    db: Database, batch_id: str, *, after: int | None = None, before: int | None = None
) -> DocumentsPage:
    """Up to DOCUMENTS_PER_PAGE of the batch's documents in submission order, after the id
    `after` (or before `before`), and where the neighbouring pages start."""
    ids = select(Document.id).where(Document.batch_id == batch_id)
    if before is not None:
        ids = ids.where(Document.id < before).order_by(Document.id.desc())
    elif after is not None:
        ids = ids.where(Document.id > after).order_by(Document.id)
    else:
        ids = ids.order_by(Document.id)
    # The ids first, from ix_documents_batch_id alone, as in importer.status.documents.
    with db.session() as s:
        found = sorted(s.scalars(ids.limit(DOCUMENTS_PER_PAGE)))
        rows = s.execute(select(*_COLUMNS).where(Document.id.in_(found)).order_by(Document.id))
        listed = tuple(DocumentRow(**row._asdict()) for row in rows)
        earlier = bool(listed) and _exists(s, batch_id, before=listed[0].id)
        later = bool(listed) and _exists(s, batch_id, after=listed[-1].id)
    return DocumentsPage(
        rows=listed,
        before=listed[0].id if earlier else None,
        after=listed[-1].id if later else None,
    )


def _exists(s: Session, batch_id: str, *, before: int = 0, after: int = 0) -> bool:
    """Whether the batch has a document before (or after) the id. Ordered, so that it is
    asked of ix_documents_batch_id: unordered, PostgreSQL may scan the table for a row
    that is not there."""
    query = select(Document.id).where(Document.batch_id == batch_id)
    if before:
        query = query.where(Document.id < before).order_by(Document.id.desc())
    else:
        query = query.where(Document.id > after).order_by(Document.id)
    return s.scalar(query.limit(1)) is not None


@dataclass(frozen=True)
class PageText:
    number: int
    text: str
    source: PageSource
    confidence: float | None
    review: bool


@dataclass(frozen=True)
class DocumentText:
    document: DocumentRow
    pages: tuple[PageText, ...]  # up to PAGES_PER_VIEW, from page `first`
    first: int
    next_first: int | None  # the page the next view starts at, when there are more


def document_text(db: Database, document_id: int, first: int = 1) -> DocumentText | None:
    """The document and the text of up to PAGES_PER_VIEW of its pages from page `first`."""
    with db.session() as s:
        row = s.execute(select(*_COLUMNS).where(Document.id == document_id)).first()
        if row is None:
            return None
        pages = s.execute(
            select(Page.number, Page.text, Page.source, Page.confidence, Page.review)
            .where(Page.document_id == document_id, Page.number >= first)
            .order_by(Page.number)
            .limit(PAGES_PER_VIEW + 1)
        ).all()
    shown = tuple(PageText(*page) for page in pages[:PAGES_PER_VIEW])
    more = len(pages) > PAGES_PER_VIEW
    return DocumentText(
        document=DocumentRow(**row._asdict()),
        pages=shown,
        first=first,
        next_first=pages[PAGES_PER_VIEW].number if more else None,
    )


@dataclass(frozen=True)
class FailureKind:
    kind: str | None  # None: not classified
    count: int
    examples: tuple[DocumentRow, ...]

    @property
    def batches(self) -> tuple[str, ...]:
        """The batches of the examples, for `importer retry BATCH`."""
        return tuple(dict.fromkeys(row.batch_id for row in self.examples))


def failures(db: Database) -> tuple[FailureKind, ...]:
    """Failed and dead documents of every batch by error kind, the largest group first,
    each with a few examples."""
    counted = (
        select(Document.error_kind, func.count())
        .where(Document.status.in_(FAILED))
        .group_by(Document.error_kind)
    )
    out = []
    with db.session() as s:
        kinds = sorted(s.execute(counted).all(), key=lambda row: (-row[1], row[0] or ""))
        for kind, count in kinds[:FAILURE_KINDS_SHOWN]:
            same = Document.error_kind.is_(None) if kind is None else Document.error_kind == kind
            examples = s.execute(
                select(*_COLUMNS).where(Document.status.in_(FAILED), same).limit(EXAMPLES_PER_KIND)
            )
            out.append(
                FailureKind(kind, int(count), tuple(DocumentRow(**r._asdict()) for r in examples))
            )
    return tuple(out)
