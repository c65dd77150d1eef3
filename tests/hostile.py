"""Hostile PDFs, generated on demand: files a bulk import will meet sooner or later.

Each generator writes one file and returns its path. The PDFs are written object by
object (`write_pdf`), so a test controls exactly what a reader is given: a page tree of
2,000 pages costs a few hundred kilobytes, a decompression bomb a few kilobytes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path

from pypdf import PdfReader, PdfWriter

POINTS_PER_INCH = 72


def write_pdf(path: Path, objects: Sequence[bytes], *, root: int = 1) -> Path:
    """A PDF whose object N is objects[N - 1], with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\n" % (len(objects) + 1, root)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))
    return path


def stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def _one_page(path: Path, page_extra: bytes, content: bytes, extra: Sequence[bytes] = ()) -> Path:
    """Catalog (1), page tree (2), page (3), content stream (4), then `extra` objects (5...)."""
    return write_pdf(
        path,
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R " + page_extra + b">>",
            stream(content),
            *extra,
        ],
    )


def zero_bytes(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def not_a_pdf(path: Path) -> Path:
    """A PNG signature and some HTML: what a mislabelled download looks like."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"<html><body>404 Not Found</body></html>\n" * 20)
    return path


def truncated(path: Path, source: Path, keep: int = 400) -> Path:
    """The first `keep` bytes of a real PDF: the header, and not one whole page."""
    path.write_bytes(source.read_bytes()[:keep])
    return path


def encrypted(path: Path, source: Path, password: str = "s3cret") -> Path:
    """A PDF that opens only with a user password."""
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def huge_page(path: Path, *, pixels: int = 40_000, dpi: int = 300) -> Path:
    """One blank page that renders to `pixels` x `pixels` at `dpi` (a large MediaBox)."""
    side = math.ceil(pixels * POINTS_PER_INCH / dpi)
    return _one_page(path, b"/MediaBox [0 0 %d %d] " % (side, side), b"")


def many_pages(path: Path, pages: int = 2000) -> Path:
    """`pages` blank letter pages sharing one empty content stream."""
    first_page = 4
    kids = b" ".join(b"%d 0 R" % n for n in range(first_page, first_page + pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d /MediaBox [0 0 612 792] >>" % pages,
        stream(b""),
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /Contents 3 0 R >>"] * pages
    return write_pdf(path, objects)


def deeply_nested(path: Path, depth: int = 100_000) -> Path:
    """A catalog whose page tree sits `depth` arrays deep.

    A parser that recurses on nesting runs out of stack; one that caps the depth (poppler
    stops at a few hundred levels) never reaches the pages.
    """
    return write_pdf(
        path,
        [
            b"<< /Type /Catalog /Pages " + b"[" * depth + b"2 0 R" + b"]" * depth + b" >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            stream(b""),
        ],
    )


def _deflate_zeros(size: int, *, chunk: int = 1 << 22) -> bytes:
    packer = zlib.compressobj(9)
    zeros = bytes(chunk)
    parts = []
    left = size
    while left > 0:
        parts.append(packer.compress(zeros[: min(chunk, left)]))
        left -= chunk
    parts.append(packer.flush())
    return b"".join(parts)


def flate_bomb(path: Path, *, side: int = 50_000, rounds: int = 2) -> Path:
    """A letter page showing one `side` x `side` 8-bit gray image, deflated `rounds` times.

    At the default, 2.5 GB of pixels in a file of a few kilobytes.
    """
    data = _deflate_zeros(side * side)
    for _ in range(rounds - 1):
        data = zlib.compress(data, 9)
    filters = b"[" + b" ".join([b"/FlateDecode"] * rounds) + b"]"
    image = stream(
        data,
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Filter %s " % (side, side, filters),
    )
    return _one_page(
        path,
        b"/MediaBox [0 0 612 792] /Resources << /XObject << /Im0 5 0 R >> >> ",
        b"q 612 0 0 792 0 0 cm /Im0 Do Q",
        [image],
    )


def _jbig2_segment(number: int, kind: int, page: int, data: bytes) -> bytes:
    """A JBIG2 segment header (no referred-to segments) followed by its data."""
    return number.to_bytes(4, "big") + bytes([kind, 0, page]) + len(data).to_bytes(4, "big") + data


def jbig2_bomb(path: Path, *, width: int = 60_000, height: int = 60_000) -> Path:
    """A letter page showing a JBIG2 image that claims `width` x `height` pixels.

    The page information segment declares the whole bitmap; a generic region of a few
    bytes (MMR-coded) asks the decoder to fill it.
    """
    page_info = (
        width.to_bytes(4, "big")
        + height.to_bytes(4, "big")
        + (0).to_bytes(4, "big") * 2
        + bytes([0])
        + (0).to_bytes(2, "big")
    )
    region = (
        width.to_bytes(4, "big")
        + height.to_bytes(4, "big")
        + (0).to_bytes(4, "big") * 2
        + bytes([0])  # external combination operator OR
        + bytes([1])  # generic region flags: MMR
        + b"\x00" * 64
    )
    data = _jbig2_segment(0, 48, 1, page_info) + _jbig2_segment(1, 38, 1, region)
    image = stream(
        data,
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 1 /Filter /JBIG2Decode " % (width, height),
    )
    return _one_page(
        path,
        b"/MediaBox [0 0 612 792] /Resources << /XObject << /Im0 5 0 R >> >> ",
        b"q 612 0 0 792 0 0 cm /Im0 Do Q",
        [image],
    )


def memory_hog(path: Path, *, megapixels: float, dpi: int) -> Path:
    """One page of about `megapixels` at `dpi`, painted black: the renderer must hold it all."""
    side_px = math.ceil(math.sqrt(megapixels * 1e6))
    side = math.ceil(side_px * POINTS_PER_INCH / dpi)
    return _one_page(
        path,
        b"/MediaBox [0 0 %d %d] " % (side, side),
        b"0 g 0 0 %d %d re f" % (side, side),
    )
