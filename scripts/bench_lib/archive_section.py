"""Searchable PDFs (`--archive`): `importer run` on the mixed corpus with and without
`--archive`, and OCRmyPDF making the same PDFs (`--skip-text --rotate-pages --output-type
pdf`, one file a process), in alternating rounds; then one worker's peak memory on the long
scan with `--archive` against without.

The PDFs are judged as a reader of them would: the text pdftotext finds in each, page by
page, against what the pages say. The importer's database text is judged too, so that the
run with `--archive` is compared with the run without at the same accuracy.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_lib import contenders as c
from bench_lib import goals, memory
from bench_lib.accuracy import by_page, cer, expected_pages
from bench_lib.corpus import Corpus, Doc
from bench_lib.mixed_corpus import corpus, describe
from bench_lib.ocr_sections import importer_name
from bench_lib.procs import BenchError, clean_env, run
from bench_lib.results import SectionResult, ratio_goal, row
from bench_lib.rounds import Series, Step, alternate
from bench_lib.treemem import ProcessMemory

OCRMYPDF = "OCRmyPDF --skip-text --rotate-pages --output-type pdf (1 file/process)"
OCRMYPDF_OPTIONS = ("--skip-text", "--rotate-pages", "--output-type", "pdf")


def pdf_texts(pdfs: dict[Path, Path]) -> dict[Path, str]:
    """Each document's PDF read back by pdftotext, pages joined by a form feed."""
    env = clean_env()
    texts = {}
    for doc, pdf in pdfs.items():
        if not pdf.is_file():
            raise BenchError(f"no searchable PDF {pdf} was made for {doc}")
        out = run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], env=env).stdout
        texts[doc] = out.removesuffix("\f")
    return texts


def importer_archive(folder: Path, docs: Sequence[Doc], work: Path, cores: int) -> c.Outcome:
    """`importer run --archive`; the texts are those of the PDFs, the database's in facts."""
    out = c.fresh_dir(work / "archive-importer")
    done = c.importer_run(folder, docs, work, cores, "--text-layer", "auto", "--archive", str(out))
    made = {d.path: out / d.path.relative_to(folder) for d in docs}
    return c.Outcome(done.seconds, pdf_texts(made), {**done.facts, "db": done.texts})


def ocrmypdf_pdfs(docs: Sequence[Doc], work: Path, parallel: int, ocrmypdf: Path) -> c.Outcome:
    """OCRmyPDF writing each document's searchable PDF, `parallel` files at a time."""
    env = clean_env(c.ONE_THREAD)
    out = c.fresh_dir(work / "archive-ocrmypdf")

    def one(doc: Doc) -> None:
        argv = [str(ocrmypdf), "-q", "-j", "1", *OCRMYPDF_OPTIONS]
        run([*argv, str(doc.path), str(out / doc.path.name)], env=env)

    started = time.perf_counter()
    c.pool(one, docs, parallel)
    seconds = time.perf_counter() - started
    return c.Outcome(seconds, pdf_texts({d.path: out / d.path.name for d in docs}))


def _judged(run_once: Callable[[], c.Outcome], docs: list[Doc]) -> Step:
    want = expected_pages(docs)
    scans = expected_pages(docs, lambda doc, number: doc.kinds[number - 1] == "scan")

    def step(series: Series) -> None:
        outcome = run_once()
        series.seconds.append(outcome.seconds)
        pages = by_page(outcome.texts, docs)
        series.quality.append(cer(pages, want))
        series.add_fact("cer scan", cer(pages, scans))
        stored = outcome.facts.get("db", outcome.texts)
        assert isinstance(stored, dict)
        series.add_fact("cer db", cer(by_page(stored, docs), want))

    return step


def _memory_steps(
    doc: Doc, work: Path, breakdowns: dict[int, list[ProcessMemory]]
) -> dict[str, Step]:
    archive = work / "memory-archive"

    def with_archive(series: Series) -> None:
        shutil.rmtree(archive, ignore_errors=True)
        memory.worker_step(doc, work, breakdowns, ("--archive", str(archive)))(series)

    return {
        f"importer worker, {doc.pages}-page scan": memory.worker_step(doc, work, breakdowns),
        f"importer worker --archive, {doc.pages}-page scan": with_archive,
    }


def archive_section(
    work_dir: Path,
    work: Path,
    whole: Corpus,
    rounds: int,
    cores: int,
    quick: bool,
    ocrmypdf: Path | None,
) -> SectionResult:
    docs = corpus(work_dir, quick)
    folder = docs[0].path.parent
    plain, archived = importer_name(cores), f"{importer_name(cores)} --archive"
    steps: dict[str, Step] = {
        plain: _judged(
            lambda: c.importer_run(folder, docs, work, cores, "--text-layer", "auto"), docs
        ),
        archived: _judged(lambda: importer_archive(folder, docs, work, cores), docs),
    }
    if ocrmypdf is not None:
        exe = ocrmypdf
        steps[OCRMYPDF] = _judged(lambda: ocrmypdf_pdfs(docs, work, cores, exe), docs)
    series = alternate(steps, rounds, "archive")
    pages = sum(d.pages for d in docs)
    section = f"searchable PDFs, mixed corpus, {len(docs)} doc(s), {pages} pages"
    result = SectionResult(notes=[describe(docs)])
    for s in series.values():
        what = "database" if s.name == plain else "PDFs' pdftotext"
        scans = s.median_of("cer scan")
        quality = f"CER {s.median_quality:.2%} ({what}; image-only scans {scans:.2%})"
        if s.name == archived:
            quality += f"; database CER {s.median_of('cer db'):.2%}"
        result.rows.append(row(section, s, f"{pages / s.median:.1f} pages/s", quality))
    ours, without = series[archived], series[plain]
    cers = (ours.median_of("cer db"), without.median_of("cer db"))
    result.goals.append(goals.timed(goals.ARCHIVE_COST, ours.median, without.median, cers))
    if OCRMYPDF in series:
        theirs = series[OCRMYPDF]
        cers = (ours.median_quality, theirs.median_quality)
        result.goals.append(goals.timed(goals.ARCHIVE_OCRMYPDF, ours.median, theirs.median, cers))
    result.extend(_memory(whole, work, rounds))
    return result


def _memory(whole: Corpus, work: Path, rounds: int) -> SectionResult:
    _, large = whole.memory
    breakdowns: dict[int, list[ProcessMemory]] = {}
    steps = _memory_steps(large, work, breakdowns)
    series = alternate(steps, rounds, "archive memory")
    result = SectionResult()
    for s in series.values():
        peak = s.median_of("peak_mb")
        rate = f"{large.pages / s.median:.2f} pages/s; peak RSS {peak:.0f} MB"
        result.rows.append(row("memory with --archive", s, rate, f"CER {s.median_quality:.2%}"))
    without, with_archive = (s.median_of("peak_mb") for s in series.values())
    result.goals.append(
        ratio_goal(
            goals.ARCHIVE_MEMORY.format(pages=large.pages),
            with_archive / without,
            goals.TARGETS[goals.ARCHIVE_MEMORY][0],
            at_most=True,
            extra=f" ({with_archive:.0f} MB vs {without:.0f} MB)",
        )
    )
    return result
