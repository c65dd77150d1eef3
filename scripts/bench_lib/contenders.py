"""The ways of reading the same PDFs that the importer is measured against, and the importer.

Each returns the wall time and every document's text (pages joined by a form feed), so
the caller can check that no contender bought its speed with accuracy.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench_lib.corpus import Doc
from bench_lib.dpi import page_dpis
from bench_lib.procs import BenchError, clean_env, run
from importer.gearman.address import free_port
from importer.gearman.server import GearmandProcess

PSM = "1"  # automatic segmentation with orientation detection, as the importer reads
EMAIL = "bench@example.com"
ONE_THREAD = {"OMP_THREAD_LIMIT": "1"}
SKIPPED = re.compile(r"\[OCR skipped on page\(s\) (\d+)(?:-(\d+))?\]")
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome:
    seconds: float
    texts: dict[Path, str]
    facts: dict[str, object] = field(default_factory=dict)


def pool(func: Callable[[T], R], items: Sequence[T], parallel: int) -> list[R]:
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(func, items))


@dataclass(frozen=True)
class PageOcr:
    """One page for the raw limit to read, at the resolution the importer would render it."""

    path: Path
    number: int
    dpi: int

    def argvs(self, base: str) -> tuple[list[str], list[str]]:
        page, dpi = str(self.number), str(self.dpi)
        pdftoppm = ["pdftoppm", "-r", dpi, "-gray", "-f", page, "-l", page, "-singlefile"]
        tesseract = ["tesseract", f"{base}.pgm", "stdout", "--dpi", dpi, "--psm", PSM]
        return [*pdftoppm, str(self.path), base], tesseract


def page_jobs(
    docs: Sequence[Doc], wanted: Callable[[Doc, int], bool] | None = None
) -> list[PageOcr]:
    """The pages `wanted` picks (all by default), each at the importer's render dpi."""
    jobs = []
    for doc in docs:
        dpis = page_dpis(doc.path, doc.pages)
        jobs += [
            PageOcr(doc.path, n, dpis[n])
            for n in range(1, doc.pages + 1)
            if wanted is None or wanted(doc, n)
        ]
    return jobs


def ocr_page(job: PageOcr, work: Path) -> str:
    """pdftoppm then tesseract, one thread; the text without Tesseract's closing form feed."""
    env = clean_env(ONE_THREAD)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        render, read = job.argvs(f"{tmp}/page")
        run(render, env=env)
        return run(read, env=env).stdout.strip()


def raw_limit(docs: Sequence[Doc], work: Path, parallel: int) -> Outcome:
    """Every page rendered and read as `ocr_page` does, `parallel` pages at a time."""
    jobs = page_jobs(docs)
    started = time.perf_counter()
    texts = pool(lambda job: ocr_page(job, work), jobs, parallel)
    seconds = time.perf_counter() - started
    joined: dict[Path, list[str]] = {}
    for job, text in zip(jobs, texts, strict=True):
        joined.setdefault(job.path, []).append(text)
    dpis = sorted({job.dpi for job in jobs})
    return Outcome(seconds, {p: "\f".join(parts) for p, parts in joined.items()}, {"dpis": dpis})


def ocrmypdf_batch(
    docs: Sequence[Doc], work: Path, parallel: int, ocrmypdf: Path, options: Sequence[str] = ()
) -> Outcome:
    """OCRmyPDF's best batch use: one file per process, `parallel` at a time, text only;
    `options` such as --skip-text and --rotate-pages go before the files."""
    env = clean_env(ONE_THREAD)
    out = work / "ocrmypdf"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def one(doc: Doc) -> str:
        sidecar = out / f"{doc.path.stem}.txt"
        argv = [str(ocrmypdf), "-q", "-j", "1", *options, "--output-type", "none"]
        run([*argv, "--sidecar", str(sidecar), str(doc.path), "-"], env=env)
        return sidecar.read_text(encoding="utf-8")

    started = time.perf_counter()
    texts = pool(one, docs, parallel)
    seconds = time.perf_counter() - started
    return Outcome(seconds, {d.path: _unskipped(t) for d, t in zip(docs, texts, strict=True)})


def _pages_kept(text: str) -> str:
    """Text stripped of the closing form feed, without losing an empty first or last page."""
    return text.removesuffix("\f")


def _unskipped(text: str) -> str:
    """OCRmyPDF's sidecar with each `[OCR skipped on page(s) A-B]` (one placeholder for a run
    of pages it did not OCR) turned into that many empty pages, so pages line up again."""

    def pages(match: re.Match[str]) -> str:
        first = int(match[1])
        return "\f" * (int(match[2] or first) - first)

    return SKIPPED.sub(pages, _pages_kept(text))


def pdftotext_batch(docs: Sequence[Doc], parallel: int) -> Outcome:
    """poppler's pdftotext, one process per file, `parallel` at a time."""
    env = clean_env()

    def one(doc: Doc) -> str:
        return run(["pdftotext", "-enc", "UTF-8", str(doc.path), "-"], env=env).stdout

    started = time.perf_counter()
    texts = pool(one, docs, parallel)
    seconds = time.perf_counter() - started
    return Outcome(seconds, {d.path: _pages_kept(t) for d, t in zip(docs, texts, strict=True)})


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@contextmanager
def own_gearmand(data: Path) -> Iterator[GearmandProcess]:
    """A gearmand of the run's own, on a free port, its queue under `data`."""
    gearmand = GearmandProcess(data_dir=data / "gearmand", port=free_port())
    gearmand.start()
    try:
        yield gearmand
    finally:
        gearmand.stop()


def importer_env(data: Path, gearmand: str) -> dict[str, str]:
    return clean_env({"IMPORTER_DATA_DIR": str(data), "IMPORTER_GEARMAN_SERVERS": gearmand})


def importer(*args: str) -> list[str]:
    return [sys.executable, "-m", "importer", *args]


def importer_run(
    folder: Path, docs: Sequence[Doc], work: Path, workers: int, *options: str
) -> Outcome:
    """`importer run` on a fresh data dir, against a gearmand of its own (started in the clock).
    The data dir is kept until the next run of the same number of workers."""
    data = fresh_dir(work / f"importer-data-w{workers}")
    seconds, summary, gearmand = timed_run(folder, docs, data, workers, options)
    texts = export_texts(data, gearmand, str(summary["id"]))
    facts = {"pages": summary["pages_done"], "reported_seconds": summary.get("seconds")}
    facts["data"] = data
    return Outcome(seconds, {d.path: texts[str(d.path.resolve())] for d in docs}, facts)


def timed_run(
    folder: Path,
    docs: Sequence[Doc],
    data: Path,
    workers: int,
    options: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> tuple[float, dict[str, Any], str]:
    """Seconds `importer run` took with a gearmand of its own (its start in the clock), its
    summary, and that gearmand's address; BenchError unless every document was imported."""
    started = time.perf_counter()
    with own_gearmand(data) as gearmand:
        run_env = {**importer_env(data, gearmand.address), **(env or {})}
        argv = importer("run", str(folder), "--email", EMAIL, "--workers", str(workers), "--json")
        finished = run([*argv, *options], env=run_env, ok_codes=(0, 1))
        seconds = time.perf_counter() - started
    try:
        summary = json.loads(finished.stdout)
    except ValueError:
        tail = "\n".join(finished.stderr.strip().splitlines()[-15:])
        raise BenchError(f"importer run printed no summary:\n{tail}") from None
    if summary["done"] != len(docs) or summary["failed"]:
        raise BenchError(f"importer run imported {summary['done']} of {len(docs)}: {summary}")
    return seconds, summary, gearmand.address


def export_texts(data: Path, gearmand: str, batch: str) -> dict[str, str]:
    env = importer_env(data, gearmand)
    out = run(importer("export", batch, "--format", "jsonl"), env=env).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {r["path"]: r["text"] for r in records}
