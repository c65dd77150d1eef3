"""Jobs from other clients, in the database: a validly signed path job whose job id no
document holds is recorded here, then claimed and read like submitted work.

A job names its batch (`batch`, with `batch_size`: how many documents it holds), made on
first sight, or has a batch of its own. A named batch is done, and sends its one e-mail,
once `batch_size` documents are recorded in it and every one has finished
(`lifecycle.finish`): a batch that never receives all of them stays open. A job id is a
document's for good, so a job sent again is a replay (refused as a submitted one is), and
an id the reaper retired (`importer.requeue.HELD`) is never recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from importer.db import lifecycle
from importer.db.engine import Database
from importer.db.models import Batch, Document, RejectedJob, utcnow
from importer.db.retry import waits_for_database
from importer.reasons import ErrorKind
from importer.requeue import HELD
from importer.states import DocStatus, NotifyMode, TextLayerMode
from importer.submit import new_batch_id

JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # gearmand's unique: 64 bytes at most
BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
MAX_BATCH_SIZE = 1_000_000


@dataclass(frozen=True)
class Arrival:
    """A verified job from another client, and what the worker found at its path."""

    job_id: str
    path: str
    email: str
    batch: str | None = None
    batch_size: int | None = None
    size: int = 0
    sha256: str = ""
    refused: tuple[str, ErrorKind] | None = None  # the file was not opened, or not read


def malformed(job_id: str, batch: str | None, batch_size: int | None) -> str | None:
    """Why the job's own fields cannot name a document and its batch, if they cannot."""
    if not JOB_ID.fullmatch(job_id):
        return (
            f"job id {job_id[:64]!r} is not 1-64 letters, digits and . _ : - (starting with a"
            " letter or digit)"
        )
    if batch is None:
        return None
    if not BATCH_ID.fullmatch(batch):
        return f"batch {batch[:32]!r} is not 1-32 letters, digits and . _ - (starting with one)"
    assert batch_size is not None  # the payload carries both or neither
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        return f"batch_size {batch_size} is not between 1 and {MAX_BATCH_SIZE:,}"
    return None


@waits_for_database
def refusal(
    db: Database, job_id: str, email: str, batch: str | None, size: int | None
) -> str | None:
    """Why the job cannot be recorded, checked before its file is opened (`record` checks
    again as it writes); None when it can, or when a document already holds its id."""
    with db.session() as s:
        return _refusal(s, job_id, email, batch, size)


def _refusal(s, job_id: str, email: str, batch: str | None, size: int | None) -> str | None:  # type: ignore[no-untyped-def]
    retired = s.scalar(
        select(RejectedJob.id).where(RejectedJob.unique == job_id, RejectedJob.kind == HELD)
    )
    if retired is not None:
        return f"job id {job_id} was retired (taken at gearmand and never claimed); refused"
    if batch is None:
        return None
    row = s.execute(select(Batch).where(Batch.id == batch).with_for_update()).scalar_one_or_none()
    if row is None:
        return None
    if row.email != email:
        return f"batch {batch} belongs to another e-mail address; refused"
    if row.total != size:
        return f"batch {batch} holds {row.total} documents, not batch_size {size}; refused"
    recorded = s.scalar(select(func.count()).where(Document.batch_id == batch))
    if row.finished_at is not None or recorded >= row.total:
        return f"batch {batch} already holds its {row.total} documents; refused"
    return None


@waits_for_database
def record(db: Database, arrival: Arrival, *, text_layer: TextLayerMode) -> str | None:
    """Record the job's document (queued, or failed with the reason its file was refused),
    and its batch on first sight; a refusal's reason instead. A concurrent delivery of the
    same job, or another job making the same batch, is met by trying once more."""
    for attempt in (1, 2):
        try:
            return _record(db, arrival, text_layer)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _record(db: Database, a: Arrival, text_layer: TextLayerMode) -> str | None:
    now = utcnow()
    with db.session(immediate=True) as s:
        if s.scalar(select(Document.id).where(Document.job_id == a.job_id)) is not None:
            return None  # recorded by another delivery: the claim decides
        refused = _refusal(s, a.job_id, a.email, a.batch, a.batch_size)
        if refused:
            return refused
        batch_id = a.batch or new_batch_id()
        if s.get(Batch, batch_id) is None:
            s.add(
                Batch(
                    id=batch_id,
                    email=a.email,
                    notify=NotifyMode.batch,
                    text_layer=text_layer,
                    total=a.batch_size or 1,
                )
            )
            s.flush()
        s.add(
            Document(
                batch_id=batch_id,
                path=a.path,
                size=a.size,
                sha256=a.sha256,
                job_id=a.job_id,
                status=DocStatus.queued if a.refused is None else DocStatus.failed,
                error=None if a.refused is None else a.refused[0],
                error_kind=None if a.refused is None else a.refused[1].value,
                enqueued_at=now,  # it is on gearmand: this very job
                finished_at=None if a.refused is None else now,
            )
        )
    if a.refused is not None:
        lifecycle.close_batch_if_done(db, batch_id)
    return None
