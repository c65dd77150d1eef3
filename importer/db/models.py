"""Tables. Column types that work the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from importer.states import DocStatus, NotifyMode, PageSource, Priority, TextLayerMode


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, also on SQLite (which keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(cls: type) -> Enum:
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Base(DeclarativeBase):
    pass


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    notify: Mapped[NotifyMode] = mapped_column(_enum(NotifyMode), default=NotifyMode.batch)
    lang: Mapped[str] = mapped_column(String(64), default="eng")
    priority: Mapped[Priority] = mapped_column(_enum(Priority), default=Priority.normal)
    text_layer: Mapped[TextLayerMode] = mapped_column(
        _enum(TextLayerMode), default=TextLayerMode.auto, server_default=TextLayerMode.auto.value
    )
    total: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    # submit --inline: each job carries its file's bytes (importer.inline); the submitting
    # process sends the documents within the in-flight cap until `inline_sender_until`.
    inline: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    inline_sender_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # submit --archive DIR: workers write each document's searchable PDF under it
    archive_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    documents: Mapped[list[Document]] = relationship(back_populates="batch")

    # `status` lists the newest batches first without reading the others
    __table_args__ = (Index("ix_batches_created_at", "created_at"),)


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[DocStatus] = mapped_column(_enum(DocStatus), default=DocStatus.queued)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    gearman_handle: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # a short stable code for the reason (`encrypted`, `corrupt`, `timeout`...), kept beside
    # the free-text `error` so failures group across batches
    error_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pages_done: Mapped[int] = mapped_column(Integer, default=0)
    # kept with the pages, in the transaction that stores them: a report or a metric reads
    # a document's row, not its pages
    pages_text_layer: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pages_ocr: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pages_review: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    mean_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the searchable PDF's path, named at submit (importer.archive_names), written when done
    archive: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    batch: Mapped[Batch] = relationship(back_populates="documents")

    # Every query that runs per batch, per reaper pass or per group of submitted files is
    # answered from one of these, so none reads all documents (`scripts/bench --sections
    # scale`: a million documents).
    __table_args__ = (
        # a batch's counts per state and pages (status), read from the index alone; what
        # is left of a batch (finish)
        Index("ix_documents_batch_status_pages", "batch_id", "status", "pages_done"),
        # a batch's documents in the order they were submitted, the first N of them
        Index("ix_documents_batch_id", "batch_id", "id"),
        # submit's duplicate check
        Index("ix_documents_sha256_status", "sha256", "status"),
        # the reaper: leases run out
        Index("ix_documents_status_lease", "status", "lease_expires_at"),
        # the reaper: queued and never sent (NULL), or sent long ago and maybe lost
        Index("ix_documents_status_enqueued", "status", "enqueued_at"),
        # the supervisor: when the next document waiting out a retry's backoff is due
        Index("ix_documents_status_next_attempt", "status", "next_attempt_at"),
        # failures across batches grouped by their kind (the dashboard, /metrics)
        Index("ix_documents_status_error_kind", "status", "error_kind"),
        # no two documents are given one archive name
        Index("ux_documents_archive", "archive", unique=True),
    )


class Page(Base):
    __tablename__ = "pages"

    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[PageSource] = mapped_column(_enum(PageSource))
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    # read badly: OCR confidence below IMPORTER_REVIEW_CONFIDENCE, or no word found on an
    # image that is not blank
    review: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Outbox(Base):
    """An e-mail decided in the same transaction as the state that caused it.

    `key` makes the decision exactly-once (`importer.db.outbox_key`); a row with no
    `sent_at` is delivered by whichever worker or reaper gets to it.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    recipient: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class RejectedJob(Base):
    """A job a worker refused (forged, expired, replayed...): counted, never processed."""

    __tablename__ = "rejected_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    unique: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # "rejected": failed verification or named no matching document (forged, tampered,
    # expired); "replayed": a valid redelivery of a finished document (gearmand's own).
    kind: Mapped[str] = mapped_column(String(16), default="rejected", server_default="rejected")


class SigningKey(Base):
    """A payload signing key some host of the fleet holds: its id and a fingerprint (an
    HMAC of a fixed label, never the secret), so hosts holding different keys notice."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    seq: Mapped[int] = mapped_column(Integer, default=0)  # higher: introduced later


class Watch(Base):
    """One `importer watch` of some directories for one address: the batch it is filling."""

    __tablename__ = "watches"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # importer.watch.state
    dirs: Mapped[str] = mapped_column(Text)  # for people: the directories, one a line
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("batches.id", ondelete="SET NULL"), nullable=True
    )
    batch_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WatchedFile(Base):
    """A file a watch has decided on, as it was then (size, mtime): it is looked at again
    only once either changes. `pending` while its submission is under way."""

    __tablename__ = "watched_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    watch: Mapped[str] = mapped_column(ForeignKey("watches.key", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    batch_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_watched_files_watch_path", "watch", "path", unique=True),)
