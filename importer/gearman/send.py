"""Documents from the database onto gearmand: sign, submit, record handles, undo what failed.

The caller has marked each document enqueued (a guarded UPDATE) before it is sent, so two
senders on different hosts never both send it; here that mark is kept for every job
gearmand accepted and taken back from every other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from importer import payload
from importer.db.engine import Database
from importer.db.models import Batch, Document
from importer.errors import GearmanUnavailable
from importer.gearman.client import GROUP_SIZE, GearmanIO, JobSpec


class SendIncomplete(GearmanUnavailable):
    """gearmand went away part-way through a send: `sent` documents were queued."""

    def __init__(self, message: str, sent: int) -> None:
        super().__init__(message)
        self.sent = sent


def store_handles(s: Session, handles: Sequence[tuple[int, str]]) -> None:
    """Record gearmand's handle of each (document id, handle) in one executemany UPDATE."""
    if not handles:
        return
    table: Any = Document.__table__  # Core UPDATE: one executemany, not an ORM flush
    s.connection().execute(
        update(table)
        .where(table.c.id == bindparam("doc_id"))
        .values(gearman_handle=bindparam("handle")),
        [{"doc_id": doc_id, "handle": handle} for doc_id, handle in handles],
    )


def send(db: Database, gio: GearmanIO, doc_ids: Sequence[int], keyring: payload.Keyring) -> int:
    """Sign and submit documents already marked enqueued; undo the mark for any not accepted.

    When gearmand fails part-way, the handles it did give are recorded (those jobs are on
    its queue and keep their mark); only the rest, this group's refused jobs and every later
    group, are unmarked for the reaper or `importer retry`. Raises SendIncomplete then.
    """
    sent = 0
    for start in range(0, len(doc_ids), GROUP_SIZE):
        group = list(doc_ids[start : start + GROUP_SIZE])
        with db.session() as s:
            rows = s.execute(
                select(Document.id, Document.job_id, Document.path, Batch.email, Batch.priority)
                .join(Batch)
                .where(Document.id.in_(group))
                .order_by(Document.id)
            ).all()
        specs = [
            JobSpec(
                unique=job_id,
                data=payload.encode(job_id, path, email, keyring=keyring),
                priority=priority,
            )
            for _, job_id, path, email, priority in rows
        ]
        try:
            handles = gio.submit_background(specs)
        except GearmanUnavailable as e:
            accepted: dict[str, str] = getattr(e, "accepted", {})
            taken = [(d, accepted[j]) for d, j, *_ in rows if j in accepted]
            queued = {d for d, _ in taken}
            unsent = [d for d in doc_ids[start:] if d not in queued]
            with db.session() as s:
                store_handles(s, taken)
                for first in range(0, len(unsent), GROUP_SIZE):
                    s.execute(
                        update(Document)
                        .where(Document.id.in_(unsent[first : first + GROUP_SIZE]))
                        .values(enqueued_at=None)
                    )
            sent += len(taken)
            raise SendIncomplete(
                f"{sent} of {len(doc_ids)} documents were queued before gearmand failed, "
                f"{len(unsent)} were not: {e.message}",
                sent=sent,
            ) from e
        with db.session() as s:
            store_handles(s, [(d, handles[j]) for d, j, *_ in rows if j in handles])
        sent += len(handles)
    return sent
