"""Delivering decided e-mails: each outbox row is claimed, built from the database, sent.

A worker that dies between claiming and sending leaves a claim that expires; the next
delivery pass (any worker, or the reaper) sends it then.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import or_, select, update

from importer.backoff import Backoff
from importer.db.engine import Database
from importer.db.models import Outbox, utcnow
from importer.db.outbox_key import BadOutboxKey, MailKind, OutboxKey
from importer.errors import ImporterError
from importer.mail import send_message
from importer.notify import batch_message, document_message
from importer.summaries import batch_summary, document_summary

log = logging.getLogger(__name__)

CLAIM = timedelta(seconds=120)
MAIL_RETRY = Backoff(base=30.0, cap=3600.0)  # after the first failed try 60 s, ... an hour


def _build(db: Database, row: Outbox, mail_from: str) -> EmailMessage:
    key = OutboxKey.decode(row.key)
    if key.kind is MailKind.document:
        return document_message(document_summary(db, key.id), mail_from=mail_from)
    return batch_message(batch_summary(db, key.id), mail_from=mail_from)


def deliver_pending(db: Database, *, mail_url: str, mail_from: str, limit: int = 50) -> int:
    """Send what is due; returns how many were sent. Failures are kept for a later pass."""
    now = utcnow()
    with db.session() as s:
        due = list(
            s.scalars(
                select(Outbox.id)
                .where(
                    Outbox.sent_at.is_(None),
                    or_(Outbox.claimed_until.is_(None), Outbox.claimed_until < now),
                )
                .order_by(Outbox.id)
                .limit(limit)
            )
        )
    sent = 0
    for outbox_id in due:
        with db.session() as s:
            won = s.execute(
                update(Outbox)
                .where(
                    Outbox.id == outbox_id,
                    Outbox.sent_at.is_(None),
                    or_(Outbox.claimed_until.is_(None), Outbox.claimed_until < now),
                )
                .values(claimed_until=now + CLAIM, attempts=Outbox.attempts + 1)
            )
            if won.rowcount != 1:  # type: ignore[attr-defined]
                continue
            row = s.execute(select(Outbox).where(Outbox.id == outbox_id)).scalar_one()
        try:
            send_message(_build(db, row, mail_from), mail_url)
        except (ImporterError, BadOutboxKey) as e:
            error = e.message if isinstance(e, ImporterError) else str(e)
            log.warning("e-mail %s to %s not sent yet: %s", row.key, row.recipient, error)
            backoff = timedelta(seconds=MAIL_RETRY.delay(row.attempts))
            with db.session() as s:
                s.execute(
                    update(Outbox)
                    .where(Outbox.id == outbox_id)
                    .values(last_error=error, claimed_until=utcnow() + backoff)
                )
            continue
        with db.session() as s:
            s.execute(update(Outbox).where(Outbox.id == outbox_id).values(sent_at=utcnow()))
        log.info("e-mail %s sent to %s", row.key, row.recipient)
        sent += 1
    return sent
