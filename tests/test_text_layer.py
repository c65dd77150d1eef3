"""Per page, the reader keeps the PDF's own text layer or OCRs the page.

The rules: a page whose text layer holds real text keeps it, however many dots, digits or
symbols it has (contents, indexes, tables, formulas). A page is OCRed when it has no
text, when its text cannot be real, or when an image covers most of it and the text
layer holds only a little (a scan with a stamped line). `text_layer="auto"` (the
default) keeps a full text layer even if an earlier OCR made it; `"ocr"` OCRs every page;
`"keep"` never OCRs a page that has any text.

The documents come from `scripts/make_documents.py`, built once for the module; each
document is read once per mode, and OCR runs only on the pages a test needs OCRed.
"Kept" text must be the PDF's own: exactly what pdftotext gives for that page.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
from rapidfuzz import fuzz

from importer.states import PageSource
from tests.conftest import ROOT, cer
from workers.document import PageResult
from workers.reader import iter_pages

sys.path.insert(0, str(ROOT / "scripts"))
md: Any = importlib.import_module("make_documents")

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("tesseract", "pdftoppm", "pdftotext")),
    reason="needs tesseract and poppler-utils (scripts/install-deps)",
)

TEXT_LAYER, OCR = PageSource.text_layer, PageSource.ocr
# One document, one page of each kind: page numbers by name.
NAMES = ("contents", "index", "table", "formula", "stamped", "garbage", "blank")
PAGES = {name: number for number, name in enumerate(NAMES, 1)}
BORN_DIGITAL = ("contents", "index", "table", "formula")
MANUAL_PAGES = 14

Reader = Callable[..., dict[int, PageResult]]


def pdftotext(path: Path, page: int) -> str:
    """The page's own text, as poppler's pdftotext gives it by default."""
    argv = ["pdftotext", "-enc", "UTF-8", "-f", str(page), "-l", str(page), str(path), "-"]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout
    return out.decode("utf-8").replace("\f", "").strip()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """`kinds`: a page of each kind, in PAGES order; `manual`: a long born-digital manual."""
    out = tmp_path_factory.mktemp("documents")
    made = {
        "kinds": md.concat(
            md.contents_page(seed=1),
            md.index_page(seed=2),
            md.table_page(seed=3),
            md.formula_page(seed=4),
            md.stamped_scan(seed=0),
            md.garbage_layer_scan(seed=2),
            md.blank_page(),
        ),
        "manual": md.manual(pages=MANUAL_PAGES, seed=5),
    }
    paths = {}
    for name, built in made.items():
        built.write(out / f"{name}.pdf")
        paths[name] = (out / f"{name}.pdf", built)
    return paths


@pytest.fixture(scope="module")
def read(docs: dict[str, tuple[Path, Any]]) -> Reader:
    """read(doc, mode, pages): the PageResults of those pages (all: None), read once."""
    cache: dict[tuple[str, str, tuple[int, ...] | None], dict[int, PageResult]] = {}

    def read(
        doc: str, mode: str = "auto", pages: Collection[int] | None = None
    ) -> dict[int, PageResult]:
        key = (doc, mode, None if pages is None else tuple(sorted(pages)))
        if key not in cache:
            path, built = docs[doc]
            every = range(1, len(built.pages) + 1)
            skip = [] if pages is None else [n for n in every if n not in pages]
            # "auto" is the default: the reader is called as most callers call it.
            options = {} if mode == "auto" else {"text_layer": mode}
            items = iter_pages(path, skip_pages=skip, **options)
            cache[key] = {item.number: item for item in items if isinstance(item, PageResult)}
        return cache[key]

    return read


def test_generated_pages_read_back_as_drawn(docs: dict[str, tuple[Path, Any]]) -> None:
    """The generator's expected text is what pdftotext finds on its born-digital pages."""
    path, built = docs["kinds"]
    assert len(built.pages) == len(NAMES)
    for name in BORN_DIGITAL:
        number = PAGES[name]
        assert built.kinds[number - 1] == "text"
        assert fuzz.ratio(flat(built.pages[number - 1]), flat(pdftotext(path, number))) >= 95
    path, built = docs["manual"]
    assert built.kinds == ("text",) * MANUAL_PAGES
    for number, expected in enumerate(built.pages, 1):
        assert fuzz.ratio(flat(expected), flat(pdftotext(path, number))) >= 95, number
    path, built = docs["kinds"]
    assert built.kinds[4:] == ("stamped-scan", "garbage-layer-scan", "blank")
    stamped = PAGES["stamped"]
    assert pdftotext(path, stamped) == built.pages[stamped - 1].splitlines()[0]
    assert pdftotext(path, PAGES["blank"]) == built.pages[PAGES["blank"] - 1] == ""


@pytest.mark.parametrize("mode", ["auto", "keep"])
@pytest.mark.parametrize("name", BORN_DIGITAL)
def test_real_text_keeps_its_text_layer(
    read: Reader, docs: dict[str, tuple[Path, Any]], name: str, mode: str
) -> None:
    """Dot leaders, page numbers, figures and symbols are real text: never OCRed."""
    number = PAGES[name]
    page = read("kinds", mode)[number]
    assert page.source == TEXT_LAYER, f"{name} page was OCRed under {mode!r}"
    assert page.text == pdftotext(docs["kinds"][0], number)


def test_a_stamped_scan_is_ocred_by_default(
    read: Reader, docs: dict[str, tuple[Path, Any]]
) -> None:
    """One born-digital line over a full-page scan: the scan's words come from OCR."""
    built = docs["kinds"][1]
    page = read("kinds", "auto")[PAGES["stamped"]]
    assert page.source == OCR
    assert cer(built.pages[PAGES["stamped"] - 1], page.text) < 0.1, page.text


def test_keep_leaves_a_stamped_scan_its_stamp(
    read: Reader, docs: dict[str, tuple[Path, Any]]
) -> None:
    built = docs["kinds"][1]
    stamp = built.pages[PAGES["stamped"] - 1].splitlines()[0]
    page = read("kinds", "keep")[PAGES["stamped"]]
    assert page.source == TEXT_LAYER
    assert flat(page.text) == stamp


@pytest.mark.parametrize("mode", ["auto", "keep"])
def test_a_full_layer_from_an_earlier_ocr_is_kept(
    read: Reader, docs: dict[str, tuple[Path, Any]], mode: str
) -> None:
    """Invisible text as long as the page: `auto` cannot tell it from good OCR, and keeps it."""
    path = docs["kinds"][0]
    page = read("kinds", mode)[PAGES["garbage"]]
    assert page.source == TEXT_LAYER
    assert page.text == pdftotext(path, PAGES["garbage"])


def test_ocr_mode_reads_the_scan_under_a_garbage_layer(
    read: Reader, docs: dict[str, tuple[Path, Any]]
) -> None:
    path, built = docs["kinds"]
    number = PAGES["garbage"]
    page = read("kinds", "ocr", [number])[number]
    assert page.source == OCR
    assert cer(built.pages[number - 1], page.text) < 0.1, page.text
    assert cer(pdftotext(path, number), page.text) > 0.5


@pytest.mark.parametrize("mode", ["auto", "keep", "ocr"])
def test_a_blank_page_yields_no_text(read: Reader, mode: str) -> None:
    pages = read("kinds", mode, [PAGES["blank"]])
    assert list(pages) == [PAGES["blank"]]
    assert pages[PAGES["blank"]].text.strip() == ""


def test_ocr_mode_ocrs_a_born_digital_page(read: Reader, docs: dict[str, tuple[Path, Any]]) -> None:
    """The manual's title page (few words: quick to OCR) has a perfect text layer."""
    built = docs["manual"][1]
    page = read("manual", "ocr", [1])[1]
    assert page.source == OCR
    assert cer(built.pages[0], page.text) < 0.1, page.text


def test_every_page_of_a_long_manual_keeps_its_text_layer(
    read: Reader, docs: dict[str, tuple[Path, Any]]
) -> None:
    """Title, contents, list of figures, body pages with tables and formulas, index."""
    path, built = docs["manual"]
    pages = read("manual", "auto")
    assert list(pages) == list(range(1, MANUAL_PAGES + 1))
    ocred = [n for n, page in pages.items() if page.source != TEXT_LAYER]
    assert not ocred, f"pages OCRed: {ocred}"
    for number, page in pages.items():
        assert page.text == pdftotext(path, number), number
