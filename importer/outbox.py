"""Delivering decided e-mails: each outbox row is claimed, built from the database, sent.

A row is in one of three states, all in its own columns:

- delivered: `sent_at` is set, and nothing sends it again;
- being sent: claimed (`claimed_until` ahead) with no `last_error`; a worker that dies
  mid-send leaves a claim that expires, and the next pass (any worker) sends it then;
- waiting: `last_error` says why the last try failed, `claimed_until` when the next
  courier pass may try again. `importer mail flush` (`now=True`) tries these at once.

A pass has a budget of seconds (IMPORTER_MAIL_DEADLINE_SECONDS) for all its e-mails, and
stops at the first mail server that does not answer: the other e-mails would wait on the
same silence, so they are left waiting with its reason instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from importer.backoff import Backoff
from importer.db.engine import Database
from importer.db.models import Outbox, utcnow
from importer.db.outbox_key import BadOutboxKey, MailKind, OutboxKey
from importer.errors import ImporterError
from importer.mail import MailServerDown, send_message
from importer.notify import batch_message, document_message
from importer.smtp_bounded import Deadline
from importer.summaries import batch_summary, document_summary

log = logging.getLogger(__name__)

CLAIM = timedelta(seconds=120)  # longer than any one try: a try ends by its deadline
MAIL_RETRY = Backoff(base=30.0, cap=3600.0)  # after the first failed try 60 s, ... an hour


# Example: Pass(sent=2, failed=1, left=5, server_down="mail server 127.0.0.1:25 ...")
@dataclass(frozen=True)
class Pass:
    """What one delivery pass did: `failed` were tried and not accepted, `left` not tried
    (the mail server was down, or the budget ran out); `server_down` says why it stopped."""

    sent: int = 0
    failed: int = 0
    left: int = 0
    server_down: str | None = None
    refused: str | None = None  # the last answer of a server that refused an e-mail
    last_id: int = 0  # the last row the pass took up: a flush goes on after it


# Example: MailState(delivered=7, waiting=1, reason="mail server ... refused ...")
@dataclass(frozen=True)
class MailState:
    """The e-mails of a batch (or of the whole outbox) as the database has them."""

    delivered: int
    waiting: int
    reason: str | None  # why the most recent failed try of a waiting e-mail failed
    untried: int = 0  # waiting e-mails nobody has tried yet

    @property
    def total(self) -> int:
        return self.delivered + self.waiting

    def to_json(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "waiting": self.waiting,
            "untried": self.untried,
            "reason": self.reason,
        }


def _build(db: Database, row: Outbox, mail_from: str) -> EmailMessage:
    key = OutboxKey.decode(row.key)
    if key.kind is MailKind.document:
        return document_message(document_summary(db, key.id), mail_from=mail_from)
    return batch_message(batch_summary(db, key.id), mail_from=mail_from)


def _takeable(now: Any, *, backing_off_too: bool) -> Any:
    """Unsent rows nobody is sending: unclaimed or claim expired, or (for a flush) waiting
    out a backoff after a failure; never one claimed by a try under way."""
    free = or_(Outbox.claimed_until.is_(None), Outbox.claimed_until < now)
    if backing_off_too:
        free = or_(free, Outbox.last_error.is_not(None))
    return and_(Outbox.sent_at.is_(None), free)


def deliver_pending(
    db: Database,
    *,
    mail_url: str,
    mail_from: str,
    seconds: float,
    limit: int = 50,
    batch_id: str | None = None,
    now: bool = False,
    after_id: int = 0,
) -> Pass:
    """Send what is due within `seconds` for all of it; failures wait for a later pass.

    `now`: also what waits out a backoff (`importer mail flush`); `batch_id`: only its
    e-mails; `after_id`: only rows after that one (a flush's next pass)."""
    budget = Deadline(seconds)
    when = utcnow()
    with db.session() as s:
        query = select(Outbox.id).where(_takeable(when, backing_off_too=now), Outbox.id > after_id)
        if batch_id is not None:
            query = query.where(Outbox.batch_id == batch_id)
        due = list(s.scalars(query.order_by(Outbox.id).limit(limit)))
    sent = failed = 0
    refused: str | None = None
    for position, outbox_id in enumerate(due):
        if budget.passed:
            return Pass(sent, failed, len(due) - position, None, refused, after_id)
        after_id = outbox_id
        row = _claim(db, outbox_id, when, now=now)
        if row is None:
            continue
        try:
            send_message(_build(db, row, mail_from), mail_url, timeout=budget.left())
        except (ImporterError, BadOutboxKey) as e:
            error = e.message if isinstance(e, ImporterError) else str(e)
            log.warning("e-mail %s to %s not sent yet: %s", row.key, row.recipient, error)
            backoff = timedelta(seconds=MAIL_RETRY.delay(row.attempts))
            if isinstance(e, MailServerDown):
                rest = due[position:]  # this one and those it would have held up
                _wait_out(db, rest, error, backoff, tried=outbox_id)
                return Pass(sent, failed + 1, len(rest) - 1, error, refused, after_id)
            _wait_out(db, [outbox_id], error, backoff, tried=outbox_id)
            failed += 1
            refused = error
            continue
        with db.session() as s:
            s.execute(update(Outbox).where(Outbox.id == outbox_id).values(sent_at=utcnow()))
        log.info("e-mail %s sent to %s", row.key, row.recipient)
        sent += 1
    return Pass(sent, failed, 0, None, refused, after_id)


def _claim(db: Database, outbox_id: int, when: Any, *, now: bool) -> Outbox | None:
    """Take one row for this try, or None when someone else has it or it was sent."""
    with db.session() as s:
        won = s.execute(
            update(Outbox)
            .where(Outbox.id == outbox_id, _takeable(when, backing_off_too=now))
            # no last_error while claimed: a flush leaves a try under way alone
            .values(claimed_until=when + CLAIM, attempts=Outbox.attempts + 1, last_error=None)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return s.execute(select(Outbox).where(Outbox.id == outbox_id)).scalar_one()


def _wait_out(db: Database, ids: list[int], error: str, backoff: timedelta, *, tried: int) -> None:
    """Record why these wait, and when the next courier pass may try them; the untried
    ones only if nobody else has taken or sent them meanwhile."""
    until = utcnow() + backoff
    with db.session() as s:
        s.execute(
            update(Outbox)
            .where(Outbox.id == tried, Outbox.sent_at.is_(None))
            .values(last_error=error, claimed_until=until)
        )
        others = [i for i in ids if i != tried]
        if others:
            s.execute(
                update(Outbox)
                .where(Outbox.id.in_(others), _takeable(utcnow(), backing_off_too=True))
                .values(last_error=f"not tried: {error}", claimed_until=until)
            )


def hold_due(db: Database, reason: str, wait: timedelta) -> int:
    """Leave every e-mail that is due waiting `wait` with the reason, untried: the mail
    server was just found not answering. Returns how many."""
    with db.session() as s:
        held = s.execute(
            update(Outbox)
            .where(_takeable(utcnow(), backing_off_too=False))
            .values(last_error=f"not tried: {reason}", claimed_until=utcnow() + wait)
        )
        return int(held.rowcount)  # type: ignore[attr-defined]


def mail_state(db: Database, batch_id: str | None = None) -> MailState:
    """Delivered and waiting e-mails, from the outbox table (the truth, not a log line)."""
    where = [] if batch_id is None else [Outbox.batch_id == batch_id]
    with db.session() as s:
        total, delivered, untried = s.execute(
            select(
                func.count(),
                func.count(Outbox.sent_at),
                func.count().filter(Outbox.sent_at.is_(None), Outbox.attempts == 0),
            ).where(*where)
        ).one()
        reason = s.scalar(
            select(Outbox.last_error)
            .where(*where, Outbox.sent_at.is_(None), Outbox.last_error.is_not(None))
            .order_by(Outbox.attempts.desc(), Outbox.id.desc())
            .limit(1)
        )
    return MailState(int(delivered), int(total - delivered), reason, int(untried))
