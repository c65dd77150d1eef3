"""Documents from the database onto gearmand: sign, submit, record handles, undo what failed.

The caller has marked each document enqueued (a guarded UPDATE) before it is sent, so two
senders on different hosts never both send it; here that mark is kept for every job
gearmand accepted and taken back from every other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from importer import inline, payload
from importer.db.engine import Database
from importer.db.models import Batch, Document
from importer.errors import GearmanUnavailable
from importer.gearman.client import GROUP_SIZE, GearmanIO, JobSpec

# Bytes of inline jobs per submit call: the sender holds a few copies of this at once.
INLINE_CHUNK_BYTES = 16 * 2**20


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


def send(
    db: Database,
    gio: GearmanIO,
    doc_ids: Sequence[int],
    keyring: payload.Keyring,
    *,
    sender: bool = False,
    opened: Mapping[str, int] | None = None,
) -> int:
    """Sign and submit documents already marked enqueued; undo the mark for any not accepted.

    When gearmand fails part-way, the handles it did give are recorded (those jobs are on
    its queue and keep their mark); only the rest, this group's refused jobs and every later
    group, are unmarked for the reaper or `importer retry`. Raises SendIncomplete then.
    A document of an inline batch carries its file's bytes, read here (from `opened`, path
    -> the descriptor the submitter hashed, where it has one); one whose file this host
    cannot read goes back to its batch's sender, or fails (`importer.inline.hand_back`),
    at once when this process is that `sender`.
    """
    sent = 0
    for start in range(0, len(doc_ids), GROUP_SIZE):
        group = list(doc_ids[start : start + GROUP_SIZE])
        with db.session() as s:
            rows = s.execute(
                select(
                    Document.id,
                    Document.job_id,
                    Document.path,
                    Batch.email,
                    Batch.priority,
                    Batch.inline,
                    Document.size,
                    Document.sha256,
                )
                .join(Batch)
                .where(Document.id.in_(group))
                .order_by(Document.id)
            ).all()
        handles: dict[str, str] = {}
        unreadable: dict[int, inline.Unreadable] = {}
        try:
            for specs in _specs(rows, keyring, unreadable, opened or {}):
                handles.update(gio.submit_background(specs))
        except GearmanUnavailable as e:
            handles.update(getattr(e, "accepted", {}))
            taken = [(d, handles[j]) for d, j, *_ in rows if j in handles]
            queued = {d for d, _ in taken}
            unsent = [d for d in doc_ids[start:] if d not in queued and d not in unreadable]
            with db.session() as s:
                store_handles(s, taken)
                for first in range(0, len(unsent), GROUP_SIZE):
                    s.execute(
                        update(Document)
                        .where(Document.id.in_(unsent[first : first + GROUP_SIZE]))
                        .values(enqueued_at=None)
                    )
            inline.hand_back(
                db, unreadable, inline.inline_batches(db, list(unreadable)), sender=sender
            )
            sent += len(taken)
            raise SendIncomplete(
                f"{sent} of {len(doc_ids)} documents were queued before gearmand failed, "
                f"{len(unsent)} were not: {e.message}",
                sent=sent,
            ) from e
        with db.session() as s:
            store_handles(s, [(d, handles[j]) for d, j, *_ in rows if j in handles])
        if unreadable:
            inline.hand_back(
                db, unreadable, inline.inline_batches(db, list(unreadable)), sender=sender
            )
        sent += len(handles)
    return sent


def _specs(
    rows: Sequence[Any],
    keyring: payload.Keyring,
    unreadable: dict[int, inline.Unreadable],
    opened: Mapping[str, int],
) -> Iterator[list[JobSpec]]:
    """The jobs of a group: plain ones in one list; inline ones read a file at a time, in
    lists of about INLINE_CHUNK_BYTES, so a sender holds a few copies of a chunk, not of
    the group. A file that cannot be sent from here goes into `unreadable` with its reason.
    """
    plain = [
        JobSpec(unique=r.job_id, data=payload.encode(r.job_id, r.path, r.email, keyring=keyring),
                priority=r.priority)
        for r in rows
        if not r.inline
    ]  # fmt: skip
    if plain:
        yield plain
    chunk: list[JobSpec] = []
    size = 0
    for r in rows:
        if not r.inline:
            continue
        try:
            content = inline.read_recorded(r.path, r.size, r.sha256, opened.get(r.path))
        except inline.Unreadable as e:
            unreadable[r.id] = e
            continue
        data = payload.encode(r.job_id, r.path, r.email, keyring=keyring, content=content)
        chunk.append(JobSpec(unique=r.job_id, data=data, priority=r.priority))
        size += len(content)
        del content, data
        if size >= INLINE_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
