"""The mixed corpus: the importer against the limit (pdftotext of every document, plus the
raw limit's OCR of exactly the pages that need it) and against OCRmyPDF in its mode for
such files (`--skip-text --rotate-pages`). Accuracy is judged page by page against the
expected text; the importer's database says which pages it kept from the text layer."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_lib import contenders as c
from bench_lib import goals
from bench_lib.accuracy import PageKey, by_page, cer, expected_pages
from bench_lib.corpus import Doc
from bench_lib.mixed_corpus import corpus, describe, is_listing, is_text, needs_ocr
from bench_lib.ocr_sections import importer_name
from bench_lib.procs import clean_env, run
from bench_lib.results import Goal, SectionResult, row
from bench_lib.rounds import Series, Step, alternate

LIMIT = "limit (pdftotext + raw OCR of the pages without text)"
OCRMYPDF = "OCRmyPDF --skip-text --rotate-pages (1 file/process)"
OCRMYPDF_OPTIONS = ("--skip-text", "--rotate-pages")
SKIPPED = "[OCR skipped on page"  # OCRmyPDF's sidecar placeholder for a page it did not OCR
TEXT_LAYER = "text-layer"


def limit(docs: Sequence[Doc], work: Path, parallel: int) -> c.Outcome:
    """pdftotext of every document and `contenders.ocr_page` of the pages that need OCR, all
    in one pool (the OCR first: it takes longest); each page's text from the one that read it."""
    jobs = c.page_jobs(docs, needs_ocr)
    env = clean_env()

    def one(task: c.PageOcr | Doc) -> str:
        if isinstance(task, c.PageOcr):
            return c.ocr_page(task, work)
        return run(["pdftotext", "-enc", "UTF-8", str(task.path), "-"], env=env).stdout

    started = time.perf_counter()
    texts = c.pool(one, [*jobs, *docs], parallel)
    seconds = time.perf_counter() - started
    ocr = {(j.path, j.number): text for j, text in zip(jobs, texts[: len(jobs)], strict=True)}
    joined = {}
    for doc, text in zip(docs, texts[len(jobs) :], strict=True):
        pages = text.removesuffix("\f").split("\f")
        joined[doc.path] = "\f".join(
            ocr.get((doc.path, number), page) for number, page in enumerate(pages, 1)
        )
    return c.Outcome(seconds, joined)


def page_sources(data: Path) -> dict[PageKey, str]:
    """(resolved path, page number) -> where the importer took the page's text from."""
    with sqlite3.connect(data / "importer.db") as db:
        rows = db.execute(
            "SELECT d.path, p.number, p.source FROM pages p JOIN documents d"
            " ON d.id = p.document_id"
        ).fetchall()
    return {(Path(path), int(number)): str(source) for path, number, source in rows}


def _judged(
    run_once: Callable[[], c.Outcome],
    docs: list[Doc],
    facts: Callable[[c.Outcome, dict[PageKey, str]], dict[str, float]] | None = None,
) -> Step:
    """A step that scores the text page by page: over all pages, the text-layer pages, the
    pages that need OCR and the image-only scans alone."""
    sets = {
        "all": expected_pages(docs),
        "text": expected_pages(docs, is_text),
        "ocr": expected_pages(docs, needs_ocr),
        "scan": expected_pages(docs, lambda doc, number: doc.kinds[number - 1] == "scan"),
    }

    def step(series: Series) -> None:
        outcome = run_once()
        pages = by_page(outcome.texts, docs)
        series.seconds.append(outcome.seconds)
        series.quality.append(cer(pages, sets["all"]))
        for name, want in sets.items():
            series.add_fact(f"cer {name}", cer(pages, want))
        for name, value in (facts(outcome, pages) if facts else {}).items():
            series.add_fact(name, value)

    return step


def _pages(docs: list[Doc], pick: Callable[[Doc, int], bool]) -> list[PageKey]:
    return [(d.path, n) for d in docs for n in range(1, d.pages + 1) if pick(d, n)]


def _kept(
    docs: list[Doc], missed: set[str]
) -> Callable[[c.Outcome, dict[PageKey, str]], dict[str, float]]:
    """How many pages the importer took from where they should come from; the pages that
    need OCR and were not OCRed go into `missed`."""

    def facts(outcome: c.Outcome, pages: dict[PageKey, str]) -> dict[str, float]:
        data = outcome.facts["data"]
        assert isinstance(data, Path)
        sources = page_sources(data)

        def count(pick: Callable[[Doc, int], bool], source: str) -> float:
            keys = _pages(docs, pick)
            return sum(sources.get((path.resolve(), n)) == source for path, n in keys)

        for doc, n in ((d, n) for d in docs for n in range(1, d.pages + 1)):
            if needs_ocr(doc, n) and sources.get((doc.path.resolve(), n)) != "ocr":
                missed.add(f"{doc.path.name} page {n} ({doc.kinds[n - 1]})")
        return {
            "kept": count(is_text, TEXT_LAYER),
            "listings kept": count(is_listing, TEXT_LAYER),
            "ocred": count(needs_ocr, "ocr"),
        }

    return facts


def _empty_text_pages(
    docs: list[Doc],
) -> Callable[[c.Outcome, dict[PageKey, str]], dict[str, float]]:
    def facts(outcome: c.Outcome, pages: dict[PageKey, str]) -> dict[str, float]:
        texts = [pages.get(key, "").strip() for key in _pages(docs, is_text)]
        return {"empty text pages": sum(not t for t in texts)}

    return facts


def mixed(
    work_dir: Path, work: Path, rounds: int, cores: int, quick: bool, ocrmypdf: Path | None
) -> SectionResult:
    docs = corpus(work_dir, quick)
    folder = docs[0].path.parent
    ours = importer_name(cores)
    missed: set[str] = set()
    steps: dict[str, Step] = {
        LIMIT: _judged(lambda: limit(docs, work, cores), docs),
        ours: _judged(
            lambda: c.importer_run(folder, docs, work, cores, "--text-layer", "auto"),
            docs,
            _kept(docs, missed),
        ),
    }
    if ocrmypdf is not None:
        exe = ocrmypdf
        steps[OCRMYPDF] = _judged(
            lambda: c.ocrmypdf_batch(docs, work, cores, exe, OCRMYPDF_OPTIONS),
            docs,
            _empty_text_pages(docs),
        )
    series = alternate(steps, rounds, "mixed corpus")
    return _result(series, docs, ours, missed)


def _result(
    series: dict[str, Series], docs: list[Doc], ours_name: str, missed: set[str]
) -> SectionResult:
    pages = sum(d.pages for d in docs)
    text_pages, listings = len(_pages(docs, is_text)), len(_pages(docs, is_listing))
    ocr_pages = len(_pages(docs, needs_ocr))
    section = f"mixed corpus, {len(docs)} doc(s), {pages} pages ({ocr_pages} need OCR)"
    result = SectionResult(notes=[describe(docs)])
    for s in series.values():
        if s.name == OCRMYPDF:
            quality = f"CER {s.median_of('cer scan'):.2%} on image-only scans; text pages empty"
        else:
            quality = (
                f"CER {s.median_quality:.2%} (text pages {s.median_of('cer text'):.2%},"
                f" pages needing OCR {s.median_of('cer ocr'):.2%})"
            )
        result.rows.append(row(section, s, f"{pages / s.median:.1f} pages/s", quality))
    ours, lim = series[ours_name], series[LIMIT]
    cers = (ours.median_quality, lim.median_quality)
    result.goals.append(goals.timed(goals.MIXED_LIMIT, ours.median, lim.median, cers))
    if OCRMYPDF in series:
        theirs = series[OCRMYPDF]
        cers = (ours.median_of("cer scan"), theirs.median_of("cer scan"))
        result.goals.append(goals.timed(goals.MIXED_OCRMYPDF, ours.median, theirs.median, cers))
        empty = theirs.median_of("empty text pages")
        result.notes.append(
            f"OCRmyPDF's sidecar holds no text for {empty:.0f} of the {text_pages} text-layer"
            f" pages (only a `{SKIPPED}(s) A-B]` placeholder for each run of them): with"
            " `--skip-text` it writes text only for the pages it OCRs, so its accuracy on"
            " text-layer pages cannot be compared; it is compared with the importer's on the"
            " image-only scans alone."
        )
    kept, listed = ours.median_of("kept"), ours.median_of("listings kept")
    result.goals.append(
        Goal(
            goals.KEPT,
            f"{kept:.0f} of {text_pages} (contents, figure lists, index: {listed:.0f} of"
            f" {listings})",
            "all",
            kept == text_pages and listed == listings,
        )
    )
    blanks = len(_pages(docs, lambda doc, n: doc.kinds[n - 1] == "blank"))
    not_ocred = f" (not OCRed in some round: {', '.join(sorted(missed))})" if missed else ""
    result.notes.append(
        f"The importer OCRed {ours.median_of('ocred'):.0f} of the {ocr_pages} pages without"
        f" real text (scans, a scan with a stamped line, {blanks} blank page(s)){not_ocred};"
        " the limit OCRs exactly those and takes every other page from pdftotext, the scan"
        " under a garbage text layer included (kept under --text-layer auto, as the importer"
        " keeps it: its CER counts the same for both)."
    )
    return result
