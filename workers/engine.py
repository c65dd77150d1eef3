"""The document engine: a document's pages, read inside an isolated child process.

Poppler, Pillow and Tesseract have histories of crashes, infinite loops and memory
bombs on hostile files, and the worker that calls us must survive all of them. So
`process_document` runs the reading in a child process with its own process group and
resource limits, streams each page back as soon as it is done, and on a wall-clock
timeout kills the whole group (pdftoppm and tesseract included). `iter_pages` is the
same reading without the isolation, for tests and tools.

Per page, the PDF's own text layer is used when it holds real text; otherwise that one
page is rendered to a gray image and read by Tesseract.

The child is a fresh interpreter (`python -m workers.engine`), one per document: it
shares nothing with the caller (no threads, locks, connections or secrets from the
environment), it starts in its own session so one signal reaches everything it runs,
and its results come back as JSON lines, not pickle, so even a subverted child cannot
make the caller run code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.errors import ImporterError
from importer.states import PageSource
from workers import ocr, pdf
from workers.pdf import ToolError, ToolKilled, ToolTimeout, signal_name

log = logging.getLogger(__name__)

MB = 2**20
GRACE = 2.0  # seconds the caller waits past the child's own timeouts before killing it
MAX_MESSAGE = 64 * MB  # one page's text, as JSON
MAX_LOG_LINE = 64 * 1024
REAP_TIMEOUT = 30.0  # a SIGKILLed child is gone at once unless stuck in the kernel (NFS)
EXIT_OUT_OF_MEMORY = 70  # the child's exit status after a MemoryError


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


class DocumentError(ImporterError):
    """A document could not be read. `reason` is one line for a person; `transient` says
    whether a later attempt may succeed (the worker retries only those)."""

    transient: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAPdf(DocumentError):
    """The file does not start like a PDF."""


class EncryptedPdf(DocumentError):
    """The PDF needs a password to open."""


class CorruptPdf(DocumentError):
    """The PDF is damaged beyond what poppler can read."""


class OverLimit(DocumentError):
    """The file, its page count or a page's size is over a configured cap."""


class LanguageUnavailable(DocumentError):
    """Tesseract has no data for a requested language: the operator must install it."""


class FileUnreadable(DocumentError):
    """The file could not be opened or read: gone, unreadable, or storage trouble."""

    transient = True


class PageTimeout(DocumentError):
    """One step (the structure, the text layer, or rendering and reading one page) ran
    past the per-page timeout."""

    transient = True


class DocumentTimeout(DocumentError):
    """The whole document ran past the per-document timeout."""

    transient = True


class ChildCrashed(DocumentError):
    """The engine's child, or a program it ran, died unexpectedly."""

    transient = True


class OutOfMemory(DocumentError):
    """The engine's child ran out of its address-space limit."""

    transient = True


class ToolFailed(DocumentError):
    """An external program failed in a way the document may not be to blame for."""

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


# In-process reading ------------------------------------------------------------------


def iter_pages(
    path: str | os.PathLike[str],
    *,
    lang: str = "eng",
    limits: Limits = Limits(),
    skip_pages: Collection[int] = (),
    work_dir: str | os.PathLike[str] | None = None,
    on_step: Callable[[], None] | None = None,
) -> Iterator[DocumentInfo | PageResult]:
    """Yield DocumentInfo, then a PageResult per page not in `skip_pages`, in this process.

    This is what the isolated child runs. Page images go to `work_dir`, or to a
    temporary directory removed at the end. `on_step` is called after each step that
    yields nothing (the text layer, the language check), so a watching parent can time
    every step by the page timeout. Raises DocumentError.
    """
    skip = frozenset(skip_pages)
    if work_dir is not None:
        yield from _Reader(Path(path), lang, limits, skip, Path(work_dir), on_step).run()
        return
    with tempfile.TemporaryDirectory(prefix="importer-doc-") as tmp:
        yield from _Reader(Path(path), lang, limits, skip, Path(tmp), on_step).run()


class _Reader:
    """One pass over one document; owns the deadlines every external call is timed by."""

    def __init__(
        self,
        path: Path,
        lang: str,
        limits: Limits,
        skip: frozenset[int],
        work_dir: Path,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.lang = lang
        self.limits = limits
        self.skip = skip
        self.work_dir = work_dir
        self.on_step = on_step or (lambda: None)
        self.doc_deadline = time.monotonic() + limits.document_timeout

    def run(self) -> Iterator[DocumentInfo | PageResult]:
        self._check_file()
        probe = self._probe()
        yield DocumentInfo(pages=probe.pages)
        wanted = [n for n in range(1, probe.pages + 1) if n not in self.skip]
        if not wanted:
            return
        started = time.monotonic()
        texts = self._text_layer(probe.pages)
        share = (time.monotonic() - started) / probe.pages
        self.on_step()
        to_ocr = {n for n in wanted if not pdf.has_text_layer(texts[n - 1])}
        self._check_page_sizes(probe, sorted(to_ocr))
        if to_ocr:
            self._check_languages()
            self.on_step()
        for number in wanted:
            if number in to_ocr:
                yield self._ocr_page(number)
            else:
                text = texts[number - 1].strip()
                yield PageResult(number, text, PageSource.text_layer, None, share)

    def _check_file(self) -> None:
        try:
            size = self.path.stat().st_size
            header = pdf.has_pdf_header(self.path)
        except OSError as e:
            raise FileUnreadable(f"cannot read {self.path}: {e.strerror or e}") from e
        cap = self.limits.max_file_bytes
        if size > cap:
            raise OverLimit(
                f"file is {_megabytes(size)}, over the {_megabytes(cap)} cap (IMPORTER_MAX_FILE_MB)"
            )
        if not header:
            raise NotAPdf("not a PDF (no %PDF- header in its first 1024 bytes)")

    def _probe(self) -> pdf.Probe:
        deadline = self._step_deadline()
        try:
            timeout = deadline - time.monotonic()
            probe = pdf.probe(self.path, max_pages=self.limits.max_pages, timeout=timeout)
        except ToolTimeout as e:
            raise self._timeout("pdfinfo timed out reading the document structure", deadline) from e
        except ToolKilled as e:
            raise ChildCrashed(f"pdfinfo {e.detail} reading the document structure") from e
        except ToolError as e:
            if pdf.needs_password(self.path):
                raise EncryptedPdf("encrypted PDF (it needs a password to open)") from e
            raise CorruptPdf(f"corrupt PDF: {e.detail}") from e
        if probe.pages < 1:
            raise CorruptPdf("corrupt PDF: it has no pages")
        if probe.pages > self.limits.max_pages:
            raise OverLimit(
                f"{probe.pages:,} pages, over the {self.limits.max_pages:,} page cap"
                " (IMPORTER_MAX_PAGES)"
            )
        if probe.restricted:
            log.info("%s: encrypted with an owner password only; reading it", self.path)
        return probe

    def _text_layer(self, pages: int) -> list[str]:
        deadline = self._step_deadline()
        try:
            return pdf.text_layer(self.path, pages=pages, timeout=deadline - time.monotonic())
        except ToolTimeout as e:
            raise self._timeout("pdftotext timed out reading the text layer", deadline) from e
        except ToolKilled as e:
            raise ChildCrashed(f"pdftotext {e.detail} reading the text layer") from e
        except ToolError as e:
            log.warning("%s: no text layer (%s); every page will be OCRed", self.path, e)
            return [""] * pages

    def _check_page_sizes(self, probe: pdf.Probe, pages: list[int]) -> None:
        """Refuse before rendering anything, so no page renders only to hit the cap later."""
        cap, dpi = self.limits.max_page_pixels, self.limits.dpi
        for number in pages:
            box = probe.boxes.get(number)
            if box is None:
                raise CorruptPdf(f"corrupt PDF: page {number} has no size")
            width, height = box.pixels(dpi)
            if width * height > cap:
                raise OverLimit(
                    f"page {number} is {width:,} x {height:,} pixels at {dpi} dpi"
                    f" ({width * height / 1e6:,.0f} megapixels), over the {cap / 1e6:,.0f}"
                    " megapixel cap (IMPORTER_MAX_PAGE_MEGAPIXELS)"
                )

    def _check_languages(self) -> None:
        deadline = self._step_deadline()
        try:
            missing = ocr.missing_languages(self.lang, timeout=deadline - time.monotonic())
        except ValueError as e:
            raise LanguageUnavailable(str(e)) from e
        except ToolTimeout as e:
            raise self._timeout("tesseract --list-langs timed out", deadline) from e
        except ToolError as e:
            raise ToolFailed(f"cannot list Tesseract's languages: {e.detail}") from e
        if missing:
            packages = " ".join(f"tesseract-ocr-{name.lower()}" for name in missing)
            raise LanguageUnavailable(
                f"Tesseract has no data for language {', '.join(missing)}"
                f" (install it: apt-get install {packages})"
            )

    def _ocr_page(self, number: int) -> PageResult:
        started = time.monotonic()
        deadline = self._step_deadline()
        image: Path | None = None
        step = "pdftoppm"
        try:
            image = pdf.rasterize(
                self.path,
                page=number,
                dpi=self.limits.dpi,
                out_dir=self.work_dir,
                timeout=deadline - time.monotonic(),
            )
            step = "Tesseract"
            result = ocr.read_page(image, lang=self.lang, dpi=self.limits.dpi, deadline=deadline)
        except ToolTimeout as e:
            raise self._timeout(f"{step} timed out on page {number}", deadline) from e
        except ToolKilled as e:
            raise ChildCrashed(f"{step} {e.detail} on page {number}") from e
        except ToolError as e:
            if step == "pdftoppm":
                reason = f"corrupt PDF: page {number} cannot be rendered: {e.detail}"
                raise CorruptPdf(reason) from e
            raise ToolFailed(f"Tesseract failed on page {number}: {e.detail}") from e
        finally:
            if image is not None:
                image.unlink(missing_ok=True)
        seconds = time.monotonic() - started
        return PageResult(number, result.text, PageSource.ocr, result.confidence, seconds)

    def _step_deadline(self) -> float:
        """A step gets the page timeout, within what is left of the document's."""
        return min(time.monotonic() + self.limits.page_timeout, self.doc_deadline)

    def _timeout(self, what: str, deadline: float) -> DocumentError:
        """The error for a step that ran out of time, blaming whichever clock ran out."""
        if deadline >= self.doc_deadline:
            return DocumentTimeout(
                f"{what}: the document took longer than {self.limits.document_timeout:g} s"
                " (IMPORTER_DOCUMENT_TIMEOUT_SECONDS)"
            )
        return PageTimeout(
            f"{what} (limit {self.limits.page_timeout:g} s, IMPORTER_PAGE_TIMEOUT_SECONDS)"
        )


class _Done:
    """The child's last message: every page has been sent."""


def _megabytes(size: int) -> str:
    return f"{size / MB:,.0f} MB" if size >= 10 * MB else f"{size / MB:.2g} MB"


# Isolation ---------------------------------------------------------------------------


def process_document(
    path: str | os.PathLike[str],
    *,
    lang: str = "eng",
    limits: Limits = Limits(),
    skip_pages: Collection[int] = (),
) -> Iterator[DocumentInfo | PageResult]:
    """Yields DocumentInfo first, then one PageResult per page in page order (pages in
    skip_pages are not processed, so a retried document can resume); raises DocumentError.

    The reading happens in a child process; nothing the PDF does can take this process
    down. Leaving the loop early (break, an exception, closing the generator) kills the
    child and its programs at once, and the page images always go with them.
    """
    skip = sorted({int(n) for n in skip_pages})
    work_dir = tempfile.mkdtemp(prefix="importer-doc-")
    request = {
        "path": os.path.abspath(path),
        "lang": lang,
        "limits": dataclasses.asdict(limits),
        "skip": skip,
        "work_dir": work_dir,
        "log_level": logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.INFO,
    }
    proc: subprocess.Popen[bytes] | None = None
    try:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=_child_environment(),
            )
        except OSError as e:
            raise ChildCrashed(f"cannot start a worker child: {e}") from e
        log.debug("engine child %d reads %s", proc.pid, request["path"])
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # an early death shows in the exit status
            proc.stdin.write(json.dumps(request).encode("utf-8"))
            proc.stdin.close()
        yield from _Watch(proc, limits, frozenset(skip)).run()
    finally:
        if proc is not None:
            _kill_group(proc)
        shutil.rmtree(work_dir, ignore_errors=True)


# What the child may see of our environment: enough to find its programs and data, and
# none of the operator's secrets (IMPORTER_SECRET_KEYS, database passwords).
_CHILD_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "TESSDATA_PREFIX",
)


def _child_environment() -> dict[str, str]:
    env = {key: os.environ[key] for key in _CHILD_ENV if key in os.environ}
    env["OMP_THREAD_LIMIT"] = "1"
    return env


class _Watch:
    """The parent's side: relays the child's messages and enforces the wall clock."""

    def __init__(self, proc: subprocess.Popen[bytes], limits: Limits, skip: frozenset[int]):
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.limits = limits
        self.skip = skip
        self.pages = 0
        self.page: int | None = None  # the page being worked on, once the count is known
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ, "out")
        self.selector.register(proc.stderr, selectors.EVENT_READ, "err")
        self.out = bytearray()  # the start of a message line
        self.lines: deque[bytes] = deque()  # whole message lines, not yet decoded
        self.err = bytearray()
        self.last_err = ""
        self.eof = False

    def run(self) -> Iterator[DocumentInfo | PageResult]:
        try:
            yield from self._relay()
        finally:
            self.selector.close()

    def _relay(self) -> Iterator[DocumentInfo | PageResult]:
        doc_deadline = time.monotonic() + self.limits.document_timeout + GRACE
        while True:
            deadline = min(time.monotonic() + self.limits.page_timeout + GRACE, doc_deadline)
            item = self._decode(self._next(deadline, doc_deadline))
            if isinstance(item, _Done):
                self._drain(time.monotonic() + GRACE)
                return
            if isinstance(item, DocumentInfo):
                self.pages = item.pages
                self._advance(0)
                yield item
            elif isinstance(item, PageResult):
                self._advance(item.number)
                yield item

    def _decode(self, message: dict[str, Any]) -> DocumentInfo | PageResult | _Done | None:
        """One message as a result, _Done, or None for a heartbeat; errors are raised."""
        try:
            kind = message["t"]
            if kind == "info":
                return DocumentInfo(pages=int(message["pages"]))
            if kind == "page":
                return PageResult(
                    number=int(message["number"]),
                    text=str(message["text"]),
                    source=PageSource(message["source"]),
                    confidence=_optional_float(message["confidence"]),
                    seconds=float(message["seconds"]),
                )
            if kind == "error":
                error = _ERRORS.get(str(message["kind"]), ChildCrashed)
                reason = str(message["reason"])
            elif kind == "done":
                return _Done()
            elif kind == "step":
                return None
            else:
                reason = f"worker child sent an unknown message {kind!r}"
                error = ChildCrashed
        except (KeyError, TypeError, ValueError) as e:
            raise ChildCrashed(f"worker child sent a malformed message: {e!r:.100}") from e
        raise error(reason)

    def _advance(self, done: int) -> None:
        following = (n for n in range(done + 1, self.pages + 1) if n not in self.skip)
        self.page = next(following, None)

    def _next(self, deadline: float, doc_deadline: float) -> dict[str, Any]:
        """The child's next message; a dead or overdue child becomes a DocumentError."""
        while not self.lines:
            if self.eof:
                raise self._death()
            if len(self.out) > MAX_MESSAGE:
                raise OverLimit(f"more than {MAX_MESSAGE // MB} MB of text {self._where()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._overdue(deadline >= doc_deadline)
            for key, _ in self.selector.select(remaining):
                self._read(key)
        line = self.lines.popleft()
        try:
            message = json.loads(line)
        except ValueError as e:
            raise ChildCrashed(f"worker child sent a malformed message: {line[:60]!r}") from e
        if not isinstance(message, dict):
            raise ChildCrashed(f"worker child sent a malformed message: {line[:60]!r}")
        return message

    def _drain(self, deadline: float) -> None:
        """Read what is left on both pipes until the child closes them (it is exiting)."""
        while self.selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(remaining):
                self._read(key)

    def _read(self, key: selectors.SelectorKey) -> None:
        chunk = os.read(key.fd, 1 << 20)
        if not chunk:
            self.selector.unregister(key.fileobj)
            self.eof = self.eof or key.data == "out"
        elif key.data == "out":
            self.out += chunk
            if b"\n" in chunk:
                *lines, rest = bytes(self.out).split(b"\n")
                self.out[:] = rest
                self.lines.extend(lines)
        else:
            self.err += chunk
            if b"\n" in chunk or len(self.err) > MAX_LOG_LINE:
                *lines, rest = bytes(self.err).split(b"\n")
                self.err[:] = rest[-MAX_LOG_LINE:]
                for raw in lines:
                    self._relay_log(raw[:MAX_LOG_LINE].decode("utf-8", "replace"))

    def _relay_log(self, line: str) -> None:
        """Log what the child said, at the level it said it (its lines are "LEVEL name: ...")."""
        if not line.strip():
            return
        self.last_err = line.strip()
        level_name, _, rest = line.partition(" ")
        level = logging.getLevelName(level_name)
        if isinstance(level, int):
            log.log(level, "engine child: %s", rest)
        else:
            log.warning("engine child: %s", line)

    def _overdue(self, whole_document: bool) -> DocumentError:
        _kill_group(self.proc)
        if whole_document:
            return DocumentTimeout(
                f"the document took longer than {self.limits.document_timeout:g} s"
                f" (IMPORTER_DOCUMENT_TIMEOUT_SECONDS); stopped {self._where()}"
            )
        return PageTimeout(
            f"no progress for {self.limits.page_timeout:g} s {self._where()}"
            " (IMPORTER_PAGE_TIMEOUT_SECONDS)"
        )

    def _death(self) -> DocumentError:
        self._drain(time.monotonic() + GRACE)
        try:
            code = self.proc.wait(GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
            code = self.proc.returncode
        where = self._where()
        if code == EXIT_OUT_OF_MEMORY:
            limit = self.limits.memory_bytes // MB
            return OutOfMemory(
                f"worker child ran out of memory {where} (limit {limit} MB,"
                " IMPORTER_CHILD_MEMORY_MB)"
            )
        if code == -signal.SIGXCPU:
            return ChildCrashed(
                f"worker child ran out of CPU time {where} (limit"
                f" {self.limits.cpu_seconds} s, IMPORTER_CHILD_CPU_SECONDS)"
            )
        if code is not None and code < 0:
            name = signal_name(-code)
            return ChildCrashed(f"worker child killed by signal {-code} ({name}) {where}")
        said = f": {self.last_err[:200]}" if self.last_err else ""
        return ChildCrashed(f"worker child stopped (exit status {code}) {where}{said}")

    def _where(self) -> str:
        if self.page is not None:
            return f"on page {self.page}"
        return "after the last page" if self.pages else "while opening the document"


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's process group (pdftoppm, tesseract and all), then reap the child.

    The group is killed before the child is reaped: until then its pid, which names
    the group, cannot be reused by an unrelated process.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.error("engine child %d survives SIGKILL (stuck in the kernel?)", proc.pid)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


# The child ----------------------------------------------------------------------------


def child_main() -> int:
    """The child's life: read the request, limit itself, read the document, report.

    Messages go out one JSON object per line on the original stdout; fd 1 is pointed at
    stderr first, so nothing a library prints can garble them.
    """
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    request = json.loads(sys.stdin.buffer.read())
    limits = Limits(**request["limits"])
    _apply_limits(limits)
    logging.basicConfig(
        level=request["log_level"], stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ["OMP_THREAD_LIMIT"] = "1"
    tempfile.tempdir = request["work_dir"]  # pytesseract's own temporary files go here too

    def send(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message).encode("utf-8") + b"\n")
        channel.flush()

    pages = iter_pages(
        request["path"],
        lang=request["lang"],
        limits=limits,
        skip_pages=request["skip"],
        work_dir=request["work_dir"],
        on_step=lambda: send({"t": "step"}),
    )
    try:
        for item in pages:
            if isinstance(item, DocumentInfo):
                send({"t": "info", "pages": item.pages})
            else:
                send(
                    {
                        "t": "page",
                        "number": item.number,
                        "text": item.text,
                        "source": item.source.value,
                        "confidence": item.confidence,
                        "seconds": item.seconds,
                    }
                )
        send({"t": "done"})
    except DocumentError as e:
        send({"t": "error", "kind": type(e).__name__, "reason": e.reason})
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)  # reporting could need memory; the status says it
    except BrokenPipeError:
        return 0  # the parent has stopped listening; nothing is left to do
    except Exception as e:
        log.exception("engine child failed on %s", request["path"])
        send(
            {
                "t": "error",
                "kind": "ChildCrashed",
                "reason": f"worker child failed: {type(e).__name__}: {e}",
            }
        )
    return 0


def _apply_limits(limits: Limits) -> None:
    """Limits on the child, inherited by every program it runs.

    The file-size limit leaves room for one gray page image at the pixel cap; a core
    dump of a crashed renderer is of no use here and could be large.
    """
    _lower(resource.RLIMIT_AS, limits.memory_bytes)
    _lower(resource.RLIMIT_CPU, limits.cpu_seconds, hard_extra=5)
    _lower(resource.RLIMIT_FSIZE, limits.max_page_pixels + 16 * MB)
    _lower(resource.RLIMIT_CORE, 0)


def _lower(kind: int, value: int, *, hard_extra: int = 0) -> None:
    """Set a limit, never above one already in force (the operator's `ulimit` wins)."""
    soft, hard = resource.getrlimit(kind)
    if soft != resource.RLIM_INFINITY:
        value = min(value, soft)
    new_hard = value + hard_extra
    if hard != resource.RLIM_INFINITY:
        value, new_hard = min(value, hard), min(new_hard, hard)
    resource.setrlimit(kind, (value, new_hard))


if __name__ == "__main__":
    from workers.engine import child_main as _main  # the importable copy, not __main__'s

    sys.exit(_main())
