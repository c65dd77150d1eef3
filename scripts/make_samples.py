"""Generate sample_pdfs/: small PDFs with the text each page is expected to yield.

The engine's tests measure OCR accuracy against these files, so every PDF comes with
`X.txt` holding the expected text of each page, pages separated by a form feed. The
outputs are committed; rerun this script only when the samples must change. It is
deterministic (fixed seeds, reportlab's invariant mode, metadata-free merging), so a
rerun without changes leaves the files byte-identical.

Scanned-like pages are produced the way a scanner would: the page is typeset, rendered
to a gray bitmap by pdftoppm, roughened (a slight skew, a little blur, specks of dirt)
and embedded back as an image-only page, with no text layer.

Usage: .venv/bin/python scripts/make_samples.py [OUT_DIR]   (default: sample_pdfs/)
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFilter
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import letter
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas

log = logging.getLogger("make_samples")

PAGE_W, PAGE_H = letter
MARGIN = 72.0
TOOL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Page:
    """One page of a sample: its words, and how it reaches the PDF."""

    title: str
    paragraphs: tuple[str, ...]
    kind: str = "text"  # "text": born-digital; "scan": image-only
    rotate: int = 0  # degrees counter-clockwise the sheet lay turned on the scanner glass


@dataclass(frozen=True)
class Scan:
    """How a scanned-like page is imaged and stored."""

    dpi: int = 200
    bilevel: bool = False  # True: 1-bit CCITT G4 (office scanner); False: gray JPEG
    skew: float = 0.3  # degrees
    specks: int = 400
    seed: int = 0


@dataclass(frozen=True)
class Typeface:
    body: str
    bold: str
    size: float
    title_size: float
    leading: float


SERIF = Typeface("Times-Roman", "Times-Bold", 12.0, 15.0, 15.0)
SANS = Typeface("Helvetica", "Helvetica-Bold", 11.0, 14.0, 14.5)


def wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Break a paragraph into lines by measured width, at spaces only (no hyphenation)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and stringWidth(candidate, font, size) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def layout(page: Page, face: Typeface) -> list[tuple[str, str, float]]:
    """Lines of the page as (text, font, size); an empty text is a paragraph break."""
    width = PAGE_W - 2 * MARGIN
    lines = [(page.title, face.bold, face.title_size), ("", face.body, face.size)]
    for number, paragraph in enumerate(page.paragraphs):
        if number:
            lines.append(("", face.body, face.size))
        for line in wrap(paragraph, face.body, face.size, width):
            lines.append((line, face.body, face.size))
    return lines


def expected_text(lines: list[tuple[str, str, float]]) -> str:
    return "\n".join(text for text, _, _ in lines)


def typeset(lines: list[tuple[str, str, float]], face: Typeface) -> bytes:
    """A one-page born-digital PDF; invariant mode keeps dates and IDs out of it."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=letter, invariant=1, pageCompression=1)
    y = PAGE_H - MARGIN
    for text, font, size in lines:
        if y < MARGIN:
            raise ValueError(f"page overflows: {text[:40]!r}")
        if text:
            pdf.setFont(font, size)
            pdf.drawString(MARGIN, y, text)
        y -= face.leading if size <= face.size else size * 1.4
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def render(pdf_bytes: bytes, dpi: int) -> Image.Image:
    """Rasterize a one-page PDF to gray with pdftoppm, as a scanner's sensor would see it."""
    with tempfile.TemporaryDirectory(prefix="make-samples-") as tmp:
        source = Path(tmp, "page.pdf")
        source.write_bytes(pdf_bytes)
        argv = ["pdftoppm", "-r", str(dpi), "-gray", "-singlefile", str(source), f"{tmp}/page"]
        subprocess.run(argv, check=True, timeout=TOOL_TIMEOUT, capture_output=True)
        with Image.open(Path(tmp, "page.pgm")) as image:
            return image.copy()


def roughen(image: Image.Image, scan: Scan, rotate: int) -> Image.Image:
    """Skew, blur, specks and paper tone: enough to look scanned, not enough to be unfair."""
    rng = random.Random(scan.seed)
    image = image.rotate(scan.skew, resample=Image.Resampling.BICUBIC, fillcolor=255)
    image = image.filter(ImageFilter.GaussianBlur(0.4))
    if not scan.bilevel:
        image = image.point(lambda value: 236 + value * 19 // 255 if value > 200 else value)
    pixels = image.load()
    assert pixels is not None
    width, height = image.size
    for _ in range(scan.specks):
        x, y = rng.randrange(2, width - 2), rng.randrange(2, height - 2)
        shade = rng.randrange(60, 200)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1))[: rng.choice((1, 1, 1, 2, 4))]:
            pixels[x + dx, y + dy] = shade
    if scan.bilevel:
        image = image.point(lambda value: 255 if value > 128 else 0).convert("1")
    if rotate:
        image = image.rotate(rotate, expand=True)
    return image


def scanned(lines: list[tuple[str, str, float]], scan: Scan, rotate: int) -> bytes:
    """A one-page image-only PDF of the typeset lines."""
    image = roughen(render(typeset(lines, SERIF), scan.dpi), scan, rotate)
    buffer = io.BytesIO()
    options = {} if scan.bilevel else {"quality": 60}
    image.save(buffer, "PDF", resolution=float(scan.dpi), **options)
    return buffer.getvalue()


def assemble(pages: list[bytes]) -> bytes:
    """Merge one-page PDFs; pypdf copies only the pages, so no dates creep in."""
    writer = PdfWriter()
    for page in pages:
        writer.add_page(PdfReader(io.BytesIO(page)).pages[0])
    writer.add_metadata({"/Producer": "importer make_samples"})
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def build(name: str, pages: list[Page], out: Path, scan: Scan | None = None) -> None:
    """Write NAME.pdf and NAME.txt; each scanned page gets its own noise seed."""
    blobs: list[bytes] = []
    texts: list[str] = []
    for number, page in enumerate(pages):
        face = SERIF if page.kind == "scan" else SANS
        lines = layout(page, face)
        texts.append(expected_text(lines))
        if page.kind == "scan":
            base = scan or Scan()
            page_scan = dataclasses.replace(base, seed=base.seed + number)
            blobs.append(scanned(lines, page_scan, page.rotate))
        else:
            blobs.append(typeset(lines, face))
    (out / f"{name}.pdf").write_bytes(assemble(blobs))
    (out / f"{name}.txt").write_text("\f".join(texts) + "\n", encoding="utf-8")
    log.info("wrote %s.pdf (%d pages)", name, len(pages))


def build_broken(out: Path) -> None:
    """A truncated download: a PDF header, the start of a body, then noise; no xref, no pages."""
    rng = random.Random(404)
    head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    head += b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n3 0 obj\n<< /Type /Pa"
    noise = bytes(rng.randrange(256) for _ in range(3000))
    (out / "broken.pdf").write_bytes(head + noise)
    (out / "broken.txt").unlink(missing_ok=True)
    log.info("wrote broken.pdf")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "sample_pdfs"
    out.mkdir(parents=True, exist_ok=True)
    build("scanned_letter", LETTER, out, Scan(dpi=200, bilevel=False, skew=0.3, seed=11))
    build("scanned_memo", MEMO, out, Scan(dpi=300, bilevel=True, skew=-0.5, seed=23))
    build("born_digital", BORN_DIGITAL, out)
    build("mixed", MIXED, out, Scan(dpi=300, bilevel=True, skew=0.2, seed=37))
    build("rotated", ROTATED, out, Scan(dpi=300, bilevel=True, skew=0.2, seed=51))
    build_broken(out)
    (out / "README.md").write_text(README, encoding="utf-8")
    return 0


README = """\
# Sample PDFs

Generated by `scripts/make_samples.py` (deterministic; rerun it to rebuild). Each
`X.pdf` has `X.txt` beside it: the text each page should yield, pages separated by a
form feed. The engine's tests measure OCR accuracy against them.

| file | pages | what it is |
|---|---|---|
| `scanned_letter.pdf` | 2 | image-only, 200 dpi gray JPEG, slight skew and specks |
| `scanned_memo.pdf` | 1 | image-only, 300 dpi 1-bit CCITT G4, skewed the other way |
| `born_digital.pdf` | 3 | text layer only (Helvetica 11 pt): must never be OCRed |
| `mixed.pdf` | 3 | pages 1 and 3 have a text layer, page 2 is a scanned form |
| `rotated.pdf` | 2 | image-only; page 2 was scanned lying 90 degrees counter-clockwise |
| `broken.pdf` | - | a truncated download: header, start of a body, noise; no text |
"""


# The words ------------------------------------------------------------------------------

LETTER = [
    Page(
        "Harbor Valley Water Authority",
        (
            "March 14, 2023. Account 40-7719-2. Dear Ms. Okafor, thank you for your letter of "
            "February 27 about the bill for the quarter ending January 31. You asked why the "
            "charge of $412.86 is nearly three times the amount you paid for the same quarter "
            "last year, when the household used about 18,000 gallons.",
            "Our field technician, Mr. Ramirez, read the meter again on March 6 and found it "
            "working within the accepted range of plus or minus 1.5 percent. He did, however, "
            "notice a steady flow through the meter while every tap in the house was closed. "
            "A flow of that kind usually points to a leaking toilet valve or a broken pipe "
            "under the garden, where water can escape for weeks without being noticed.",
            "Under section 9(b) of the customer rules, the Authority may reduce a bill once in "
            "any five years when a hidden leak has been repaired within 30 days of our notice. "
            "To apply, please send us a copy of the plumber's invoice together with the form "
            "enclosed with this letter.",
        ),
        kind="scan",
    ),
    Page(
        "Leak Adjustment: What Happens Next",
        (
            "Once we receive the invoice, a billing officer will compare your usage over the "
            "last eight quarters and credit half of the water used above your normal average. "
            "Based on the figures we hold today, the credit would be close to $131.50, and it "
            "would appear on your next statement in May.",
            "If you would rather pay the current balance in installments, we can spread it over "
            "three months without interest. Call our customer desk at 555-0148 between 8:30 "
            "and 4:30 on weekdays, or write to the office at 12 Quarry Road, Suite 3.",
            "We are sorry for the worry this bill has caused. Please keep this letter with "
            "your records until the adjustment has been made. Yours sincerely, Helen Marsh, "
            "Customer Accounts Supervisor.",
        ),
        kind="scan",
    ),
]

MEMO = [
    Page(
        "Memorandum: Year-End Inventory Count",
        (
            "To all warehouse staff, from Daniel Brooks, Operations Manager, dated December 2, "
            "2022. The annual physical count of stock will take place on Saturday, December 17, "
            "starting at 7:00 in the morning. Receiving and shipping will stop at noon on "
            "Friday so that nothing moves while the teams are counting.",
            "Each team of two will be given a printed sheet for one aisle, with the bin numbers "
            "already filled in. One person counts, the other writes the figure down and checks "
            "the label. Where a bin holds more than 250 units, weigh the contents on the scale "
            "at bay 4 instead of counting by hand.",
            "Last year the count differed from the system by 3.8 percent, mostly in small "
            "fittings and cable ties. Our goal this year is a difference below 1 percent. "
            "Lunch will be provided, and overtime is paid at the usual rate. Questions go to "
            "Priya Nair on extension 2231.",
        ),
        kind="scan",
    ),
]

BORN_DIGITAL = [
    Page(
        "Eastfield Public Library: Annual Report 2022",
        (
            "The library welcomed 148,392 visitors in 2022, an increase of 21 percent on the "
            "year before and close to the level last seen in 2019. The main branch on Mill "
            "Street was open 2,904 hours, and the two small branches in Northgate and Bell "
            "Hill together were open another 3,120 hours.",
            "Loans of printed books rose to 96,740, while loans of electronic books and audio "
            "books reached 41,215, more than double the figure of three years ago. The most "
            "borrowed title for adults was a history of the canal that once ran through the "
            "town; for children, a picture book about a fox who learns to swim.",
            "The board thanks the 63 volunteers who gave more than 4,800 hours of their time, "
            "shelving returns, reading with children after school and helping older visitors "
            "set up their phones and tablets.",
        ),
    ),
    Page(
        "Programs and Services",
        (
            "We ran 412 events during the year, from weekly story times to a six-week course "
            "on family history research. Attendance at events came to 9,655 people. The "
            "homework club, held on Tuesday and Thursday afternoons, served 117 pupils, most "
            "of them aged between 10 and 14.",
            "In September the library started lending tools and kitchen equipment. The first "
            "collection of 80 items, including drills, ladders, a pressure washer and two "
            "bread machines, was donated by local businesses. By December the tools had been "
            "borrowed 530 times, and the waiting list for the carpet cleaner was 19 names long.",
            "Public computers were booked for 12,480 sessions. Free printing was limited to 20 "
            "pages a day after paper costs rose by almost a third in the spring.",
        ),
    ),
    Page(
        "Finances and Plans for 2023",
        (
            "Total spending was $1,286,400, of which 61 percent went to staff, 18 percent to "
            "books and other materials, 12 percent to the buildings and 9 percent to "
            "technology. The town council provided 84 percent of the income; the rest came "
            "from grants, fines, room rentals and the Friends of the Library book sale.",
            "In 2023 the roof of the Bell Hill branch will be replaced at a cost of about "
            "$210,000, and the branch will close for six weeks in July and August. We also "
            "plan to extend opening hours on Sunday afternoons at the main branch, subject to "
            "the budget vote in April.",
            "Comments on this report are welcome at the front desk or by e-mail to the "
            "director, Margaret Lindqvist.",
        ),
    ),
]

MIXED = [
    Page(
        "Minutes of the Riverside Allotment Society",
        (
            "Meeting held on Wednesday, 5 April 2023, at the community hall. Present: eleven "
            "members and the secretary. Apologies were received from Tom Achebe and Lucy Fern. "
            "The minutes of the February meeting were read and approved without changes.",
            "The treasurer reported a balance of 2,317 pounds after paying the water bill of "
            "486 pounds and the insurance of 212 pounds. Plot rents for the coming season are "
            "due by 30 April. Two plots, numbers 14 and 27, are still vacant and will be "
            "offered to the first names on the waiting list.",
            "A member asked whether the society could buy a second wheelbarrow. After a short "
            "discussion it was agreed to spend up to 90 pounds, and the secretary will look "
            "for a sturdy one with a solid tyre.",
        ),
    ),
    Page(
        "Attached: Plot Inspection Form",
        (
            "Plot 9, inspected on 29 March 2023 by the site committee. The plot is mostly "
            "cultivated, but the north end is covered in brambles and couch grass, and an old "
            "glass frame has broken panes that could injure children walking on the path.",
            "The tenant is asked to clear the north end and remove the broken frame within 28 "
            "days. If the work is not done by 26 April, the committee may offer the plot to "
            "another member, as allowed by rule 6 of the tenancy agreement.",
            "Signed for the committee: R. Osei, site warden. Copy given to the tenant by hand "
            "on 30 March.",
        ),
        kind="scan",
    ),
    Page(
        "Any Other Business",
        (
            "The spring plant sale will be held on Saturday, 13 May, from 10:00 until 1:00. "
            "Members are asked to pot up spare seedlings and bring cakes for the tea table. "
            "Last year the sale raised 640 pounds for the new shed.",
            "The water troughs will be turned on from 15 April. Please do not fill watering "
            "cans directly from the hose, which wastes water and damages the fittings.",
            "The next meeting will take place on 7 June at 7:30 in the evening. The meeting "
            "closed at 9:05.",
        ),
    ),
]

ROTATED = [
    Page(
        "Field Notes: Spring Bird Survey",
        (
            "Survey route B, walked on 22 April 2023 between 5:40 and 8:15 in the morning. "
            "Weather dry and mild, about 9 degrees, with a light wind from the west and thin "
            "cloud that cleared after seven.",
            "We recorded 46 species along the 3.2 kilometre route, four more than in 2022. The "
            "first swallows of the year were feeding low over the reed bed, and a pair of "
            "grey herons was building a nest in the tall poplars near the old mill.",
            "Numbers of skylarks over the long meadow were lower than last spring, perhaps "
            "because the grass was cut early. We counted 7 singing males compared with 12 a "
            "year ago.",
        ),
        kind="scan",
    ),
    Page(
        "Field Notes: Remarks and Follow-up",
        (
            "This sheet was fed into the scanner sideways, as often happens with notes "
            "written on a clipboard. The software should still read it, after turning the "
            "image the right way up.",
            "A barn owl was seen hunting along the hedge at dawn, the first sighting on this "
            "route since 2019. The nest box on the east side of the barn should be checked in "
            "June, with permission from the farmer, Mr. Halvorsen.",
            "Next survey: 20 May, same route, meeting at the car park at 5:30. Bring the spare "
            "binoculars for the two new volunteers.",
        ),
        kind="scan",
        rotate=90,
    ),
]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
