"""Documents like users have, each with the text a perfect reader would get from every page.

Contents, indexes, tables and formulas (text layers of mostly dots, digits or symbols),
scans with one stamped born-digital line, scans under an earlier OCR's invisible text,
blank pages, long manuals and mixed documents: built deterministically on make_samples'
typesetting, rendering and roughening. `manual(pages=12).write(Path("m.pdf"))` writes
m.pdf and m.txt (each page's expected text, pages split by a form feed). A born-digital
page's expected text is what was drawn, a drawn row a line, in reading order (two
columns: left, then right). Formula symbols use DejaVu Sans, else the Symbol font.
"""

from __future__ import annotations

import dataclasses
import io
import random
import string
from dataclasses import dataclass
from pathlib import Path

import make_samples as ms
from pypdf import PdfReader, PdfWriter
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

PAGE = (ms.PAGE_W, ms.PAGE_H)
LEFT, RIGHT = ms.MARGIN, ms.PAGE_W - ms.MARGIN
TOP, BOTTOM = ms.PAGE_H - ms.MARGIN, ms.MARGIN
BODY, BOLD, SIZE, LEADING = ms.SANS.body, ms.SANS.bold, ms.SANS.size, ms.SANS.leading
SCAN_STYLES = (ms.Scan(dpi=200, skew=0.3, specks=300), ms.Scan(dpi=300, bilevel=True, skew=-0.4))
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu")


def _math_font() -> str:
    for folder in FONT_DIRS:
        if Path(folder, "DejaVuSans.ttf").is_file():
            pdfmetrics.registerFont(TTFont("DejaVuSans", f"{folder}/DejaVuSans.ttf"))
            return "DejaVuSans"
    return "Symbol"  # Latin letters stay in Helvetica; see _draw


MATH = _math_font()


@dataclass(frozen=True)
class Built:
    pdf: bytes
    pages: tuple[str, ...]  # each page's expected text (what a perfect reader yields)
    kinds: tuple[str, ...]  # "text", "scan", "stamped-scan", "garbage-layer-scan", "blank"
    rotations: tuple[int, ...]  # degrees each scanned sheet is turned (0 for others)

    def write(self, path: Path) -> None:
        path.write_bytes(self.pdf)
        path.with_suffix(".txt").write_text("\f".join(self.pages) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Run:
    """One string drawn on a page; `right` puts its right end at x."""

    x: float
    text: str
    font: str = BODY
    size: float = SIZE
    right: bool = False


Row = tuple[float, tuple[Run, ...]]  # a baseline and what is drawn on it


class Sheet:
    """Rows laid out top down; the order rows are added is the page's reading order."""

    def __init__(self, top: float = TOP) -> None:
        self.rows: list[Row] = []
        self.y = top

    def add(self, *runs: Run, leading: float = LEADING) -> None:
        self.rows.append((self.y, runs))
        self.y -= leading

    def room(self, lines: int = 1) -> bool:
        return self.y - (lines - 1) * LEADING >= BOTTOM


def _text(rows: list[Row]) -> str:
    return "\n".join(" ".join(run.text for run in runs) for _, runs in rows)


def _draw(pdf: canvas.Canvas, y: float, run: Run, mode: int) -> None:
    if run.font != "Symbol":
        pdf.setFont(run.font, run.size)
        draw = pdf.drawRightString if run.right else pdf.drawString
        draw(run.x, y, run.text, mode=mode)
        return
    x = run.x  # no DejaVu: characters beyond Latin-1 in Symbol, the others in Helvetica
    for char in run.text:
        font = BODY if ord(char) < 256 else "Symbol"
        pdf.setFont(font, run.size)
        pdf.drawString(x, y, char, mode=mode)
        x += pdfmetrics.stringWidth(char, font, run.size)


def _typeset(rows: list[Row], size: tuple[float, float] = PAGE, mode: int = 0) -> bytes:
    """A one-page PDF of the rows (none: a blank page); mode 3 draws invisible text."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=size, invariant=1, pageCompression=1)
    for y, runs in rows:
        for run in runs:
            _draw(pdf, y, run, mode)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _born(sheets: list[Sheet]) -> Built:
    pages = tuple(_text(sheet.rows) for sheet in sheets)
    blob = ms.assemble([_typeset(sheet.rows) for sheet in sheets])
    return Built(blob, pages, ("text",) * len(pages), (0,) * len(pages))


def concat(*parts: Built) -> Built:
    writer = PdfWriter()
    for page in [page for part in parts for page in PdfReader(io.BytesIO(part.pdf)).pages]:
        writer.add_page(page)
    writer.add_metadata({"/Producer": "importer make_documents"})
    buffer = io.BytesIO()
    writer.write(buffer)
    pages, kinds = sum((p.pages for p in parts), ()), sum((p.kinds for p in parts), ())
    return Built(buffer.getvalue(), pages, kinds, sum((p.rotations for p in parts), ()))


# Born-digital pages ---------------------------------------------------------------------


def _leader(sheet: Sheet, indent: float, label: str, page: int, font: str, dots: str) -> None:
    """`label . . . . . 12`: the number right-aligned, dots filling the gap between."""
    width = pdfmetrics.stringWidth
    start = LEFT + indent + width(label, font, SIZE) + 3
    room = RIGHT - width(str(page), font, SIZE) - 3 - start
    count = max(3, int(room // width(dots, font, SIZE)))
    leader = (dots * count).strip()
    start += (room - width(leader, font, SIZE)) / 2  # gaps too narrow for pdftotext's columns
    number = Run(RIGHT, str(page), font, right=True)
    sheet.add(Run(LEFT + indent, label, font), Run(start, leader, font), number)


def _listing(title: str, entries: list[tuple[int, str, int]], dots: str) -> list[Sheet]:
    """Contents or a list of figures: (level, label, page) entries, as many pages as needed."""
    sheets: list[Sheet] = []
    for level, label, page in entries:
        if not sheets or not sheets[-1].room():
            sheets.append(Sheet())
            sheets[-1].add(Run(LEFT, title, BOLD, 15), leading=30)
        elif level == 0:
            sheets[-1].y -= 6
        _leader(sheets[-1], 18 * level, label, page, BOLD if level == 0 else BODY, dots)
    return sheets


def _outline(rng: random.Random, count: int) -> list[tuple[int, str]]:
    """Numbered headings: chapters `3 Title`, sections `3.2 Title`, subsections `3.2.1 Title`."""
    numbers = [0, 0, 0]
    out: list[tuple[int, str]] = []
    for i in range(count):
        level = 0 if i == 0 or rng.random() < 0.15 else rng.choice((1, 1, 2)) if numbers[1] else 1
        numbers[level] += 1
        numbers[level + 1 :] = [0] * (2 - level)
        label = ".".join(str(n) for n in numbers[: level + 1])
        out.append((level, f"{label} {rng.choice(TOPICS)}"))
    return out


def contents_page(seed: int = 0) -> Built:
    rng = random.Random(seed)
    page, entries = rng.randint(1, 9), []
    for level, label in _outline(rng, 40):
        page += rng.randint(1 if level == 0 else 0, 4)
        entries.append((level, label, page))
    return _born(_listing("Contents", entries, rng.choice((". ", ".")))[:1])


def _index(rng: random.Random, pages: int, count: int) -> list[Sheet]:
    """A two-column back-of-book index on `count` pages: letter headings, indented sub-entries."""

    def refs() -> str:  # page numbers and ranges, ascending: "12, 47–49"
        out, last = [], 0
        for n in sorted(rng.sample(range(1, pages + 1), min(pages, rng.randint(1, 4)))):
            end = n + rng.randint(1, 3) * (rng.random() < 0.2)
            if n > last:
                out.append(f"{n}–{end}" if end > n else str(n))
                last = end
        return ", ".join(out)

    lines: list[Run] = []
    letter = ""
    for term in sorted(TERMS, key=str.lower):
        if term[0].upper() != letter:
            letter = term[0].upper()
            lines.append(Run(0, letter, BOLD, 10))
        lines.append(Run(0, f"{term}, {refs()}", BODY, 10))
        for sub in sorted(rng.sample(SUBENTRIES, rng.choice((0, 0, 1, 2, 3)))):
            lines.append(Run(12, f"{sub}, {refs()}", BODY, 10))
    sheets, column = [], (RIGHT - LEFT - 24) / 2
    for number in range(count):
        head = Sheet()
        head.add(Run(LEFT, "Index" if number == 0 else "Index (continued)", BOLD, 15), leading=30)
        for left in (LEFT, LEFT + column + 24):
            col = Sheet(head.y)
            while lines and col.room():
                line = lines.pop(0)
                col.add(Run(left + line.x, line.text, line.font, line.size), leading=13)
            head.rows += col.rows
        sheets.append(head)
    return sheets


def index_page(seed: int = 0) -> Built:
    return _born(_index(random.Random(seed), 320, 1))


def _table(sheet: Sheet, rng: random.Random, number: int, rows: int) -> None:
    """A caption, then a grid of right-aligned figures set close, as pdftotext reads rows."""
    sheet.add(Run(LEFT, f"Table {number}. {rng.choice(CAPTIONS)}", BOLD, 10), leading=16)
    grid = [["Year", "Jan–Mar", "Apr–Jun", "Jul–Sep", "Oct–Dec", "Change", "Share"]]
    for year in range(first := rng.randint(1990, 2015), first + rows):
        cells = [f"{rng.uniform(1000, 9999):,.2f}" for _ in range(4)]
        grid.append(
            [str(year), *cells, f"{rng.uniform(-0.3, 0.3):+.2f}", f"{rng.uniform(1, 60):.1f}%"]
        )
    x, right = LEFT, []
    for column in zip(*grid, strict=True):
        x += max(pdfmetrics.stringWidth(cell, BODY, 10) for cell in column)
        right.append(x)
        x += 4.5
    for row in grid:
        sheet.add(*(Run(r, cell, BODY, 10, right=True) for r, cell in zip(right, row, strict=True)))
    sheet.y -= 10


def table_page(seed: int = 0) -> Built:
    rng, sheet = random.Random(seed), Sheet()
    sheet.add(Run(LEFT, "Quarterly Figures", BOLD, 15), leading=24)
    sheet.add(Run(LEFT, "All amounts in thousands; changes against the same quarter last year."))
    sheet.y -= 8
    for number in range(1, 4):
        _table(sheet, rng, seed % 7 + number, 9)
    return _born([sheet])


def _formulas(sheet: Sheet, rng: random.Random, chapter: int, count: int) -> None:
    for number, formula in enumerate(rng.sample(FORMULAS, count), 1):
        label = Run(RIGHT, f"({chapter}.{number})", right=True)
        sheet.add(Run(LEFT + 36, formula, MATH, 12), label, leading=22)
        if rng.random() < 0.3:
            sheet.add(Run(LEFT + 36, rng.choice(WHERE), MATH, 11), leading=22)


def formula_page(seed: int = 0) -> Built:
    rng, sheet = random.Random(seed), Sheet()
    sheet.add(Run(LEFT, f"Appendix {'ABCDEF'[seed % 6]}. Formulas", BOLD, 15), leading=28)
    _formulas(sheet, rng, seed % 9 + 1, 18)
    return _born([sheet])


def blank_page() -> Built:
    return Built(ms.assemble([_typeset([])]), ("",), ("blank",), (0,))


# Scanned pages --------------------------------------------------------------------------


def _scan(seed: int, rotate: int) -> tuple[bytes, str]:
    """One image-only page of a sample's words; the style and the noise follow the seed."""
    lines = ms.layout(SCAN_TEXTS[seed % len(SCAN_TEXTS)], ms.SERIF)
    style = dataclasses.replace(SCAN_STYLES[seed % len(SCAN_STYLES)], seed=seed)
    return ms.scanned(lines, style, rotate), ms.expected_text(lines)


def _overlay(base: bytes, rows: list[Row], mode: int = 0) -> bytes:
    """The one-page PDF `base` with rows of text drawn over it; rows count down from its top."""
    writer = PdfWriter(clone_from=io.BytesIO(base))
    page = writer.pages[0]
    width, height = float(page.mediabox.width), float(page.mediabox.height)
    moved = [(height - (ms.PAGE_H - y), runs) for y, runs in rows]
    page.merge_page(PdfReader(io.BytesIO(_typeset(moved, (width, height), mode))).pages[0])
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def scan_document(pages: int = 3, rotations: tuple[int, ...] = (0,), seed: int = 0) -> Built:
    scans = [_scan(seed + i, rotations[i % len(rotations)]) for i in range(pages)]
    turns = tuple(rotations[i % len(rotations)] for i in range(pages))
    texts = tuple(text for _, text in scans)
    return Built(ms.assemble([blob for blob, _ in scans]), texts, ("scan",) * pages, turns)


def stamped_scan(seed: int = 0, rotate: int = 0) -> Built:
    blob, text = _scan(seed, rotate)
    stamp = STAMPS[seed % len(STAMPS)]
    blob = _overlay(blob, [(ms.PAGE_H - 40, (Run(LEFT, stamp, BOLD, 12),))])
    return Built(ms.assemble([blob]), (f"{stamp}\n{text}",), ("stamped-scan",), (rotate,))


def garbage_layer_scan(seed: int = 0) -> Built:
    """A scan under invisible text like a bad earlier OCR's: a random word for every word."""
    blob, text = _scan(seed, 0)
    rng, chars = random.Random(seed), string.ascii_letters + string.digits
    rows: list[Row] = []
    for number, line in enumerate(text.splitlines()):
        words = ("".join(rng.choices(chars, k=len(word))) for word in line.split())
        rows.append((TOP - 15 * number, (Run(LEFT, " ".join(words), "Times-Roman", 12),)))
    blob = _overlay(blob, rows, mode=3)
    return Built(ms.assemble([blob]), (text,), ("garbage-layer-scan",), (0,))


# Whole documents ------------------------------------------------------------------------


def _body(rng: random.Random, number: int, chapter: int, blocks: list[Run | str]) -> Sheet:
    """A manual's page: running head, headings, figures, tables, formulas, then paragraphs."""
    sheet = Sheet(TOP + 30)
    head = Run(RIGHT, f"Chapter {chapter}", BODY, 9, right=True)
    sheet.add(Run(LEFT, "ScanStation 4000 User Manual", BODY, 9), head, leading=30)
    for block in blocks:
        if isinstance(block, Run):
            sheet.add(block, leading=block.size * 1.8)
        elif block == "table":
            _table(sheet, rng, number, 5)
        elif block == "formula":
            _formulas(sheet, rng, chapter, 2)
        else:  # a figure: room for a drawing (no text), then its caption
            sheet.y -= 110
            sheet.add(Run(LEFT, block, BODY, 10), leading=22)
    while sheet.room(2):
        for line in ms.wrap(rng.choice(PARAGRAPHS), BODY, SIZE, RIGHT - LEFT):
            if sheet.room():
                sheet.add(Run(LEFT, line))
        sheet.y -= 6
    sheet.y = BOTTOM - 30
    sheet.add(Run(RIGHT, str(number), BODY, 9, right=True))
    return sheet


def manual(pages: int = 36, seed: int = 0) -> Built:
    """Title page, contents, list of figures, chapters of body pages, a two-column index."""
    if pages < 6:
        raise ValueError("a manual has at least 6 pages")
    body = pages - 4
    while True:  # title, contents, figures, body, index (1+ pages): fewer body pages to fit
        rng = random.Random(seed)
        outline = _outline(rng, 2 * body)
        contents = len(_listing("Contents", [(lv, label, 0) for lv, label in outline], ". "))
        figures = len(_listing("List of Figures", [(1, "", 0)] * ((body + 2) // 4), "."))
        if 2 + contents + figures + body <= pages:
            break
        body -= 1
    first = 2 + contents + figures  # the first body page's number
    plan: list[list[Run | str]] = [[] for _ in range(body)]
    chapters, entries, captions = [0] * body, [], []
    for k, (level, label) in enumerate(outline):
        i = k * body // len(outline)
        entries.append((level, label, first + i))
        plan[i].append(Run(LEFT, label, BOLD, (15.0, 12.0, 11.0)[level]))
        chapters[i:] = [int(label.split(".")[0].split()[0])] * (body - i)
    for i, blocks in enumerate(plan):
        if i % 4 == 1:
            figure = f"Figure {chapters[i]}.{i // 4 + 1} {rng.choice(CAPTIONS)}"
            captions.append((1, figure, first + i))
            blocks.append(figure)
        blocks += ["table"] * (i % 5 == 2) + ["formula"] * (i % 6 == 4)
    title = Sheet(TOP - 160)
    title.add(Run(LEFT, "ScanStation 4000", BOLD, 28), leading=40)
    title.add(Run(LEFT, "User Manual, Edition 3", BODY, 16), leading=300)
    title.add(Run(LEFT, f"Document SS4-UM-{seed:04d}, printed 2024", BODY, 10))
    sheets = [title, *_listing("Contents", entries, ". ")]
    sheets += _listing("List of Figures", captions, ".")
    sheets += [_body(rng, first + i, chapters[i], blocks) for i, blocks in enumerate(plan)]
    return _born(sheets + _index(rng, pages, pages - len(sheets)))


def mixed_document(seed: int = 0) -> Built:
    """Born-digital pages, a scan turned 180 degrees, a blank page, a scan turned 90 degrees."""
    parts = (manual(6, seed), scan_document(1, (180,), seed), table_page(seed), blank_page())
    return concat(*parts, scan_document(1, (90,), seed + 1), formula_page(seed))


# The words ------------------------------------------------------------------------------

SCAN_TEXTS = [*ms.LETTER, *ms.MEMO, *ms.MIXED[1:2], *ms.ROTATED]
PARAGRAPHS = [text for page in (*ms.BORN_DIGITAL, *ms.MIXED) for text in page.paragraphs]
STAMPS = (
    "RECEIVED 2026-11-03 / Accounts Payable / Ref. 40-7719-2 / HM",
    "SCANNED 2025-02-17 09:42 / Registry, Building C / Batch 0381 / Box 12",
    "COPY - Filed 2024-08-30 by Records Office / File 7734-B / Retain 10 years",
)


def _words(text: str) -> list[str]:
    return text.replace("\n", "").split("|")


TOPICS = _words("""Getting started|Installing the software|Configuring the scanner|Paper trays
|Network settings|User accounts|Access control|Backups and restores|Scheduling jobs|Error codes
|Replacing the rollers|Cleaning the glass|Firmware updates|Power management|Troubleshooting
|Safety notices|Technical data|Colour calibration|Barcode recognition|Output formats""")
TERMS = _words("""asn1|base64|batch size|barcode|cache|checksum|CCITT G4|daemon|dpi|duplex
|encryption|feeder|firmware|Gearman|glass|gray level|hash|HMAC|image|JPEG|JBIG2|kernel|key id
|latency|lease|logs|MediaBox|memory|network|OCR|orientation|paper jam|port 4730|queue|quota
|resolution|rollers|scanner|skew|TLS|timeout|tray|Unicode|user|worker|XML|zone""")
SUBENTRIES = _words("defaults|errors|limits|on Linux|settings|see also queue|tuning")
CAPTIONS = _words("""Front panel and status lights|Loading the paper tray|Scan times by dpi
|Error codes and their causes|Power use in each mode|Supported paper sizes|Returns by line""")
FORMULAS = _words("""E = m × c²|S = Σ x(i) for 1 ≤ i ≤ n|∫ f(x) dx = F(b) − F(a)|α + β ≤ π
|σ² = Σ (x − μ)² / (n − 1)|P(A ∪ B) = P(A) + P(B) − P(A ∩ B)|Δt ≈ 0.35 × (1 + α)|y ≤ ε for n ≥ N
|f(x) = a + b·x + c·x²|θ = arctan(y / x) ± 2π|∇ · E = ρ / ε|λ = c / ν = 299,792,458 / ν
|∑ p(k) = 1, 0 ≤ p(k) ≤ 1|β = 0.95 ⇒ 1 − β = 0.05|∞ > Σ 1 / k² = π² / 6|√(a² + b²) ≥ max(a, b)
|dy/dx = −k × y, y(0) = 1|x ∈ [0, 1] ⊂ [−1, 1]|μ = (1/n) Σ x(i)|R = 1 / (1/R1 + 1/R2)""")
WHERE = _words("where α is the rate and β the loss|for every ε > 0|with σ ≥ 0 and n ≥ 2")
