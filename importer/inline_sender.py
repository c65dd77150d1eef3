"""The sender of an inline batch: sends its documents as jobs finish, under the cap.

The process that submitted (or retries) an inline batch holds the files, so it sends the
batch's documents itself, a cap's worth at a time (`importer.inline`), and stays the
batch's sender (renewing `batches.inline_sender_until`) until every document has been
sent, or, with `until_finished` (`submit --inline --wait`, `importer retry`), until the
batch has finished, so that a document handed back by a reaper that cannot read its file
(its worker died, it failed transiently) is sent again from here. A document the sender
cannot send itself fails at once (`importer.inline.hand_back`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from sqlalchemy import func, select, update

from importer import inline, payload
from importer.db.engine import Database
from importer.db.models import Document, utcnow
from importer.gearman.client import GROUP_SIZE, GearmanIO
from importer.gearman.send import send
from importer.states import UNFINISHED, DocStatus

POLL_SECONDS = 0.5  # how often finished jobs are looked for, to send the next ones


def pump(
    db: Database,
    gio: GearmanIO,
    keyring: payload.Keyring,
    batch_id: str,
    cap: int,
    opened: Mapping[str, int] | None = None,
) -> int:
    """Send what the cap allows of the batch's unsent documents now; how many were sent.
    `opened`: path -> the descriptor the submitter hashed, read instead of the path."""
    now = utcnow()
    with db.session() as s:
        waiting = s.execute(
            select(Document.id, Document.size)
            .where(
                Document.batch_id == batch_id,
                Document.status == DocStatus.queued,
                Document.enqueued_at.is_(None),
                (Document.next_attempt_at.is_(None)) | (Document.next_attempt_at <= now),
            )
            .order_by(Document.id)
            .limit(GROUP_SIZE)
        ).all()
    chosen = inline.within_budget(db, [(d, size) for d, size in waiting], cap)
    if not chosen:
        return 0
    with db.session() as s:  # guarded, as the reaper's: no one else sends these meanwhile
        won = s.scalars(
            update(Document)
            .where(
                Document.id.in_(chosen),
                Document.status == DocStatus.queued,
                Document.enqueued_at.is_(None),
            )
            .values(enqueued_at=now)
            .returning(Document.id)
        ).all()
    return send(db, gio, sorted(won), keyring, sender=True, opened=opened) if won else 0


def _left(db: Database, batch_id: str, *, until_finished: bool) -> int:
    with db.session() as s:
        query = select(func.count()).select_from(Document).where(Document.batch_id == batch_id)
        if until_finished:
            query = query.where(Document.status.in_(UNFINISHED))
        else:
            query = query.where(Document.status == DocStatus.queued, Document.enqueued_at.is_(None))
        return int(s.scalar(query) or 0)


def serve(
    db: Database,
    gio: GearmanIO,
    keyring: payload.Keyring,
    batch_id: str,
    *,
    cap: int,
    until_finished: bool,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Be the batch's sender until it is all sent (or finished); returns the jobs sent.

    On the way out, whatever the reason, the batch is left to the reapers
    (`importer.inline` says what they do with it).
    """
    sent = 0
    try:
        while True:
            inline.renew_sender(db, batch_id)
            sent += pump(db, gio, keyring, batch_id, cap)
            if progress:
                progress(sent)
            if not _left(db, batch_id, until_finished=until_finished):
                return sent
            time.sleep(POLL_SECONDS)
    finally:
        inline.release_sender(db, batch_id)
