"""A job from another client (PHP, Go, a shell script holding the fleet key): validly
signed, naming a path, with a job id no document holds.

It is recorded (`importer.db.foreign`) and then claimed and read like submitted work.
Its file is opened as submit opens one (`open_confined`: under IMPORTER_ALLOWED_ROOTS, no
link, a regular file) and hashed through that descriptor, so that the worker's own check
against the recorded sha256 holds for it too; a file so refused is recorded failed with
its reason, and never read. What cannot name a document (a malformed job id or batch, an
id the reaper retired, a batch it does not fit) is refused and counted in rejected_jobs.
An inline job must come from `importer submit --inline`: only a recorded one is read.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from importer import payload
from importer.db import foreign, lifecycle
from importer.opening import Refused, open_confined, sha256_of
from importer.reasons import ErrorKind
from importer.states import JobOutcome

if TYPE_CHECKING:
    from workers.job import JobContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotAdmitted:
    """What became of a job that is not to be claimed: refused, or recorded failed."""

    outcome: JobOutcome
    reason: str


def admit(ctx: JobContext, job: payload.Payload) -> NotAdmitted | None:
    """Record the job's document; None when it is recorded and queued, for the caller to
    claim it, else what became of the job (refused, or recorded failed)."""
    reason = foreign.malformed(job.job_id, job.batch, job.batch_size) or foreign.refusal(
        ctx.db, job.job_id, job.email, job.batch, job.batch_size
    )
    if reason is None:
        arrival = _inspect(ctx, job)
        reason = foreign.record(ctx.db, arrival, text_layer=ctx.settings.text_layer)
        if reason is None:
            if arrival.refused is not None:
                return NotAdmitted(JobOutcome.failed, arrival.refused[0])
            log.info("job %s from another client recorded for %s", job.job_id, job.file)
            return None
    log.warning("rejected job %r from another client: %s", job.job_id[:64], reason)
    lifecycle.record_rejection(ctx.db, unique=job.job_id, reason=reason, worker=ctx.owner)
    return NotAdmitted(JobOutcome.rejected, reason)


def _inspect(ctx: JobContext, job: payload.Payload) -> foreign.Arrival:
    """The document as submit would record it: its size and sha256, or why it is refused."""
    facts = foreign.Arrival(job.job_id, job.file, job.email, job.batch, job.batch_size)
    try:
        fd = open_confined(job.file, ctx.roots, None)
    except Refused as e:
        return _refused(facts, e.reason, e.kind)
    except OSError as e:
        kind = ErrorKind.missing if e.errno == errno.ENOENT else ErrorKind.unreadable
        return _refused(facts, f"cannot open {job.file}: {e.strerror or e}", kind)
    try:
        sha256, size = sha256_of(fd)
    except OSError as e:
        return _refused(facts, f"cannot read {job.file}: {e.strerror or e}", ErrorKind.unreadable)
    finally:
        os.close(fd)
    return foreign.Arrival(
        job.job_id, job.file, job.email, job.batch, job.batch_size, size=size, sha256=sha256
    )


def _refused(facts: foreign.Arrival, reason: str, kind: ErrorKind) -> foreign.Arrival:
    return foreign.Arrival(
        facts.job_id, facts.path, facts.email, facts.batch, facts.batch_size, refused=(reason, kind)
    )
