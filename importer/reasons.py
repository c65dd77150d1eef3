"""Why a document failed, as a short stable code: `documents.error_kind`.

The free-text `error` beside it is for a person and may be reworded; the kind is for
grouping failures across batches (the dashboard, /metrics, a report) and never changes
once named. A document that is queued again after a transient failure keeps the kind of
that failure; a dead one (out of attempts) the kind of its last one. A retry that
succeeds clears it.

The document could not be read:

    not-pdf           no %PDF- header (found at submit, or by the worker)
    encrypted         the PDF needs a password to open
    corrupt           damaged beyond what poppler reads
    over-limit        the file, its page count or a page's size is over a cap
    timeout           a page or the whole document ran past its timeout
    language          Tesseract has no data for a requested language
    unreadable        the file could not be read (storage trouble, permissions)
    bad-name          the file name is not valid UTF-8: it is stored with its bytes
                      escaped, and no job is sent (rename the file)
    crashed           the reading child or a program it ran died
    out-of-memory     the reading child ran out of its memory limit
    tool-failed       an external program failed (not the document's fault, maybe)

The job or the path was refused, or never ran:

    outside-roots     the path is outside IMPORTER_ALLOWED_ROOTS
    link              the path goes through a link or names a file with other names
    not-a-file        the path is not a regular file
    missing           the file is gone
    changed           the file was swapped or changed since it was submitted
    too-large-inline  over IMPORTER_MAX_INLINE_MB, so not sent inside a job
    not-enqueued      gearmand was unreachable when it was submitted
    worker-died       the worker reading it died on every attempt
    not-resent        an inline document whose submitter is gone, and whose file this
                      host cannot read
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    not_pdf = "not-pdf"
    encrypted = "encrypted"
    corrupt = "corrupt"
    over_limit = "over-limit"
    timeout = "timeout"
    language = "language"
    unreadable = "unreadable"
    bad_name = "bad-name"
    crashed = "crashed"
    out_of_memory = "out-of-memory"
    tool_failed = "tool-failed"
    outside_roots = "outside-roots"
    link = "link"
    not_a_file = "not-a-file"
    missing = "missing"
    changed = "changed"
    too_large_inline = "too-large-inline"
    not_enqueued = "not-enqueued"
    worker_died = "worker-died"
    not_resent = "not-resent"
