"""Every state a document or a batch can be in, named once.

The same enum backs the database column, the CLI output and the e-mail.
"""

from __future__ import annotations

from enum import StrEnum


class DocStatus(StrEnum):
    queued = "queued"  # recorded and enqueued (or waiting for its next attempt)
    running = "running"  # claimed by a worker holding a lease
    done = "done"  # every page stored
    failed = "failed"  # a permanent failure with its reason (not a PDF, encrypted, ...)
    dead = "dead"  # out of attempts after transient failures


FINISHED = frozenset({DocStatus.done, DocStatus.failed, DocStatus.dead})
UNFINISHED = frozenset({DocStatus.queued, DocStatus.running})


class JobOutcome(StrEnum):
    """What became of one delivery of a job: the word a worker logs and hands gearmand back."""

    done = "done"  # the document was read and stored
    failed = "failed"  # it failed for good (DocStatus.failed)
    dead = "dead"  # a transient failure, and its last attempt (DocStatus.dead)
    retry = "retry"  # a transient failure, queued for another attempt
    rejected = "rejected"  # failed verification, matched no document, or its document finished
    dropped = "dropped"  # another worker holds the document, or this one lost its lease
    released = "released"  # the worker is stopping: the document was handed back


class PageSource(StrEnum):
    ocr = "ocr"
    text_layer = "text-layer"


class TextLayerMode(StrEnum):
    """Which pages of a batch are read from the PDF's own text layer, and which are OCRed."""

    auto = "auto"  # keep real text; OCR pages without it (empty, unmappable, a scan's stamp)
    ocr = "ocr"  # OCR every page (to redo a bad earlier OCR)
    keep = "keep"  # never OCR a page that has any text


class Priority(StrEnum):
    high = "high"
    normal = "normal"
    low = "low"


class NotifyMode(StrEnum):
    batch = "batch"
    each = "each"
    none = "none"
