"""The inline side of `submit --inline`: which files go, and sending them under the cap.

The submit pipeline records an inline batch's documents as unsent (queued, no
`enqueued_at`) and, after each group, sends what the in-flight cap allows; once the walk
is done it stays the batch's sender (`importer.inline_sender.serve`) while documents are
still to be sent, or, with `--wait`, until the batch has finished. See
`importer.inline` for the cap and for what happens to documents no sender is left for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from importer import inline, payload
from importer.db.engine import Database
from importer.db.models import Document, utcnow
from importer.errors import ImporterError
from importer.gearman.client import GearmanIO
from importer.gearman.send import SendIncomplete
from importer.inline_sender import pump, serve
from importer.states import DocStatus

if TYPE_CHECKING:
    from importer.submit import SubmitOptions, SubmitResult

log = logging.getLogger(__name__)


def inline_sender_lease(is_inline: bool) -> datetime | None:
    """A new batch's sender lease: taken with the batch row, so that no reaper sends (or
    fails) its documents before the submit does."""
    return utcnow() + inline.SENDER_LEASE if is_inline else None


class InlineFeed:
    def __init__(
        self,
        db: Database,
        gio: GearmanIO,
        keyring: payload.Keyring,
        opts: SubmitOptions,
        result: SubmitResult,
    ) -> None:
        self.db = db
        self.gio = gio
        self.keyring = keyring
        self.opts = opts
        self.result = result
        self.cap = opts.inline_in_flight_mb * 2**20
        self.queued = 0  # documents recorded to be sent
        self.sent = 0  # jobs gearmand accepted

    def refusal(self, size: int) -> str | None:
        """Why a PDF of `size` bytes cannot go inline (counted as too large), if it cannot."""
        if size <= self.opts.max_inline_mb * 2**20:
            return None
        self.result.too_large += 1
        return inline.too_large_reason(size, self.opts.max_inline_mb)

    def recorded(self, count: int, opened: Mapping[str, int]) -> int:
        """`count` more documents were recorded: send what the cap allows, reading the
        descriptors `opened` (path -> the file hashed); how many went."""
        self.queued += count
        assert self.result.batch_id is not None
        try:
            sent = pump(self.db, self.gio, self.keyring, self.result.batch_id, self.cap, opened)
        except SendIncomplete as e:
            self.sent += e.sent
            raise
        self.sent += sent
        return sent

    def serve(
        self,
        batch_id: str,
        progress: Callable[[int], None] | None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        """Send the rest as jobs finish; `progress(jobs sent)` after each poll. Returns at
        once when every job is on gearmand, unless --wait; `notice` says why it stays."""
        before = self.sent
        served = 0
        left = self._to_send(batch_id)
        if self.opts.inline_until_finished:
            if notice:
                notice(f"batch {batch_id}: --wait: staying until the batch has finished")
        elif left and notice:
            notice(
                f"batch {batch_id}: {left} documents still to send (their bytes would pass"
                f" IMPORTER_INLINE_IN_FLIGHT_MB={self.opts.inline_in_flight_mb} on gearmand):"
                " staying to send them as jobs finish; keep the files until this returns"
            )
        elif not left:
            return

        def on_poll(sent: int) -> None:
            nonlocal served
            served = sent
            if progress:
                progress(before + sent)

        try:
            serve(
                self.db,
                self.gio,
                self.keyring,
                batch_id,
                cap=self.cap,
                until_finished=self.opts.inline_until_finished,
                progress=on_poll,
            )
        except SendIncomplete as e:
            self.sent += served + e.sent
            raise

    def _to_send(self, batch_id: str) -> int:
        with self.db.session() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(Document)
                    .where(
                        Document.batch_id == batch_id,
                        Document.status == DocStatus.queued,
                        Document.enqueued_at.is_(None),
                    )
                )
                or 0
            )

    def unsent(self, batch_id: str) -> list[int]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Document.id).where(
                        Document.batch_id == batch_id,
                        Document.status == DocStatus.queued,
                        Document.enqueued_at.is_(None),
                    )
                )
            )

    def leave(self, batch_id: str) -> None:
        """No longer the batch's sender (reapers take over at once)."""
        try:
            inline.release_sender(self.db, batch_id)
        except (ImporterError, SQLAlchemyError) as e:  # already failing: keep that error
            log.warning("batch %s: its sender lease runs out on its own: %s", batch_id, e)
