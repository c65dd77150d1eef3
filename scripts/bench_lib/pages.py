"""Pages of known text, typeset and scanned the way `scripts/make_samples.py` makes samples:
paragraphs drawn from the samples' own words, so every page comes with the text it should
yield."""

from __future__ import annotations

import dataclasses
import logging
import random

import make_samples as ms

log = logging.getLogger(__name__)

SCAN_STYLES = (
    ms.Scan(dpi=200, bilevel=False, skew=0.3, specks=400),
    ms.Scan(dpi=300, bilevel=True, skew=-0.5, specks=300),
)


def paragraph_pages(count: int, seed: int) -> list[ms.Page]:
    """Pages of three paragraphs each, drawn from the samples' paragraphs."""
    pool = [p for doc in (ms.LETTER, ms.MEMO, ms.BORN_DIGITAL, ms.MIXED, ms.ROTATED) for p in doc]
    titles = [p.title for p in pool]
    paragraphs = [text for p in pool for text in p.paragraphs]
    rng = random.Random(seed)
    pages = []
    for number in range(count):
        title = f"{titles[number % len(titles)]} ({number + 1})"
        pages.append(ms.Page(title, tuple(rng.sample(paragraphs, 3)), kind="scan"))
    return pages


def fitting(page: ms.Page, face: ms.Typeface) -> list[tuple[str, str, float]]:
    """The page's lines, dropping its last paragraph while it overflows the sheet."""
    while True:
        lines = ms.layout(page, face)
        try:
            ms.typeset(lines, face)
            return lines
        except ValueError:
            page = dataclasses.replace(page, paragraphs=page.paragraphs[:-1])


def scanned_pages(count: int, rotations: tuple[int, ...] = (0,)) -> list[tuple[bytes, str]]:
    """One-page image-only PDFs and their texts, in the two scan styles in turn, the sheet
    turned by `rotations` in turn (degrees counter-clockwise)."""
    pages = []
    for number, page in enumerate(paragraph_pages(count, seed=1)):
        lines = fitting(page, ms.SERIF)
        style = dataclasses.replace(SCAN_STYLES[number % len(SCAN_STYLES)], seed=100 + number)
        blob = ms.scanned(lines, style, rotations[number % len(rotations)])
        pages.append((blob, ms.expected_text(lines)))
    log.info("scanned %d pages", count)
    return pages
