"""Which pages keep the PDF's own text, and which are OCRed: judged by what the page is.

A page's text layer is judged by whether it can be real text, never by how much it
looks like prose: a contents page of dot leaders and page numbers, an index, a table of
figures or a page of formulas is exactly what its PDF says, and OCR can only make it
worse. A page is OCRed (under `auto`) when:

- it has no text at all;
- its text cannot be real: a large share of replacement characters or private-use
  code points, which is what pdftotext gives for fonts without a Unicode mapping;
- an image covers most of it and its text layer holds only a little: a scan with a
  stamped header, a Bates number, or a few words of an earlier partial OCR.

Only the last rule needs to look at the page's images, so only pages whose text is
sparse are probed; a page of ordinary text costs nothing beyond the one pdftotext run.

`ocr` OCRs every page; `keep` OCRs only pages with no text at all.
"""

from __future__ import annotations

import unicodedata
from enum import StrEnum

from importer.states import TextLayerMode

# Fewer visible characters than this, and the page may be a scan carrying a stamp or a
# few words of earlier OCR: its images decide. A typeset page holds 1,500 to 4,000.
SPARSE_CHARS = 200
# More than this share of visible characters unmappable, and the text is not real.
MAX_UNREAL_SHARE = 0.25
# An image over this share of the page's area makes a sparse page a scan.
SCAN_COVERAGE = 0.5


class TextKind(StrEnum):
    empty = "empty"  # nothing visible
    unreal = "unreal"  # mostly glyphs without a Unicode mapping
    sparse = "sparse"  # real, but only a little: a stamp, a page number, a caption
    full = "full"  # real text: prose, contents, index, tables, formulas


def classify(text: str) -> TextKind:
    """What a page's text layer (as pdftotext gives it) is, from its characters alone."""
    visible = 0
    unreal = 0
    for char in text:
        if char.isspace():
            continue
        visible += 1
        if _unmapped(char):
            unreal += 1
    if visible == 0:
        return TextKind.empty
    if unreal > MAX_UNREAL_SHARE * visible:
        return TextKind.unreal
    return TextKind.sparse if visible < SPARSE_CHARS else TextKind.full


def _unmapped(char: str) -> bool:
    """A replacement character, a private-use code point, or a control character."""
    if char == "\ufffd":
        return True
    category = unicodedata.category(char)
    return category in ("Co", "Cc", "Cs")


def needs_ocr(kind: TextKind, mode: TextLayerMode, image_coverage: float | None = None) -> bool:
    """Whether a page of this kind is OCRed under `mode`.

    `image_coverage` (the largest share of the page one image covers) matters only for a
    sparse page under `auto`; `needs_probe` says when it must be measured.
    """
    if mode is TextLayerMode.ocr:
        return True
    if kind is TextKind.empty:
        return True
    if mode is TextLayerMode.keep:
        return False
    if kind is TextKind.unreal:
        return True
    if kind is TextKind.sparse:
        return image_coverage is not None and image_coverage >= SCAN_COVERAGE
    return False


def needs_probe(kind: TextKind, mode: TextLayerMode) -> bool:
    """Whether the page's images must be looked at before deciding."""
    return mode is TextLayerMode.auto and kind is TextKind.sparse
