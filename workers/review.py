"""Which pages need a person to look at them: the rule, and the blank test it rests on.

A page is marked for review when Tesseract read it with a mean word confidence below
IMPORTER_REVIEW_CONFIDENCE, or found no word on an image that has ink on it. A blank
page (white paper, a few specks of dust) has nothing to read and is not marked; a page
read from the PDF's own text layer never is.

The blank test runs in the document child, on the page image it rendered for Tesseract
(`is_blank`); its answer travels in the Page message (`workers.messages`), and the worker
applies the rule with its configured threshold (`needs_review`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from importer.states import PageSource
from workers.document import PageResult

log = logging.getLogger(__name__)

# The page is judged at about this resolution: averaging 4 x 4 pixels of a 300 dpi scan
# turns a speck of dust or the paper's grain into a light gray, while a text stroke stays
# dark, and the test costs a few milliseconds.
INK_DPI = 75
# Ink is what is this much darker than the paper (the image's median: most of any page is
# paper), so a faint, low-contrast scan still has ink.
INK_CONTRAST = 24
# Paper darker than this is no white paper: a page that dark is never called blank.
DARKEST_PAPER = 128
# Blank: less ink than this share of the page. Two words of 14 pt text are twice as much,
# a few dozen specks of dust a third of it.
BLANK_INK_SHARE = 0.001


def ink_share(image: Image.Image, dpi: int) -> float:
    """The share of the page, judged at INK_DPI, that is ink; 1.0 for a page of dark paper."""
    gray = image if image.mode == "L" else image.convert("L")  # pdftoppm's PGM is gray
    factor = max(1, round(dpi / INK_DPI))
    small = gray.reduce(factor) if factor > 1 else gray
    histogram = small.histogram()
    total = sum(histogram)
    if not total:
        return 0.0
    paper = _median(histogram, total)
    if paper < DARKEST_PAPER:
        return 1.0
    return sum(histogram[: paper - INK_CONTRAST]) / total


def is_blank(path: Path, dpi: int) -> bool:
    """Whether the page image holds no ink; an image that cannot be judged (unreadable,
    or too large for the memory left after Tesseract read it) is not blank."""
    try:
        with Image.open(path) as image:
            return ink_share(image, dpi) < BLANK_INK_SHARE
    except (OSError, MemoryError, Image.DecompressionBombError) as e:
        log.warning("%s: cannot tell whether the page is blank (%s)", path.name, e)
        return False


def needs_review(page: PageResult, threshold: float) -> bool:
    """Whether a person should look at the page: read poorly, or not read at all though
    there is ink on it. `threshold` is IMPORTER_REVIEW_CONFIDENCE (0-100)."""
    if page.source != PageSource.ocr or page.blank:
        return False
    return page.confidence is None or page.confidence < threshold


def _median(histogram: list[int], total: int) -> int:
    seen = 0
    for value, count in enumerate(histogram):
        seen += count
        if seen * 2 >= total:
            return value
    return len(histogram) - 1
