"""What the worker and its document child say to each other: a Request, then messages.

The worker writes one Request on the child's stdin and closes it. The child answers on
its stdout, one JSON object a line: Info first, then for each page any number of Steps
(it is still working: the page's clock starts again) and one Page, and Done at the end;
an Error ends the stream instead. Each class below shows its line.

Both sides use these classes, and the worker reads every line with `decode`, which
trusts nothing: the child reads hostile PDFs and may have been subverted by one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from importer.states import PageSource, TextLayerMode
from workers.document import _ERRORS, MB, ChildCrashed, DocumentError, Limits, PageResult
from workers.wire import Fields, MalformedMessage, json_object

MAX_MESSAGE = 64 * MB  # one line: a page's text, as JSON; and the request


def _line(body: dict[str, object]) -> bytes:
    return json.dumps(body, allow_nan=False).encode() + b"\n"


@dataclass(frozen=True)
class Request:
    """What to read, and how; sent once, from the worker to the child::

        {"path": "/data/in/a.pdf", "lang": "eng+deu",
         "limits": {"page_timeout": 120.0, "document_timeout": 3600.0,
                    "max_file_bytes": 536870912, "max_pages": 5000,
                    "max_page_pixels": 200000000, "memory_bytes": 4294967296,
                    "cpu_seconds": 3600, "dpi": 300},
         "skip": [1, 2], "text_layer": "auto", "fd": 3, "archive_fd": 4, "log_level": 20}

    `skip` are pages already stored (a retried document resumes), `fd` the descriptor
    the child reads the document from, `archive_fd` the one it writes the searchable copy
    to (null: none is made), `log_level` what it logs to its stderr.
    """

    path: str
    lang: str
    limits: Limits
    skip: tuple[int, ...]
    text_layer: TextLayerMode
    fd: int
    archive_fd: int | None
    log_level: int

    def encode(self) -> bytes:
        body = dataclasses.asdict(self)
        body["skip"] = list(self.skip)
        return _line(body)

    @classmethod
    def decode(cls, data: bytes) -> Request:
        what = "engine request"
        f = Fields(json_object(data, limit=MAX_MESSAGE, what=what), what, _names(cls))
        limits = f.fields("limits", _names(Limits))
        values: dict[str, Any] = {  # each of the type of its default
            name: limits.number(name) if isinstance(default, float) else limits.integer(name)
            for name, default in dataclasses.asdict(Limits()).items()
        }
        return cls(
            path=f.text("path"),
            lang=f.text("lang"),
            limits=Limits(**values),
            skip=f.integers("skip", minimum=1),
            text_layer=f.choice("text_layer", TextLayerMode),
            fd=f.integer("fd", minimum=0),
            archive_fd=f.optional_integer("archive_fd", minimum=0),
            log_level=f.integer("log_level", minimum=0),
        )


class _Message:
    """A line from the child: `t` names its kind, the other keys are its fields."""

    t: ClassVar[str]

    def encode(self) -> bytes:
        return _line({"t": self.t, **dataclasses.asdict(self)})  # type: ignore[call-overload]

    @classmethod
    def _read(cls, f: Fields) -> Self:
        raise NotImplementedError


@dataclass(frozen=True)
class Info(_Message):
    """The document's page count, before any page::

    {"t": "info", "pages": 3}
    """

    t = "info"
    pages: int

    @classmethod
    def _read(cls, f: Fields) -> Info:
        return cls(f.integer("pages", minimum=0))


@dataclass(frozen=True)
class Step(_Message):
    """A heartbeat: a step of the current page is done (the text layer, a rendering)::

    {"t": "step"}
    """

    t = "step"

    @classmethod
    def _read(cls, f: Fields) -> Step:
        return cls()


@dataclass(frozen=True)
class Page(_Message):
    """One page read (`confidence` is null for a text layer; `blank`: an OCRed page whose
    image holds no ink, see `workers.review`; always false for a text layer)::

    {"t": "page", "number": 3, "text": "Dear Sir,", "source": "ocr", "confidence": 91.5,
     "seconds": 2.41, "blank": false}
    """

    t = "page"
    number: int
    text: str
    source: PageSource
    confidence: float | None
    seconds: float
    blank: bool

    @classmethod
    def of(cls, page: PageResult) -> Page:
        return cls(page.number, page.text, page.source, page.confidence, page.seconds, page.blank)

    def result(self) -> PageResult:
        return PageResult(
            self.number, self.text, self.source, self.confidence, self.seconds, self.blank
        )

    @classmethod
    def _read(cls, f: Fields) -> Page:
        return cls(
            number=f.integer("number", minimum=1),
            text=f.text("text"),
            source=f.choice("source", PageSource),
            confidence=f.optional_number("confidence"),
            seconds=f.number("seconds"),
            blank=f.boolean("blank"),
        )


@dataclass(frozen=True)
class Done(_Message):
    """Every page has been sent; the child is exiting::

    {"t": "done"}
    """

    t = "done"

    @classmethod
    def _read(cls, f: Fields) -> Done:
        return cls()


@dataclass(frozen=True)
class Error(_Message):
    """The document cannot be read: `kind` names a DocumentError (workers.document)::

    {"t": "error", "kind": "CorruptPdf", "reason": "the PDF's page tree is damaged"}
    """

    t = "error"
    kind: str
    reason: str

    @classmethod
    def of(cls, error: DocumentError) -> Error:
        """The error, as the nearest kind the worker knows (a subclass keeps its base's)."""
        kind = next((c.__name__ for c in type(error).__mro__ if c.__name__ in _ERRORS), None)
        return cls(kind or ChildCrashed.__name__, error.reason)

    def exception(self) -> DocumentError:
        return _ERRORS.get(self.kind, ChildCrashed)(self.reason)

    @classmethod
    def _read(cls, f: Fields) -> Error:
        kind = f.text("kind")
        if kind not in _ERRORS:
            raise MalformedMessage(f"engine message error: unknown kind {kind[:60]!r}")
        return cls(kind, f.text("reason"))


Message = Info | Step | Page | Done | Error
_KINDS: dict[str, type[Message]] = {cls.t: cls for cls in (Info, Step, Page, Done, Error)}


def decode(line: bytes) -> Message:
    """One line from the child; MalformedMessage for anything else."""
    body = json_object(line, limit=MAX_MESSAGE, what="engine message")
    kind = body.get("t")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MalformedMessage(f"engine message of unknown kind {kind!r:.60}")
    return cls._read(Fields(body, f"engine message {kind}", ["t", *_names(cls)]))


def _names(cls: type) -> list[str]:
    return [field.name for field in dataclasses.fields(cls)]
