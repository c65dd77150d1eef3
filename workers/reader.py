"""Reading one document's pages in this process: text layer where it is real, else OCR.

This is what the isolated child of `workers.engine` runs; tests and tools may call
`iter_pages` directly.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

from importer.languages import (
    LanguageError,
    install_command,
    missing_languages,
    parse_languages,
)
from importer.states import PageSource, TextLayerMode
from workers import archive, ocr, pdf, probe, review, textlayer
from workers.document import (
    MB,
    ChildCrashed,
    CorruptPdf,
    DocumentError,
    DocumentInfo,
    DocumentTimeout,
    EncryptedPdf,
    FileUnreadable,
    LanguageUnavailable,
    Limits,
    NotAPdf,
    OutOfMemory,
    OverLimit,
    PageResult,
    PageTimeout,
    ToolFailed,
)
from workers.tools import ToolError, ToolKilled, ToolOutOfMemory, ToolTimeout

log = logging.getLogger(__name__)

MIN_RENDER_DPI = 200


def iter_pages(
    path: str | os.PathLike[str],
    *,
    lang: str = "eng",
    limits: Limits = Limits(),
    skip_pages: Collection[int] = (),
    work_dir: str | os.PathLike[str] | None = None,
    on_step: Callable[[], None] | None = None,
    text_layer: TextLayerMode | str = TextLayerMode.auto,
    fd: int | None = None,
    archive_fd: int | None = None,
) -> Iterator[DocumentInfo | PageResult]:
    """Yield DocumentInfo, then a PageResult per page not in `skip_pages`, in this process.

    This is what the isolated child runs. `text_layer` says which pages keep the PDF's
    own text (see `workers.textlayer`). Page images go to `work_dir`, or to a temporary
    directory removed at the end. `on_step` is called after each step that yields nothing
    (the text layer, the language check), so a watching parent can time every step by
    the page timeout. With `fd`, an open descriptor of the file, every tool reads that
    open file and `path` only names it in messages. With `archive_fd`, an open file, the
    document's searchable copy is written to it after the last page (`workers.archive`);
    pages in `skip_pages` are then read again for it, without being yielded. Raises
    DocumentError.
    """
    skip = frozenset(skip_pages)
    mode = TextLayerMode(text_layer)
    source = pdf.Source(os.path.abspath(path), fd)
    if work_dir is not None:
        reader = _Reader(source, lang, limits, skip, Path(work_dir), on_step, mode, archive_fd)
        yield from reader.run()
        return
    with tempfile.TemporaryDirectory(prefix="importer-doc-") as tmp:
        yield from _Reader(source, lang, limits, skip, Path(tmp), on_step, mode, archive_fd).run()


class _Reader:
    """One pass over one document; owns the deadlines every external call is timed by."""

    def __init__(
        self,
        source: pdf.Source,
        lang: str,
        limits: Limits,
        skip: frozenset[int],
        work_dir: Path,
        on_step: Callable[[], None] | None = None,
        mode: TextLayerMode = TextLayerMode.auto,
        archive_fd: int | None = None,
    ) -> None:
        self.source = source
        self.archive_fd = archive_fd
        self.layers: dict[int, Path] = {}  # page -> its text-only PDF, for the archive
        self.lang = lang
        self.mode = mode
        self.limits = limits
        self.skip = skip
        self.work_dir = work_dir
        self.on_step = on_step or (lambda: None)
        self.page_dpi: dict[int, int] = {}
        self.doc_deadline = time.monotonic() + limits.document_timeout

    def run(self) -> Iterator[DocumentInfo | PageResult]:
        self._check_file()
        started = time.monotonic()
        texts = self._text_layer()
        pages = len(texts)
        yield DocumentInfo(pages=pages)
        archiving = self.archive_fd is not None
        wanted = [n for n in range(1, pages + 1) if archiving or n not in self.skip]
        if not wanted:
            return
        share = (time.monotonic() - started) / pages
        self.on_step()
        to_ocr = self._pages_to_ocr(texts, wanted)
        if to_ocr:
            self._check_languages()
            self.on_step()
        for number in wanted:
            if number in to_ocr:
                page = self._ocr_page(number)
            else:
                text = texts[number - 1].strip()
                page = PageResult(number, text, PageSource.text_layer, None, share)
            if number not in self.skip:
                yield page
            else:
                self.on_step()  # read again for the archive: the page's clock starts again
        if self.archive_fd is not None:
            self.on_step()
            self._write_archive(self.archive_fd)

    def _write_archive(self, fd: int) -> None:
        """The searchable copy, to the open file `fd` (the worker syncs and names it)."""
        try:
            with self.source.open() as original, os.fdopen(os.dup(fd), "wb") as out:
                archive.write(original, self.layers, out)
        except archive.ArchiveFailed as e:
            raise CorruptPdf(f"the searchable PDF (--archive) cannot be written: {e}") from e
        except OSError as e:
            raise ToolFailed(f"the searchable PDF (--archive) cannot be written: {e}") from e
        finally:
            for layer in self.layers.values():
                layer.unlink(missing_ok=True)

    def _pages_to_ocr(self, texts: list[str], wanted: list[int]) -> set[int]:
        """Decide per page; only pages whose text is sparse, and pages to render, are probed."""
        kinds = {n: textlayer.classify(texts[n - 1]) for n in wanted}
        to_ocr = {n for n in wanted if textlayer.needs_ocr(kinds[n], self.mode)}
        to_probe = [n for n in wanted if textlayer.needs_probe(kinds[n], self.mode)]
        looked_at = sorted(to_ocr.union(to_probe))
        if not looked_at:
            return set()
        first, last = looked_at[0], looked_at[-1]
        probe = self._probe(first, last)
        images = self._images(first, last)
        for number in to_probe:
            box = probe.boxes.get(number)
            coverage = max(
                (image.coverage(box) for image in images.get(number, []) if box is not None),
                default=0.0,
            )
            if textlayer.needs_ocr(kinds[number], self.mode, coverage):
                to_ocr.add(number)
            log.debug(
                "%s: page %d has sparse text, image coverage %.2f", self.source, number, coverage
            )
        self._check_page_sizes(probe, sorted(to_ocr), images)
        return to_ocr

    def _check_file(self) -> None:
        try:
            size = self.source.size()
            header = pdf.has_pdf_header(self.source)
        except OSError as e:
            raise FileUnreadable(f"cannot read {self.source}: {e.strerror or e}") from e
        cap = self.limits.max_file_bytes
        if size > cap:
            raise OverLimit(
                f"file is {_megabytes(size)}, over the {_megabytes(cap)} cap (IMPORTER_MAX_FILE_MB)"
            )
        if not header:
            raise NotAPdf("not a PDF (no %PDF- header in its first 1024 bytes)")

    def _probe(self, first: int = 1, last: int = 1) -> pdf.Probe:
        """pdfinfo: the page count and pages `first`..`last`'s sizes, or why it cannot be read."""
        deadline = self._step_deadline()
        try:
            timeout = deadline - time.monotonic()
            probe = pdf.probe(self.source, first=first, last=last, timeout=timeout)
        except ToolTimeout as e:
            raise self._timeout("pdfinfo timed out reading the document structure", deadline) from e
        except ToolKilled as e:
            raise ChildCrashed(f"pdfinfo {e.detail} reading the document structure") from e
        except ToolError as e:
            if pdf.needs_password(self.source):
                raise EncryptedPdf("encrypted PDF (it needs a password to open)") from e
            if "Wrong page range" in e.detail:
                raise CorruptPdf(
                    "corrupt PDF: no readable pages (a damaged or too deeply nested page tree)"
                ) from e
            raise CorruptPdf(f"corrupt PDF: {e.detail}") from e
        if probe.pages < 1:
            raise CorruptPdf("corrupt PDF: it has no pages")
        if probe.pages > self.limits.max_pages:
            raise OverLimit(
                f"{probe.pages:,} pages, over the {self.limits.max_pages:,} page cap"
                " (IMPORTER_MAX_PAGES)"
            )
        if probe.restricted:
            log.info("%s: encrypted with an owner password only; reading it", self.source)
        return probe

    def _text_layer(self) -> list[str]:
        """Every page's own text, one string per page: the page count comes with it.

        pdftotext reads at most one page past the cap, so a file claiming a million pages
        costs no more than one at the cap. pdfinfo runs only when pdftotext fails (to say
        why: encrypted, corrupt) or its pages cannot be told apart.
        """
        cap = self.limits.max_pages
        deadline = self._step_deadline()
        try:
            texts = pdf.text_pages(self.source, last=cap + 1, timeout=deadline - time.monotonic())
        except ToolTimeout as e:
            raise self._timeout("pdftotext timed out reading the text layer", deadline) from e
        except ToolKilled as e:
            raise ChildCrashed(f"pdftotext {e.detail} reading the text layer") from e
        except ToolError as e:
            pages = self._probe().pages
            log.warning("%s: no text layer (%s); every page will be OCRed", self.source, e)
            return [""] * pages
        if texts is None or len(texts) > cap:
            pages = self._probe().pages  # the real count, or why the file cannot be read
            return [self._page_text(n) for n in range(1, pages + 1)]
        return texts

    def _page_text(self, number: int) -> str:
        deadline = self._step_deadline()
        try:
            return pdf.page_text(self.source, page=number, timeout=deadline - time.monotonic())
        except ToolTimeout as e:
            raise self._timeout(f"pdftotext timed out on page {number}", deadline) from e
        except ToolKilled as e:
            raise ChildCrashed(f"pdftotext {e.detail} on page {number}") from e
        except ToolError as e:
            log.warning("%s: page %d has no text layer (%s)", self.source, number, e)
            return ""

    def _check_page_sizes(
        self, probe: pdf.Probe, pages: list[int], images: Mapping[int, list[pdf.PageImage]]
    ) -> None:
        """Refuse before rendering anything, so no page renders only to hit the cap later.

        Images are decoded in full when a page renders: bombs are refused by their size."""
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
        for number in pages:
            for image in images.get(number, []):
                if image.width * image.height > cap:
                    raise OverLimit(
                        f"page {number} holds a {image.width:,} x {image.height:,} pixel image"
                        f" ({image.width * image.height / 1e6:,.0f} megapixels), over the"
                        f" {cap / 1e6:,.0f} megapixel cap (IMPORTER_MAX_PAGE_MEGAPIXELS)"
                    )
            self.page_dpi[number] = self._render_dpi(
                probe.boxes.get(number), images.get(number, [])
            )

    def _images(self, first: int, last: int) -> dict[int, list[pdf.PageImage]]:
        """The images on pages `first`..`last`, by page, as pdfimages declares them."""
        deadline = self._step_deadline()
        try:
            return pdf.image_sizes(
                self.source, first=first, last=last, timeout=deadline - time.monotonic()
            )
        except ToolTimeout as e:
            raise self._timeout("pdfimages timed out listing the images", deadline) from e
        except ToolKilled as e:
            raise ChildCrashed(f"pdfimages {e.detail} listing the images") from e
        except ToolError as e:
            raise CorruptPdf(f"corrupt PDF: its images cannot be listed: {e.detail}") from e

    def _render_dpi(self, box: pdf.PageBox | None, images: list[pdf.PageImage]) -> int:
        """A scanned page renders at its scan's own resolution (never above the configured
        dpi, never below MIN_RENDER_DPI): more pixels than the scanner took add no detail,
        only Tesseract time. Pages that are not one full-page scan get the configured dpi."""
        dpi = self.limits.dpi
        images = [image for image in images if not image.mask]
        if box is None or len(images) != 1 or images[0].ppi <= 0:
            return dpi
        image = images[0]
        covers = image.width / image.ppi * pdf.POINTS_PER_INCH >= 0.8 * box.width
        return max(MIN_RENDER_DPI, min(dpi, image.ppi)) if covers else dpi

    def _check_languages(self) -> None:
        """Against the languages probed when the worker started (`workers.probe`); listed
        here only when nobody has."""
        deadline = self._step_deadline()
        try:
            names = parse_languages(self.lang)
            installed = probe.installed_languages(timeout=deadline - time.monotonic())
        except LanguageError as e:
            raise LanguageUnavailable(e.message) from e
        except ToolTimeout as e:
            raise self._timeout("tesseract --list-langs timed out", deadline) from e
        except ToolError as e:
            raise ToolFailed(f"cannot list Tesseract's languages: {e.detail}") from e
        missing = missing_languages(names, installed)
        if missing:
            raise LanguageUnavailable(
                f"Tesseract has no data for language {', '.join(missing)}"
                f" (install it: {install_command(missing)})"
            )

    def _ocr_page(self, number: int) -> PageResult:
        started = time.monotonic()
        dpi = self.page_dpi.get(number, self.limits.dpi)
        deadline = self._step_deadline()
        image: Path | None = None
        step = "pdftoppm"
        try:
            image = pdf.rasterize(
                self.source,
                page=number,
                dpi=dpi,
                out_dir=self.work_dir,
                timeout=deadline - time.monotonic(),
            )
            step = "Tesseract"
            layer = None if self.archive_fd is None else self.work_dir / f"layer-{number}.pdf"
            result = ocr.read_page(image, lang=self.lang, dpi=dpi, deadline=deadline, layer=layer)
            if layer is not None:
                self.layers[number] = layer
            blank = review.is_blank(image, dpi)
        except ToolTimeout as e:
            raise self._timeout(f"{step} timed out on page {number}", deadline) from e
        except ToolKilled as e:
            raise ChildCrashed(f"{step} {e.detail} on page {number}") from e
        except ToolOutOfMemory as e:
            raise OutOfMemory(
                f"{step} {e.detail} (limit {self.limits.memory_bytes // MB} MB,"
                " IMPORTER_CHILD_MEMORY_MB)"
            ) from e
        except ToolError as e:
            if step == "pdftoppm":
                reason = f"corrupt PDF: page {number} cannot be rendered: {e.detail}"
                raise CorruptPdf(reason) from e
            raise ToolFailed(f"Tesseract failed on page {number}: {e.detail}") from e
        finally:
            if image is not None:
                image.unlink(missing_ok=True)
        seconds = time.monotonic() - started
        return PageResult(number, result.text, PageSource.ocr, result.confidence, seconds, blank)

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


def _megabytes(size: int) -> str:
    return f"{size / MB:,.0f} MB" if size >= 10 * MB else f"{size / MB:.2g} MB"
