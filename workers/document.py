"""What the engine takes and gives: limits, results and the reasons a document fails.

Plain data only, so it crosses into the isolated child and back as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from importer.errors import ImporterError
from importer.reasons import ErrorKind
from importer.states import PageSource

MB = 2**20


@dataclass(frozen=True)
class Limits:
    """Plain, picklable limits for one document, built from settings by the caller."""

    page_timeout: float = 120.0  # seconds of wall clock per page (rasterize + OCR)
    document_timeout: float = 3600.0  # seconds of wall clock for the whole document
    max_file_bytes: int = 512 * MB
    max_pages: int = 5000
    max_page_pixels: int = 200_000_000  # width*height at `dpi`, checked BEFORE rasterizing
    memory_bytes: int = 4 * 2**30  # RLIMIT_AS of the child
    cpu_seconds: int = 3600  # RLIMIT_CPU of the child
    dpi: int = 300


@dataclass(frozen=True)
class DocumentInfo:
    pages: int


@dataclass(frozen=True)
class PageResult:
    number: int
    text: str
    source: PageSource
    confidence: float | None  # mean OCR word confidence 0-100; None for a text layer
    seconds: float
    blank: bool = False  # an OCRed page whose image holds no ink (workers.review)


class DocumentError(ImporterError):
    """A document could not be read. `reason` is one line for a person; `transient` says
    whether a later attempt may succeed (the worker retries only those)."""

    transient: bool = False
    kind: ClassVar[ErrorKind] = ErrorKind.crashed  # documents.error_kind

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAPdf(DocumentError):
    """The file does not start like a PDF."""

    kind = ErrorKind.not_pdf


class EncryptedPdf(DocumentError):
    """The PDF needs a password to open."""

    kind = ErrorKind.encrypted


class CorruptPdf(DocumentError):
    """The PDF is damaged beyond what poppler can read."""

    kind = ErrorKind.corrupt


class OverLimit(DocumentError):
    """The file, its page count or a page's size is over a configured cap."""

    kind = ErrorKind.over_limit


class LanguageUnavailable(DocumentError):
    """Tesseract has no data for a requested language: the operator must install it."""

    kind = ErrorKind.language


class FileUnreadable(DocumentError):
    """The file could not be opened or read: gone, unreadable, or storage trouble."""

    kind = ErrorKind.unreadable
    transient = True


class PageTimeout(DocumentError):
    """One step (the structure, the text layer, or rendering and reading one page) ran
    past the per-page timeout."""

    kind = ErrorKind.timeout
    transient = True


class DocumentTimeout(DocumentError):
    """The whole document ran past the per-document timeout."""

    kind = ErrorKind.timeout
    transient = True


class ChildCrashed(DocumentError):
    """The engine's child, or a program it ran, died unexpectedly."""

    kind = ErrorKind.crashed
    transient = True


class OutOfMemory(DocumentError):
    """The engine's child ran out of its address-space limit."""

    kind = ErrorKind.out_of_memory
    transient = True


class ToolFailed(DocumentError):
    """An external program failed in a way the document may not be to blame for."""

    kind = ErrorKind.tool_failed
    transient = True


_ERRORS: dict[str, type[DocumentError]] = {
    cls.__name__: cls
    for cls in (
        NotAPdf,
        EncryptedPdf,
        CorruptPdf,
        OverLimit,
        LanguageUnavailable,
        FileUnreadable,
        PageTimeout,
        DocumentTimeout,
        ChildCrashed,
        OutOfMemory,
        ToolFailed,
    )
}
