"""`importer mail flush`: deliver every e-mail waiting in the outbox now, backoff or not.

It takes each waiting e-mail once, in passes of `PASS` within IMPORTER_MAIL_DEADLINE_SECONDS
each, and stops at a mail server that does not answer. An e-mail a courier is sending at
that moment is left to it (its claim has no error), so nothing goes out twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from importer.config import Settings
from importer.db.engine import Database
from importer.errors import ExitCode
from importer.outbox import MailState, deliver_pending, mail_state

PASS = 50


# Example: Flushed(tried=3, delivered=2, server_down=None, state=MailState(9, 1, "...", 0))
@dataclass(frozen=True)
class Flushed:
    """What a flush did, and the outbox (or the batch's part of it) afterwards."""

    tried: int
    delivered: int
    server_down: str | None
    state: MailState

    @property
    def exit_code(self) -> ExitCode:
        """0 nothing left waiting; 3 the mail server did not answer; 1 some e-mail was
        refused or is still being sent by a courier."""
        if self.server_down is not None:
            return ExitCode.service_unavailable
        return ExitCode.ok if self.state.waiting == 0 else ExitCode.some_failed

    def to_json(self) -> dict[str, Any]:
        """`importer mail flush --json`, e.g. {"tried": 3, "delivered": 2, "server_down":
        null, "outbox": {"delivered": 9, "waiting": 1, "untried": 0, "reason": "..."}}"""
        return {
            "tried": self.tried,
            "delivered": self.delivered,
            "server_down": self.server_down,
            "outbox": self.state.to_json(),
        }


def flush(settings: Settings, db: Database, batch_id: str | None = None) -> Flushed:
    tried = delivered = 0
    after = 0
    server_down = None
    while True:
        done = deliver_pending(
            db,
            mail_url=settings.resolved_mail_url,
            mail_from=settings.mail_from,
            seconds=settings.mail_deadline_seconds,
            limit=PASS,
            batch_id=batch_id,
            now=True,
            after_id=after,
        )
        tried += done.sent + done.failed
        delivered += done.sent
        if done.server_down is not None or done.last_id == after:
            server_down = done.server_down
            break
        after = done.last_id
    return Flushed(tried, delivered, server_down, mail_state(db, batch_id))
