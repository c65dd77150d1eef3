"""Inline batches (`submit --inline`): what may be sent, and reading the bytes to send.

A job of an inline batch carries its file's bytes (the framing is in `importer.payload`),
for workers that cannot see the submitter's disk. Two limits follow from where the bytes
sit on the way:

- A file over IMPORTER_MAX_INLINE_MB is recorded failed at submit (`too_large_reason`).
- gearmand holds every queued job's data in memory and a worker several copies of the
  one it runs, so the bytes of inline jobs on gearmand (documents sent and not finished:
  queued with `enqueued_at`, or running) stay under IMPORTER_INLINE_IN_FLIGHT_MB, summed
  over every inline batch of the database (`within_budget`). The rest wait in the
  database, queued and unsent, and are sent as jobs finish.

Re-sending. The database keeps no copy of the bytes (a blob per document would write
every inline file through the database once more, and keep it there while it waits), so
whoever re-sends an inline document reads the file again (`read_recorded`: opened
confined, as at submit) and checks it is the file recorded at submit (size and sha256).
The submitting process is the batch's *sender*: while `batches.inline_sender_until` is
ahead (it renews it every poll), it sends the batch's unsent documents within the cap, and
a reaper or retry elsewhere that cannot read a file hands the document back to it
(`hand_back`). The sender itself cannot hand a document to anyone: one it cannot send (the
file changed since it was hashed, or is gone) is failed at once, `changed` when its bytes
are not the recorded ones. A submit that has sent everything, or is killed, stops
renewing; a reaper that can read the files then (the submitting host's `importer requeue
--stale`, or a worker sharing that storage) sends what comes back, and one that cannot
records the document failed with a reason that says which host could not read it and to
run `importer retry BATCH` on the host that has the files. So nothing waits for a sender
that is gone, and nothing is lost without a reason.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
from collections.abc import Collection, Sequence
from datetime import timedelta

from sqlalchemy import func, or_, select, update

from importer.db.engine import Database
from importer.db.lifecycle import finish
from importer.db.models import Batch, Document, utcnow
from importer.opening import Refused, open_confined
from importer.reasons import ErrorKind
from importer.states import DocStatus

# How long a sender's claim on its batch lasts unless renewed (it renews every poll).
SENDER_LEASE = timedelta(seconds=30)
IN_FLIGHT_BYTES = 256 * 2**20  # the default of IMPORTER_INLINE_IN_FLIGHT_MB
READ_BYTES = 1 << 20


class Unreadable(Exception):
    """The recorded file cannot be sent from here: `reason` says why, for a person, `kind`
    what kind of failure it is (`changed`: its bytes are not the ones recorded)."""

    def __init__(self, reason: str, kind: ErrorKind) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def too_large_reason(size: int, limit_mb: int) -> str:
    return (
        f"too large to send inline ({size:,} bytes, over IMPORTER_MAX_INLINE_MB={limit_mb}):"
        " put it on shared storage the workers can read (IMPORTER_ALLOWED_ROOTS) and submit"
        " it without --inline, or raise IMPORTER_MAX_INLINE_MB"
    )


def read_recorded(path: str, size: int, sha256: str, fd: int | None = None) -> bytes:
    """The file's bytes, if it is still the file recorded at submit; else Unreadable.

    Read from `fd` (the descriptor the submitter hashed) when given, else from the file
    opened confined (`importer.opening`: no link anywhere, a regular file with one name);
    either way its bytes must have the recorded sha256, so what is sent is what was hashed.
    """
    own = fd is None
    if fd is None:
        try:
            fd = open_confined(path, (), size)
        except Refused as e:
            raise Unreadable(e.reason, e.kind) from e
        except OSError as e:
            kind = ErrorKind.missing if e.errno == errno.ENOENT else ErrorKind.unreadable
            raise Unreadable(f"cannot read {path} ({e.strerror or e})", kind) from e
    try:
        content = bytearray()
        while chunk := os.pread(fd, READ_BYTES, len(content)):
            content += chunk
            if len(content) > size:
                break
    except OSError as e:
        raise Unreadable(f"cannot read {path} ({e.strerror or e})", ErrorKind.unreadable) from e
    finally:
        if own:
            os.close(fd)
    if len(content) != size or hashlib.sha256(content).hexdigest() != sha256:
        raise Unreadable(
            f"{path} changed since it was submitted (its bytes are not the ones hashed then);"
            " submit it again with --force",
            ErrorKind.changed,
        )
    return bytes(content)


def _unfinished_inline_batches():  # type: ignore[no-untyped-def]
    return select(Batch.id).where(Batch.inline.is_(True), Batch.finished_at.is_(None))


def in_flight_bytes(db: Database) -> int:
    """Bytes of inline jobs on gearmand now: sent and not finished."""
    with db.session() as s:
        total = s.scalar(
            select(func.coalesce(func.sum(Document.size), 0)).where(
                Document.batch_id.in_(_unfinished_inline_batches()),
                or_(
                    Document.status == DocStatus.running,
                    (Document.status == DocStatus.queued) & Document.enqueued_at.is_not(None),
                ),
            )
        )
    return int(total or 0)


def within_budget(db: Database, docs: Sequence[tuple[int, int]], cap_bytes: int) -> list[int]:
    """The first of (document id, size) that fit under the cap with what is in flight.

    One document always goes when nothing is in flight, so that a file larger than the
    cap (a cap set below IMPORTER_MAX_INLINE_MB) still goes, alone.
    """
    used = in_flight_bytes(db)
    chosen: list[int] = []
    for doc_id, size in docs:
        if used + size > cap_bytes and (chosen or used):
            break
        chosen.append(doc_id)
        used += size
    return chosen


def inline_batches(db: Database, doc_ids: Sequence[int]) -> dict[int, bool]:
    """For each document of `doc_ids` in an inline batch: whether its sender is alive."""
    if not doc_ids:
        return {}
    now = utcnow()
    with db.session() as s:
        rows = s.execute(
            select(Document.id, Batch.inline_sender_until)
            .join(Batch)
            .where(Document.id.in_(doc_ids), Batch.inline.is_(True))
        ).all()
    return {doc_id: until is not None and until > now for doc_id, until in rows}


def renew_sender(db: Database, batch_id: str) -> None:
    with db.session() as s:
        s.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(inline_sender_until=utcnow() + SENDER_LEASE)
        )


def release_sender(db: Database, batch_id: str) -> None:
    with db.session() as s:
        s.execute(update(Batch).where(Batch.id == batch_id).values(inline_sender_until=None))


def hand_back(
    db: Database,
    unreadable: dict[int, Unreadable],
    alive: dict[int, bool],
    *,
    sender: bool = False,
) -> None:
    """Documents this host could not send: back to their live sender, or failed.

    The `sender` itself (`importer.inline_sender`) has no one to hand them to: it fails
    them with their kind (handing them back to itself would loop for ever)."""
    host = socket.gethostname()
    for doc_id, why in unreadable.items():
        if alive.get(doc_id) and not sender:
            with db.session() as s:
                s.execute(
                    update(Document)
                    .where(Document.id == doc_id, Document.status == DocStatus.queued)
                    .values(enqueued_at=None)
                )
            continue
        with db.session() as s:
            batch_id = s.scalar(select(Document.batch_id).where(Document.id == doc_id))
        if sender:
            error, kind = f"inline document not sent: {why.reason}", why.kind
        elif why.kind == ErrorKind.changed:
            error = (
                f"inline document not re-sent: {why.reason} (read on {host}), and the process"
                " that submitted it is gone"
            )
            kind = ErrorKind.changed
        else:
            error = (
                f"inline document not re-sent: {why.reason} on {host}, and the process that "
                f"submitted it is gone; run `importer retry {batch_id}` on the host that has "
                "the files"
            )
            kind = ErrorKind.not_resent
        finish(db, doc_id, owner=None, status=DocStatus.failed, error=error, error_kind=kind)


def reaper_share(
    db: Database, candidates: Sequence[int], expired: Collection[int], cap_bytes: int
) -> list[int]:
    """Which of the reaper's candidates it may send: every plain document, the inline ones
    whose lease expired (their bytes are counted in flight already), and of the never-sent
    inline ones, none whose sender is alive (it sends them) and the rest within the cap."""
    if not candidates:
        return []
    with db.session() as s:
        rows = s.execute(
            select(Document.id, Document.size, Batch.inline_sender_until)
            .join(Batch)
            .where(Document.id.in_(candidates), Batch.inline.is_(True))
        ).all()
    if not rows:
        return list(candidates)
    now = utcnow()
    waiting = [
        (doc_id, size)
        for doc_id, size, until in rows
        if doc_id not in expired and (until is None or until <= now)
    ]
    unsent = {doc_id for doc_id, _, _ in rows if doc_id not in expired}
    allowed = set(within_budget(db, waiting, cap_bytes)) if waiting else set()
    return [c for c in candidates if c not in unsent or c in allowed]
