"""Scanned pages (raw limit, OCRmyPDF, importer, 1 worker against all cores), born-digital
pages (importer against pdftotext) and the importer's fixed start-up cost."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_lib import contenders as c
from bench_lib import goals
from bench_lib.accuracy import cer, similarity
from bench_lib.corpus import Corpus, Doc
from bench_lib.results import SectionResult, ratio_goal, row
from bench_lib.rounds import Series, Step, alternate
from importer.opening import open_confined, sha256_of

log = logging.getLogger(__name__)

RAW = "raw limit (pdftoppm + tesseract --psm 1)"
OCRMYPDF = "OCRmyPDF (1 file/process)"
FIXED = "fixed cost"
PDFTOTEXT = "pdftotext (1 file/process)"


@dataclass(frozen=True)
class ScannedPlan:
    compare: bool  # raw limit, OCRmyPDF and the importer
    scaling: bool  # the importer with 1 worker and with all cores
    ocrmypdf: Path | None  # its executable; None leaves it out


def importer_name(workers: int) -> str:
    return f"importer run, {workers} worker{'s' if workers > 1 else ''}"


def step(
    run: Callable[[], c.Outcome], judge: Callable[[c.Outcome], float], facts: bool = False
) -> Step:
    def step(series: Series) -> None:
        outcome = run()
        series.seconds.append(outcome.seconds)
        series.quality.append(judge(outcome))
        if facts:
            for key, value in outcome.facts.items():
                if isinstance(value, int | float):
                    series.add_fact(key, float(value))

    return step


def scanned(
    corpus: Corpus, work: Path, rounds: int, cores: int, plan: ScannedPlan
) -> SectionResult:
    docs = corpus.scanned
    folder = docs[0].path.parent
    expected = {d.path: d.expected for d in docs}
    judge: Callable[[c.Outcome], float] = lambda o: cer(o.texts, expected)  # noqa: E731
    steps: dict[str, Step] = {}
    if plan.compare:
        steps[RAW] = step(lambda: c.raw_limit(docs, work, cores), judge)
        if plan.ocrmypdf is not None:
            exe = plan.ocrmypdf
            steps[OCRMYPDF] = step(lambda: c.ocrmypdf_batch(docs, work, cores, exe), judge)
    steps[importer_name(cores)] = step(lambda: c.importer_run(folder, docs, work, cores), judge)
    if plan.scaling and cores > 1:
        steps[importer_name(1)] = step(lambda: c.importer_run(folder, docs, work, 1), judge)
    series = alternate(steps, rounds, "scanned")
    result = _scanned_result(series, corpus, cores, plan)
    result.medians.update({name: s.median for name, s in series.items()})
    return result


def _scanned_result(
    series: dict[str, Series], corpus: Corpus, cores: int, plan: ScannedPlan
) -> SectionResult:
    result = SectionResult()
    pages = corpus.scanned_pages
    section = f"scanned, {len(corpus.scanned)} docs, {pages} pages"
    for s in series.values():
        result.rows.append(
            row(section, s, f"{pages / s.median:.2f} pages/s", f"CER {s.median_quality:.2%}")
        )
    ours = series[importer_name(cores)]
    if plan.compare:
        raw = series[RAW]
        cers = (ours.median_quality, raw.median_quality)
        result.goals.append(goals.timed(goals.SCANS, ours.median, raw.median, cers))
        if OCRMYPDF in series:
            theirs = series[OCRMYPDF]
            cers = (ours.median_quality, theirs.median_quality)
            result.goals.append(goals.timed(goals.SCANS_OCRMYPDF, ours.median, theirs.median, cers))
    if plan.scaling and cores > 1:
        one = series[importer_name(1)]
        target, _ = goals.TARGETS[goals.SCALING]
        figure = f"{cores} {goals.SCALING}"
        result.goals.append(ratio_goal(figure, one.median / ours.median, target, at_most=False))
    return result


def text_layer(corpus: Corpus, work: Path, rounds: int, cores: int) -> SectionResult:
    """The importer against pdftotext on text-layer PDFs, both scored against the text typeset."""
    docs = corpus.born
    folder = docs[0].path.parent
    expected = {d.path: d.expected for d in docs}
    judge: Callable[[c.Outcome], float] = lambda o: cer(o.texts, expected)  # noqa: E731
    steps: dict[str, Step] = {
        PDFTOTEXT: step(lambda: c.pdftotext_batch(docs, cores), judge),
        importer_name(cores): step(lambda: c.importer_run(folder, docs, work, cores), judge),
    }
    series = alternate(steps, rounds, "text layer")
    pages = corpus.born_pages
    section = f"born-digital, {len(docs)} docs, {pages} pages"
    result = SectionResult()
    for s in series.values():
        rate = f"{pages / s.median:,.0f} pages/s"
        result.rows.append(row(section, s, rate, f"CER {s.median_quality:.2%} vs expected"))
    tool, ours = series[PDFTOTEXT], series[importer_name(cores)]
    cers = (ours.median_quality, tool.median_quality)
    result.goals.append(goals.timed(goals.BORN, ours.median, tool.median, cers))
    check = hash_check(docs, rounds)
    rate = f"{sum(d.path.stat().st_size for d in docs) / check.median / 2**20:,.0f} MB/s"
    result.rows.append(row(section, check, rate, "-"))
    share = check.median / ours.median
    result.goals.append(ratio_goal(goals.HASH_CHECK, share * 100, 3, at_most=True, extra=" %"))
    return result


def hash_check(docs: Sequence[Doc], rounds: int) -> Series:
    """The worker's check that a file is still the one submitted (open confined, sha256
    of the descriptor), over every document, one after another: an upper bound on what
    it adds to the run's wall time, whose workers hash in parallel."""
    series = Series("worker's sha256 check, serial")
    for _ in range(rounds):
        started = time.perf_counter()
        for d in docs:
            fd = open_confined(str(d.path), (), None)
            try:
                sha256_of(fd)
            finally:
                os.close(fd)
        series.seconds.append(time.perf_counter() - started)
    return series


def startup(corpus: Corpus, work: Path, rounds: int, cores: int) -> SectionResult:
    """`importer run` on one one-page born-digital PDF: the floor every run pays."""
    single = min(corpus.born, key=lambda d: d.pages)
    folder = work / "startup-doc"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / single.path.name
    target.write_bytes(single.path.read_bytes())
    doc = Doc(target, single.pages, single.expected)
    steps: dict[str, Step] = {
        importer_name(cores): step(
            lambda: c.importer_run(folder, [doc], work, cores),
            lambda o: similarity(o.texts, {doc.path: doc.expected}),
        )
    }
    series = alternate(steps, rounds, "start-up")
    ours = series[importer_name(cores)]
    quality = f"{ours.median_quality:.3f} vs expected"
    return SectionResult(
        rows=[row("fixed cost: 1 one-page PDF", ours, "-", quality)], medians={FIXED: ours.median}
    )


def fixed_cost_note(medians: dict[str, float], cores: int) -> str | None:
    """How far the importer is from the raw limit once its once-per-run cost is set aside."""
    ours, raw, fixed = medians.get(importer_name(cores)), medians.get(RAW), medians.get(FIXED)
    if ours is None or raw is None or fixed is None:
        return None
    return (
        f"The importer's fixed cost per run (start-up and shutdown, measured on one one-page"
        f" PDF) is {fixed:.2f} s; without it, its scanned-page time is {ours - fixed:.2f} s,"
        f" {(ours - fixed) / raw:.2f} times the raw limit's."
    )
