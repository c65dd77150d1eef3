"""PDFs the archive tests make: a page typeset with known words, scanned, and laid on
pages of every shape a searchable copy must fit (turned by /Rotate, boxes away from the
origin, content upside down), and a document mixing typeset and scanned pages."""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from pypdf import PdfReader, PdfWriter, Transformation
from pypdf.generic import RectangleObject
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

LETTER = (612.0, 792.0)
SCAN_DPI = 200
TEXT = [
    "Quarterly report of the Harbour Library Trust",
    "The reading room opened on Saturdays from March onwards,",
    "and the number of visitors rose by a third against last year.",
    "Repairs to the roof were finished before the winter storms.",
    "The trustees thank every volunteer who catalogued donations.",
]
WORD = "Harbour"  # a word of TEXT whose place the tests check
SHAPES = ("upright", "rotate-90", "box-offset", "turned-180")

_WORD = re.compile(
    r'<word xMin="([\d.-]+)" yMin="([\d.-]+)" xMax="([\d.-]+)" yMax="([\d.-]+)">([^<]*)</word>'
)
Box = tuple[float, float, float, float]  # xMin, yMin, xMax, yMax from the top left, points


@dataclass(frozen=True)
class Scan:
    pdf: bytes  # one page, an image and nothing else
    word_box: Box  # where WORD lies on the page as shown


def typeset(lines: list[str] = TEXT) -> bytes:
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=LETTER)
    pdf.setFont("Helvetica", 15)
    for n, line in enumerate(lines):
        pdf.drawString(72, 700 - 24 * n, line)
    pdf.save()
    return out.getvalue()


def word_boxes(pdf: bytes | Path, word: str, page: int = 1) -> list[Box]:
    """Every box pdftotext -bbox gives `word` on `page`, in points from the top left of
    the page as shown."""
    source = str(pdf) if isinstance(pdf, Path) else "-"
    data = None if isinstance(pdf, Path) else pdf
    argv = ["pdftotext", "-bbox", "-f", str(page), "-l", str(page), source, "-"]
    html = subprocess.run(argv, input=data, capture_output=True, check=True).stdout.decode()
    return [
        (float(m[1]), float(m[2]), float(m[3]), float(m[4]))
        for m in _WORD.finditer(html)
        if m[5] == word
    ]


def scan_image(pdf: bytes) -> Image.Image:
    argv = ["pdftoppm", "-r", str(SCAN_DPI), "-gray", "-singlefile", "-png", "-"]
    png = subprocess.run(argv, input=pdf, capture_output=True, check=True).stdout
    return Image.open(io.BytesIO(png)).convert("L")


def scanned(shape: str) -> Scan:
    """The typeset page, scanned, on a page of the given shape (one of SHAPES); the word's
    box is where pdftotext finds it on the typeset page given the same shape."""
    page = typeset()
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=LETTER)
    pdf.drawImage(ImageReader(scan_image(page)), 0, 0, *LETTER)
    pdf.showPage()
    pdf.save()
    (box,) = word_boxes(shaped(page, shape), WORD)
    return Scan(shaped(out.getvalue(), shape), box)


def shaped(pdf: bytes, shape: str) -> bytes:
    """A letter-size page given a shape: turned by /Rotate 90 (its MediaBox landscape, its
    content drawn sideways so that it shows upright), moved onto a MediaBox and a CropBox
    away from the origin, or with its content upside down."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    page = writer.pages[0]
    w, h = LETTER
    if shape == "rotate-90":
        page.add_transformation(Transformation().rotate(90).translate(h, 0))
        page.mediabox = RectangleObject([0, 0, h, w])
        page.rotation = 90
    elif shape == "box-offset":
        page.add_transformation(Transformation().translate(150, 250))
        page.mediabox = RectangleObject([100, 200, w + 200, h + 300])
        page.cropbox = RectangleObject([150, 250, 150 + w, 250 + h])
    elif shape == "turned-180":
        page.add_transformation(Transformation().rotate(180).translate(w, h))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def joined(*pdfs: bytes) -> bytes:
    writer = PdfWriter()
    for pdf in pdfs:
        writer.append(PdfReader(io.BytesIO(pdf)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
