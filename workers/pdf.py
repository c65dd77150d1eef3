"""Poppler wrappers: probe a PDF, read its text layer, render one page to an image file.

Every program runs through `workers.tools.run_tool`, which times it, logs it and turns
a failure into a `ToolError`. These functions parse untrusted files through poppler, so
the engine calls them only inside its resource-limited child.

pdftoppm is called directly rather than through pdf2image: `convert_from_path` runs
`pdfinfo` and `pdftoppm -v` on every call (two extra processes per page, neither with
a timeout) and ignores pdftoppm's exit status, so a crashed renderer would look like
an empty page.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from workers.tools import ToolError, ToolOutOfMemory, run_tool

log = logging.getLogger(__name__)

HEADER_WINDOW = 1024  # readers accept "%PDF-" anywhere in the first KB, and so do we
POINTS_PER_INCH = 72.0


@dataclass(frozen=True)
class Source:
    """The PDF every tool reads.

    The worker opens the file once and hands its descriptor down: every tool then reads
    that open file as `fd://N` and nothing reopens the name, so a file swapped for a link
    after it was checked is never read. Poppler's tools share the descriptor's offset, so
    it is rewound before each. A source without a descriptor is read by path (tests, tools).
    """

    name: str  # the path, for messages
    fd: int | None = None

    def argument(self) -> str:
        """What to give a poppler tool for the file, ready to be read from its start."""
        if self.fd is None:
            return os.path.abspath(self.name)
        os.lseek(self.fd, 0, os.SEEK_SET)
        return f"fd://{self.fd}"

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return () if self.fd is None else (self.fd,)

    def size(self) -> int:
        return os.fstat(self.fd).st_size if self.fd is not None else os.stat(self.name).st_size

    def head(self, length: int) -> bytes:
        if self.fd is not None:
            return os.pread(self.fd, length, 0)
        with open(self.name, "rb") as handle:
            return handle.read(length)

    def open(self) -> BinaryIO:
        """A file object of its own (a duplicate of the descriptor), at the start."""
        if self.fd is None:
            return open(self.name, "rb")
        handle = os.fdopen(os.dup(self.fd), "rb")
        handle.seek(0)
        return handle

    def __str__(self) -> str:
        return self.name


def run_on(
    source: Source, before: Sequence[str], after: Sequence[str] = (), *, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run a poppler tool on the source: `before`, the file, then `after`."""
    argv = [*before, source.argument(), *after]
    return run_tool(argv, timeout=timeout, pass_fds=source.pass_fds)


def has_pdf_header(source: Source) -> bool:
    return b"%PDF-" in source.head(HEADER_WINDOW)


@dataclass(frozen=True)
class PageBox:
    """A page's MediaBox in points: what pdftoppm renders."""

    width: float
    height: float

    def pixels(self, dpi: int) -> tuple[int, int]:
        scale = dpi / POINTS_PER_INCH
        return math.ceil(self.width * scale), math.ceil(self.height * scale)


@dataclass(frozen=True)
class Probe:
    pages: int
    boxes: Mapping[int, PageBox]  # page number -> box, for the pages pdfinfo listed
    restricted: bool  # encrypted with an owner password only: readable, but says so


_PAGES = re.compile(rb"^Pages:\s+(\d+)\s*$", re.MULTILINE)
_ENCRYPTED = re.compile(rb"^Encrypted:\s+yes", re.MULTILINE)
_MEDIABOX = re.compile(
    rb"^Page\s+(\d+)\s+MediaBox:\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s*$",
    re.MULTILINE,
)


def probe(source: Source, *, first: int = 1, last: int, timeout: float) -> Probe:
    """Page count, the sizes of pages `first`..`last`, and encryption from one pdfinfo run.

    Sizes are listed for at most those pages, so a file claiming a million pages costs no
    more than the pages asked about.
    """
    argv = ["pdfinfo", "-f", str(first), "-l", str(last), "-box"]
    out = run_on(source, argv, timeout=timeout).stdout
    pages = _PAGES.search(out)
    if pages is None:
        raise ToolError("pdfinfo", "no page count in its output")
    boxes = {
        int(m[1]): PageBox(abs(float(m[4]) - float(m[2])), abs(float(m[5]) - float(m[3])))
        for m in _MEDIABOX.finditer(out)
    }
    return Probe(pages=int(pages[1]), boxes=boxes, restricted=bool(_ENCRYPTED.search(out)))


def needs_password(source: Source) -> bool:
    """Whether the PDF is encrypted with a user password, so nothing can read it.

    Asked only after pdfinfo has failed, to tell "encrypted" from "corrupt" without
    matching poppler's messages. pypdf raises many exception types on damaged files;
    any of them means "not a readable encrypted PDF", so the answer is False.
    """
    from pypdf import PasswordType, PdfReader

    pypdf_log = logging.getLogger("pypdf")
    level = pypdf_log.level
    pypdf_log.setLevel(logging.ERROR)  # its complaints about a damaged file repeat pdfinfo's
    try:
        with source.open() as handle:
            reader = PdfReader(handle)
            encrypted = bool(reader.is_encrypted)
            return encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED
    except Exception as e:  # noqa: BLE001 - see docstring
        log.debug("pypdf cannot open %s: %r", source, e)
        return False
    finally:
        pypdf_log.setLevel(level)


def text_pages(source: Source, *, last: int, timeout: float) -> list[str] | None:
    """Each page's own text, pages 1..`last`, from one pdftotext run; None if ambiguous.

    pdftotext ends every page with a form feed, so the pieces give the page count too
    (no pdfinfo needed for a document of ordinary text). A form feed inside the text
    itself would shift the pages: when the output does not end in exactly one, the
    caller counts pages with pdfinfo and reads them one by one.
    """
    argv = ["pdftotext", "-enc", "UTF-8", "-f", "1", "-l", str(last)]
    out = run_on(source, argv, ["-"], timeout=timeout).stdout
    texts = out.decode("utf-8", "replace").split("\f")
    if len(texts) < 2 or texts[-1].strip():
        log.warning("%s: pdftotext's pages cannot be told apart; reading them one by one", source)
        return None
    return texts[:-1]


def page_text(source: Source, *, page: int, timeout: float) -> str:
    argv = ["pdftotext", "-enc", "UTF-8", "-f", str(page), "-l", str(page)]
    out = run_on(source, argv, ["-"], timeout=timeout).stdout
    return out.decode("utf-8", "replace").replace("\f", "")


def rasterize(source: Source, *, page: int, dpi: int, out_dir: Path, timeout: float) -> Path:
    """Render one page to an 8-bit gray PGM in `out_dir`: the cheapest input Tesseract reads."""
    base = out_dir / f"page-{page}"
    argv = ["pdftoppm", "-r", str(dpi), "-f", str(page), "-l", str(page), "-gray", "-singlefile"]
    proc = run_on(source, argv, [str(base)], timeout=timeout)
    image = base.with_suffix(".pgm")
    if b"Out of memory" in proc.stderr:
        raise ToolOutOfMemory("pdftoppm", f"ran out of memory rendering page {page}")
    if not image.is_file():
        raise ToolError("pdftoppm", f"page {page} produced no image")
    if _pgm_pixels(image) == 0:
        raise ToolOutOfMemory("pdftoppm", f"rendered page {page} as an empty image")
    return image


def _pgm_pixels(image: Path) -> int:
    """Width x height from a PGM header; 0 for the empty image poppler writes on failure."""
    with open(image, "rb") as handle:
        fields = handle.read(64).split()
    try:
        return int(fields[1]) * int(fields[2])
    except (IndexError, ValueError):
        return 0


def image_sizes(
    source: Source, *, first: int = 1, last: int, timeout: float
) -> dict[int, list[PageImage]]:
    """Declared size and placed resolution of every image on pages `first`..`last`, by
    page, without decoding any.

    A few bytes of Flate or JBIG2 can declare billions of pixels; this is how such a
    bomb is refused before a renderer tries to decode it.
    """
    argv = ["pdfimages", "-list", "-f", str(first), "-l", str(last)]
    proc = run_on(source, argv, timeout=timeout)
    sizes: dict[int, list[PageImage]] = {}
    for line in proc.stdout.decode("utf-8", "replace").splitlines()[2:]:
        # page num type width height color comp bpc enc interp object ID x-ppi y-ppi ...
        fields = line.split()
        if len(fields) >= 5 and fields[0].isdigit() and fields[3].isdigit() and fields[4].isdigit():
            image = PageImage(
                int(fields[3]),
                int(fields[4]),
                _number(fields, 12),
                _number(fields, 13),
                mask=fields[2] != "image",
            )
            sizes.setdefault(int(fields[0]), []).append(image)
    return sizes


def _number(fields: list[str], index: int) -> int:
    return int(fields[index]) if len(fields) > index and fields[index].isdigit() else 0


@dataclass(frozen=True)
class PageImage:
    """An image as placed on a page: its pixels, and its resolution there (0: unknown)."""

    width: int
    height: int
    ppi: int  # horizontal
    yppi: int = 0
    mask: bool = False  # a stencil or soft mask, not a picture of its own

    def coverage(self, box: PageBox) -> float:
        """The share of the page's area this image is drawn over (0 when unknown)."""
        if self.mask or self.ppi <= 0 or self.yppi <= 0 or box.width * box.height <= 0:
            return 0.0
        area = (self.width / self.ppi) * (self.height / self.yppi) * POINTS_PER_INCH**2
        return min(1.0, area / (box.width * box.height))
