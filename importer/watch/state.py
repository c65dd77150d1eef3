"""What a watch has decided, in the database: the batch it is filling and, per file, the
size and modification time it had when it was decided on.

A file's row is written `pending` (with the batch) before it is submitted and given its
outcome after, from the documents the submission recorded. A watch stopped between the
two finds, when it starts again, either the file's document in that batch (so it is not
sent twice) or none (so it is looked at again): nothing repeated, nothing lost. The batch
is closed (its total set, so the last document to finish sends its one e-mail) only once
no file of it is pending.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import bindparam, delete, func, insert, select, update

from importer.db.engine import Database
from importer.db.lifecycle import close_batch_if_done
from importer.db.models import Batch, Document, Watch, WatchedFile, utcnow
from importer.states import DocStatus, NotifyMode, Priority, TextLayerMode
from importer.submit import new_batch_id, stored_path

log = logging.getLogger(__name__)

_CHUNK = 500  # paths per IN (...) list
_DECIDE = (
    update(WatchedFile)
    .where(WatchedFile.id == bindparam("row_id"))
    .values(outcome=bindparam("new_outcome"), reason=bindparam("new_reason"))
)


class Outcome(enum.StrEnum):
    pending = "pending"  # being submitted now
    submitted = "submitted"  # a document of the batch, queued
    failed = "failed"  # a document of the batch, recorded failed (its reason beside it)
    skipped = "skipped"  # already imported: a document with the same sha256 is done
    ignored = "ignored"  # not a PDF and not named .pdf


@dataclass(frozen=True)
class Decided:
    path: str
    outcome: Outcome
    reason: str | None


@dataclass(frozen=True)
class Settled:
    """A file ready to submit, as it was seen when it settled."""

    path: str
    size: int
    mtime_ns: int
    looks_pdf: bool


@dataclass(frozen=True)
class BatchSettings:
    email: str
    lang: str
    notify: NotifyMode
    text_layer: TextLayerMode


def watch_key(dirs: Sequence[Path], email: str) -> str:
    """The same directories watched for the same address are the same watch."""
    text = "\n".join(sorted(map(str, dirs))) + "\n" + email
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()


class WatchState:
    def __init__(self, db: Database, dirs: Sequence[Path], email: str) -> None:
        self.db = db
        self.key = watch_key(dirs, email)
        with db.session() as s:
            if s.get(Watch, self.key) is None:
                s.add(Watch(key=self.key, dirs="\n".join(map(str, dirs))))

    def known(self) -> dict[str, tuple[int, int]]:
        """Each decided file's (size, mtime_ns) when it was decided on."""
        with self.db.session() as s:
            rows = s.execute(
                select(WatchedFile.path, WatchedFile.size, WatchedFile.mtime_ns).where(
                    WatchedFile.watch == self.key, WatchedFile.outcome != Outcome.pending.value
                )
            )
            return {path: (size, mtime_ns) for path, size, mtime_ns in rows}

    def open_batch(self) -> tuple[str, datetime] | None:
        with self.db.session() as s:
            watch = s.get(Watch, self.key)
            assert watch is not None
            if watch.batch_id is None or watch.batch_opened_at is None:
                return None
            return watch.batch_id, watch.batch_opened_at

    def start_batch(self, settings: BatchSettings, priority: Priority) -> str:
        """The open batch, made now if there is none: a total of 0 keeps it open."""
        opened = self.open_batch()
        if opened is not None:
            return opened[0]
        batch_id = new_batch_id()
        with self.db.session() as s:
            s.add(
                Batch(
                    id=batch_id,
                    email=settings.email,
                    notify=settings.notify,
                    lang=settings.lang,
                    priority=priority,
                    text_layer=settings.text_layer,
                )
            )
            s.flush()
            s.execute(
                update(Watch)
                .where(Watch.key == self.key)
                .values(batch_id=batch_id, batch_opened_at=utcnow())
            )
        log.info("batch %s opened", batch_id)
        return batch_id

    def documents_in(self, batch_id: str) -> int:
        with self.db.session() as s:
            count = s.scalar(
                select(func.count()).select_from(Document).where(Document.batch_id == batch_id)
            )
            return int(count or 0)

    def mark_pending(self, batch_id: str, files: Sequence[Settled]) -> None:
        now = utcnow()
        with self.db.session() as s:
            for first in range(0, len(files), _CHUNK):
                chunk = files[first : first + _CHUNK]
                s.execute(
                    delete(WatchedFile).where(
                        WatchedFile.watch == self.key,
                        WatchedFile.path.in_([f.path for f in chunk]),
                    )
                )
            if files:
                s.execute(
                    insert(WatchedFile),
                    [
                        {
                            "watch": self.key,
                            "path": f.path,
                            "size": f.size,
                            "mtime_ns": f.mtime_ns,
                            "outcome": Outcome.pending.value,
                            "batch_id": batch_id,
                            # noted for the outcome of a file submit records nothing of
                            "reason": None if f.looks_pdf else "not a PDF",
                            "decided_at": now,
                        }
                        for f in files
                    ],
                )

    def resolve_pending(self, *, submitted: bool) -> list[Decided]:
        """Give each pending file its outcome from its batch's documents.

        `submitted`: the submission just returned, so a file with no document was left
        out by it (already imported, or not a PDF). Otherwise (a start after a stop in the
        middle) such a file's submission may never have happened: it is forgotten, to be
        looked at again.
        """
        decided: list[Decided] = []
        with self.db.session() as s:
            pending = s.execute(
                select(WatchedFile.id, WatchedFile.path, WatchedFile.batch_id, WatchedFile.reason)
                .where(WatchedFile.watch == self.key, WatchedFile.outcome == Outcome.pending.value)
                .order_by(WatchedFile.id)
            ).all()
            for first in range(0, len(pending), _CHUNK):
                decided += self._resolve(s, pending[first : first + _CHUNK], submitted)
        return decided

    def _resolve(self, s, rows, submitted: bool) -> list[Decided]:  # type: ignore[no-untyped-def]
        by_stored = {
            (batch, stored_path(path)): (row_id, path, note) for row_id, path, batch, note in rows
        }
        found: dict[tuple[str, str], tuple[DocStatus, str | None]] = {}
        for batch, path, status, error in s.execute(
            select(Document.batch_id, Document.path, Document.status, Document.error)
            .where(
                Document.batch_id.in_({batch for batch, _ in by_stored}),
                Document.path.in_([path for _, path in by_stored]),
            )
            .order_by(Document.id)
        ):
            found[(batch, path)] = (status, error)  # the newest of a path last
        decided: list[Decided] = []
        rows_out: list[dict[str, object]] = []
        for key, (row_id, path, note) in by_stored.items():
            doc = found.get(key)
            reason: str | None
            if doc is None and not submitted:
                s.execute(delete(WatchedFile).where(WatchedFile.id == row_id))
                continue
            if doc is None:
                outcome, reason = (
                    (Outcome.ignored, "not a PDF and not named .pdf")
                    if note
                    else (Outcome.skipped, "already imported (a document with its sha256 is done)")
                )
            elif doc[0] == DocStatus.failed:
                outcome, reason = Outcome.failed, doc[1]
            else:
                outcome, reason = Outcome.submitted, None
            rows_out.append({"row_id": row_id, "new_outcome": outcome.value, "new_reason": reason})
            decided.append(Decided(path, outcome, reason))
        if rows_out:
            s.connection().execute(_DECIDE.values(decided_at=utcnow()), rows_out)
        return decided

    def close_batch(self) -> str | None:
        """Close the open batch: its total is set, so it finishes (and sends its e-mail)
        when its last document does, or now if they all have; one with no document (every
        file skipped) is removed. Returns the batch closed, if any."""
        opened = self.open_batch()
        if opened is None:
            return None
        batch_id = opened[0]
        with self.db.session() as s:
            s.execute(
                update(Watch)
                .where(Watch.key == self.key)
                .values(batch_id=None, batch_opened_at=None)
            )
            total = s.scalar(
                select(func.count()).select_from(Document).where(Document.batch_id == batch_id)
            )
            if not total:
                s.execute(delete(Batch).where(Batch.id == batch_id))
                return None
            s.execute(update(Batch).where(Batch.id == batch_id).values(total=total))
        close_batch_if_done(self.db, batch_id)
        return batch_id
