"""The resolution the importer renders each page at, worked out the way it does
(`workers/reader.py`, `_render_dpi`): a page that is one full-page scan image renders at
the image's own ppi clamped to [200, 300]; any other page at 300 (IMPORTER_OCR_DPI).

The raw limit renders every page at this resolution, so it does the importer's work
and no less; it reads the PDF's facts before its clock starts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bench_lib.procs import run

MIN_DPI = 200
MAX_DPI = 300
POINTS_PER_INCH = 72.0
_MEDIABOX = re.compile(
    r"^Page\s+(\d+)\s+MediaBox:\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s*$",
    re.MULTILINE,
)


def page_dpis(path: Path, pages: int) -> dict[int, int]:
    """Page number -> render resolution, from `pdfinfo -box` and `pdfimages -list`."""
    info = run(["pdfinfo", "-f", "1", "-l", str(pages), "-box", str(path)]).stdout
    widths = {int(m[1]): abs(float(m[4]) - float(m[2])) for m in _MEDIABOX.finditer(info)}
    images: dict[int, list[tuple[int, int]]] = {}
    listing = run(["pdfimages", "-list", "-f", "1", "-l", str(pages), str(path)]).stdout
    for line in listing.splitlines()[2:]:
        fields = line.split()
        if len(fields) > 12 and fields[0].isdigit() and fields[3].isdigit():
            ppi = int(fields[12]) if fields[12].isdigit() else 0
            images.setdefault(int(fields[0]), []).append((int(fields[3]), ppi))
    return {n: _dpi(widths.get(n), images.get(n, [])) for n in range(1, pages + 1)}


def _dpi(width: float | None, images: Sequence[tuple[int, int]]) -> int:
    if width is None or len(images) != 1 or images[0][1] <= 0:
        return MAX_DPI
    pixels, ppi = images[0]
    covers = pixels / ppi * POINTS_PER_INCH >= 0.8 * width
    return max(MIN_DPI, min(MAX_DPI, ppi)) if covers else MAX_DPI
